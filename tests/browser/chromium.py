"""What the browser tests share: the Chromium they drive, its flags, and the module-level skip when it or the
Playwright package is missing (`.ci/setup-browser` installs both)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("ROBUSTLENS_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions"]


def require_browser() -> None:
    """Skip the calling test module unless Chromium and Playwright are both there."""
    if not CHROMIUM.is_file():
        pytest.skip(f"needs Chromium at {CHROMIUM} (apt-get install chromium; .ci/setup-browser does it)",
                    allow_module_level=True)
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("needs the Playwright package (pip install playwright; .ci/setup-browser does it)",
                    allow_module_level=True)
