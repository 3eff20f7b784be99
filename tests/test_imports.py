"""The package's shape: every module imports on its own (in a fresh fork of an interpreter that has loaded only
torch: no import-order dependence),
the imports between the package's modules form a DAG (``from pkg import submodule`` counts as importing
``pkg/__init__``; imports inside functions count too), and no module outgrows 500 lines."""

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


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _absolute(name: str, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` names, relative imports resolved against module ``name``."""
    if not node.level:
        return node.module or ""
    package = name.split(".") if _module_path(name).name == "__init__.py" else name.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, known: set[str], source: str | None = None) -> set[str]:
    """The package's modules that module ``name`` imports anywhere (module level and inside functions, which
    run when called; not under ``if TYPE_CHECKING:``, which never runs). ``from pkg import x`` imports ``pkg``
    (its ``__init__`` for a package) and, when ``pkg.x`` is a module, ``pkg.x`` too."""
    found: set[str] = set()

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    walk(ast.Module(body=[other], type_ignores=[]))
                continue
            if isinstance(child, ast.ImportFrom):
                module = _absolute(name, child)
                found.add(module)
                found.update(f"{module}.{a.name}" for a in child.names)
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            walk(child)

    walk(ast.parse(_module_path(name).read_text(encoding="utf-8") if source is None else source))
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    known = set(modules())
    return {m: imports_of(m, known) for m in sorted(known)}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None when the graph is a DAG (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if state.get(dep) is None and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_the_module_graph_is_a_dag(capsys):
    graph = import_graph()
    n_edges = sum(len(deps) for deps in graph.values())
    with capsys.disabled():
        print(f"\nimport graph: {len(graph)} modules, {n_edges} edges, acyclic")
    assert len(graph) > 100 and n_edges > 400  # the whole package was read, not a corner of it
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_graph_counts_package_inits_function_imports_and_not_type_checking():
    graph = import_graph()
    # a package's __init__ imports its submodules (re-exports) ...
    assert "robustlens.optim.engine" in graph["robustlens.optim"]
    # ... so ``from robustlens.app import common`` is an edge to robustlens.app (its __init__) and to the module
    assert {"robustlens.app", "robustlens.app.common"} <= graph["robustlens.app.server"]
    # imports inside functions count (they run when the function is called)
    assert "robustlens.recipes.attacks" in graph["robustlens.app.server"]
    # ... and imports only type checkers read do not
    source = ("import typing\nif typing.TYPE_CHECKING:\n    import robustlens.cli\nelse:\n    import robustlens.errors\n"
              "def f():\n    from . import images\n")
    assert imports_of("robustlens.metrics", set(graph), source) == {"robustlens", "robustlens.errors",
                                                                     "robustlens.images"}


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"p": {"p.m"}, "p.m": {"p"}}) == ["p", "p.m", "p"]  # pkg/__init__ <-> its submodule
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert not long, long


# A fork server for the test below: torch (the slow part of every import, ~2 s) is loaded once, then each module is
# imported in a fresh fork of that interpreter, where no other robustlens module has been imported: the same
# "alone" as a new interpreter for robustlens's own modules, at a tenth of the cost.
_FORK_SERVER = r"""
import json, os, sys
import torch  # noqa: F401
for name in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            __import__(name)
            msg, code = b"", 0
        except BaseException as e:  # noqa: BLE001 - report anything, the parent decides
            msg, code = f"{type(e).__name__}: {e}".encode()[-2000:], 1
        os.write(w, msg)
        os._exit(code)
    os.close(w)
    msg = b""
    while chunk := os.read(r, 65536):
        msg += chunk
    os.close(r)
    status = os.waitpid(pid, 0)[1]
    print(json.dumps([name, os.waitstatus_to_exitcode(status), msg.decode(errors="replace")]), flush=True)
"""


@pytest.mark.slow
def test_every_module_imports_alone_in_a_fresh_interpreter():
    import json

    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    names = modules()
    if hasattr(os, "fork"):
        r = subprocess.run([sys.executable, "-c", _FORK_SERVER, *names], capture_output=True, text=True, env=env,
                           timeout=900)
        assert r.returncode == 0, r.stderr[-2000:]
        results = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("[")]
        assert [name for name, _, _ in results] == names  # every module was tried
    else:  # no fork: one new interpreter per module
        def load(name: str) -> tuple[str, int, str]:
            r = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, env=env,
                               timeout=300)
            lines = r.stderr.strip().splitlines()
            return name, r.returncode, lines[-1] if lines else ""

        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(load, names))
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
