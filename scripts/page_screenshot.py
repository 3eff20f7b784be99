"""Screenshot of a local HTML page (e.g. an audit.html) in headless Chromium (Playwright driving Debian's
/usr/bin/chromium, as tests/browser does; .ci/setup-browser installs both). Requests to anything but file: and
data: URLs are blocked.

    python scripts/page_screenshot.py out/audit/audit.html docs/figures/audit_page.png [--width 1300] [--full]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("page")
    p.add_argument("png")
    p.add_argument("--width", type=int, default=1300)
    p.add_argument("--height", type=int, default=1500)
    p.add_argument("--full", action="store_true", help="the whole page, not only the first screen")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    a = p.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=a.chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": a.width, "height": a.height})
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:")) else r.abort())
        page.goto(Path(a.page).resolve().as_uri())
        page.wait_for_load_state("load")
        page.screenshot(path=a.png, full_page=a.full)
        browser.close()


if __name__ == "__main__":
    main()
