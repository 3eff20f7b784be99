"""Check the built API reference (``mkdocs build --strict`` first) against what the packages export.

For each package of the reference, every name in its ``__all__`` must have its own entry on the package's page
of the built site (an element with ``id="PACKAGE.NAME"``) and a docstring (read by griffe, the same reader
mkdocstrings renders from). Prints ``documented/exported`` per package; exits 1 if any name misses either.

    python scripts/check_api_docs.py [SITE_DIR]
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import griffe

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"robustlens": "robustlens", "robustlens.optim": "optim", "robustlens.recipes": "recipes",
         "robustlens.models": "models", "robustlens.robust": "robust", "robustlens.explain": "explain"}


def check(site: Path) -> int:
    tree = griffe.load("robustlens", search_paths=[str(ROOT / "src")])
    failed = 0
    for package, page in PAGES.items():
        exported = list(importlib.import_module(package).__all__)
        html = (site / "api" / page / "index.html").read_text(encoding="utf-8")
        missing = []
        for name in exported:
            obj = tree[f"{package}.{name}".removeprefix("robustlens.")] if package != "robustlens" else tree[name]
            has_doc = obj.docstring is not None and obj.docstring.value.strip() != ""
            if f'id="{package}.{name}"' not in html or not has_doc:
                missing.append(name + ("" if has_doc else " (no docstring)"))
        print(f"{package}: {len(exported) - len(missing)}/{len(exported)} exported names documented"
              + (f"; missing: {', '.join(missing)}" if missing else ""))
        failed += len(missing)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(check(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "site"))
