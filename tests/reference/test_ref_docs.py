"""docs/derivations.md quotes numbers the code produces, and the core modules never import torch."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import numpy as np

import robustlens.reference as reference
from robustlens.reference.one_vs_many import cat_detector, cat_scene, one_vs_many_demo, one_vs_many_table

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "derivations.md"
PKG = pathlib.Path(reference.__file__).resolve().parent


def test_doc_quotes_the_computed_one_vs_many_table():
    text = DOC.read_text(encoding="utf-8")
    assert one_vs_many_table() in text


def test_one_vs_many_claims():
    rows = {r["cats"]: r for r in one_vs_many_demo(counts=(0, 1, 2, 3, 4))}
    assert rows[0]["global_max"] == 0.0 and rows[0]["global_avg"] == 0.0
    # max pooling: the same answer for one cat and for many (presence)
    assert {rows[n]["global_max"] for n in (1, 2, 3, 4)} == {1.0}
    # average pooling: grows in proportion to the number of cats (how much)
    for n in (1, 2, 3, 4):
        assert rows[n]["global_avg"] == n / 64
    # the detector fires exactly once per cat
    for n in range(5):
        assert cat_detector(cat_scene(n)).sum() == n


def test_doc_states_the_key_formulas():
    text = DOC.read_text(encoding="utf-8")
    for snippet in ("⌊(N + 2p − d(k−1) − 1)/s⌋ + 1", "p = (k−1)/2", "−∞", "W ← W − η", "first maximum"):
        assert snippet in text, snippet


def test_reference_modules_do_not_import_torch():
    """Import every module of the subpackage under a stub parent package (the real robustlens/__init__
    may load torch for other reasons) and check torch never gets loaded; run the checks without it."""
    code = f"""
import sys, types
pkg = types.ModuleType("robustlens"); pkg.__path__ = [{str(PKG.parent)!r}]; sys.modules["robustlens"] = pkg
import importlib
for name in {sorted(p.stem for p in PKG.glob("*.py"))!r}:
    importlib.import_module("robustlens.reference" + ("" if name == "__init__" else "." + name))
assert "torch" not in sys.modules, "torch imported at module import"
from robustlens.reference.gradcheck import run_checks
assert run_checks(0, use_torch=False)["passed"]
assert "torch" not in sys.modules, "torch imported by run_checks(use_torch=False)"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _torch_imports(nodes):
    for node in nodes:
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "torch" for a in node.names):
            yield node
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "torch":
            yield node


def test_torch_is_only_imported_inside_torch_check_functions():
    for path in PKG.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert not list(_torch_imports(tree.body)), f"{path.name}: module-level torch import"
        anywhere = list(_torch_imports(ast.walk(tree)))
        if path.name == "torch_check.py":
            assert anywhere  # it does use torch, lazily
        else:
            assert not anywhere, f"{path.name} imports torch"


def test_public_api():
    for name in reference.__all__:
        assert hasattr(reference, name), name
    assert np.isclose(reference.one_vs_many_demo()[1]["global_avg"], 1 / 64)
