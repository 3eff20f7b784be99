"""The package's shape: every module imports on its own in a fresh interpreter (no import-order dependence),
module-level imports between the package's modules form no cycle, and no module outgrows 500 lines."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import robustlens

PACKAGE = Path(robustlens.__file__).resolve().parent


def modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _module_path(name: str) -> Path:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _top_level_imports(name: str) -> set[str]:
    """The package's modules that ``name`` imports at module level (not inside functions or TYPE_CHECKING)."""
    tree = ast.parse(_module_path(name).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("robustlens"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("robustlens"))
    known = set(modules())
    return {m for m in found if m in known and m != name}


def test_no_import_cycles():
    graph = {m: _top_level_imports(m) for m in modules()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for dep in sorted(graph[m]):
            # a package's __init__ importing its own submodules is how packages re-export, not a cycle
            if dep.startswith(m + "."):
                continue
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
            if state.get(dep) is None:
                visit(dep)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)


def test_no_module_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert not long, long


@pytest.mark.slow
def test_every_module_imports_alone_in_a_fresh_interpreter():
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}

    def load(name: str) -> tuple[str, int, str]:
        r = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, env=env,
                           timeout=300)
        lines = r.stderr.strip().splitlines()
        return name, r.returncode, lines[-1] if lines else ""

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(load, modules()))
    failed = {name: err for name, code, err in results if code != 0}
    assert not failed, failed


def _robustlens_imports_of(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every ``from robustlens... import name`` anywhere in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("robustlens"):
            found += [(node.module, alias.name) for alias in node.names]
    return found


def test_benchmarks_and_scripts_import_names_that_exist():
    """Benchmarks and scripts are not run in CI; a rename in the package must still not break them silently."""
    import importlib

    root = PACKAGE.parent.parent
    missing = []
    for path in sorted([*root.glob("benchmarks/*.py"), *root.glob("scripts/*.py")]):
        for module, name in _robustlens_imports_of(path):
            mod = importlib.import_module(module)
            if not hasattr(mod, name) and importlib.util.find_spec(f"{module}.{name}") is None:
                missing.append(f"{path.name}: from {module} import {name}")
    assert not missing, missing


def test_version_attribute_is_the_installed_distribution():
    from importlib.metadata import version

    import robustlens

    assert robustlens.__version__ == version("robustlens")
