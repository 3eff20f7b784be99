"""The examples in the public docstrings run: every ``>>>`` example in the docstrings of the names that
``robustlens``, ``robustlens.optim``, ``robustlens.recipes``, ``robustlens.models``, ``robustlens.robust`` and
``robustlens.explain`` export (classes with their methods) and of those packages themselves. Small inputs,
random-weight MNIST nets, CPU: each example takes seconds at most."""

from __future__ import annotations

import doctest
import importlib

import pytest

PACKAGES = ("robustlens", "robustlens.optim", "robustlens.recipes", "robustlens.models", "robustlens.robust",
            "robustlens.explain")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def public_doctests() -> list[doctest.DocTest]:
    """One DocTest per docstring with examples; a name exported by several packages is collected once."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    found: dict[tuple[str | None, int | None], doctest.DocTest] = {}
    for package in PACKAGES:
        module = importlib.import_module(package)
        objects = [(package, module)] + [(f"{package}.{n}", getattr(module, n)) for n in module.__all__]
        for name, obj in objects:
            if isinstance(obj, (str, tuple, dict, list, int, float)):
                continue  # constants: their docstrings are attribute docs, not the type's
            for test in finder.find(obj, name, module=False, globs={}):
                if test.examples and test.name.startswith(name):
                    found.setdefault((test.filename, test.lineno), test)
    return sorted(found.values(), key=lambda t: t.name)


TESTS = public_doctests()


def test_the_public_docstrings_have_examples(capsys):
    n = sum(len(t.examples) for t in TESTS)
    with capsys.disabled():
        print(f"\ndoctests: {len(TESTS)} docstrings, {n} examples")
    assert len(TESTS) >= 15


@pytest.mark.parametrize("test", TESTS, ids=[t.name for t in TESTS])
def test_docstring_examples(test: doctest.DocTest):
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    result = runner.run(test, out=report.append, clear_globs=True)
    assert result.failed == 0, "".join(report)
