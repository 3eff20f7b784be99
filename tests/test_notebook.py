"""The problem-set notebook: stored without outputs, installs robustlens when missing, has a quick mode, and
every code cell is valid Python. Executing it is `.ci/notebook-check` (nbclient, quick mode, ~minutes)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "problem_set.ipynb"


@pytest.fixture(scope="module")
def cells() -> list[dict]:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    return nb["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_outputs_are_stripped(cells):
    for i, c in enumerate(cells):
        if c["cell_type"] == "code":
            assert c["outputs"] == [] and c["execution_count"] is None, f"cell {i} holds outputs"


def test_code_cells_parse(cells):
    for i, c in enumerate(cells):
        if c["cell_type"] == "code":
            lines = _source(c).splitlines()  # IPython magics (%pip) become `pass` at the same indentation
            src = "\n".join(line[:len(line) - len(line.lstrip())] + "pass" if line.strip().startswith("%") else line
                            for line in lines)
            ast.parse(src, filename=f"cell {i}")


def test_first_code_cell_installs_when_missing_and_quick_mode_exists(cells):
    code = [_source(c) for c in cells if c["cell_type"] == "code"]
    assert "except ImportError" in code[0] and "%pip install" in code[0]
    assert any("ROBUSTLENS_NOTEBOOK_QUICK" in c for c in code)


def test_walks_through_the_problems(cells):
    text = "\n".join(_source(c) for c in cells)
    for needle in ("run_checks", "conv2d_forward", "in_features == 2048", "output2prob", "target=[76, 282]",
                   "invert(", "imagenette_resnet_robust", "imagenette_resnet_standard", "dream(", "list_published"):
        assert needle in text, needle


def test_ci_script_executes_it():
    script = ROOT / ".ci" / "notebook-check"
    assert script.is_file() and "NotebookClient" in script.read_text() and "ROBUSTLENS_NOTEBOOK_QUICK=1" in \
        script.read_text()
