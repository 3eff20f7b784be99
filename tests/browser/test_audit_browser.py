"""The audit page in real Chromium (headless, Playwright, Debian's /usr/bin/chromium; `.ci/setup-browser`
installs both): it renders offline, every image loads, and the leaderboard sorts on a click. The screenshot is
kept in test-artifacts/audit.png."""

from __future__ import annotations

from pathlib import Path

from tests.browser.chromium import ARGS, CHROMIUM, require_browser  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[2]
require_browser()

from playwright.sync_api import sync_playwright  # noqa: E402
from tests.conftest import shared_path  # noqa: E402

from robustlens.cli.main import main  # noqa: E402


def _column(page, col: int) -> list[str]:
    return page.evaluate(f"() => Array.from(document.querySelectorAll('#leaderboard tbody tr'))"
                         f".map(r => r.cells[{col}].getAttribute('data-v'))")


def test_audit_page_renders_sorts_and_loads_its_images(tmp_path):
    weights = shared_path("models", "advertorch_mnist_lenet5_clntrained.pt")
    out = tmp_path / "audit"
    assert main(["audit", "--model", f"mnist_lenet5={weights}", "--model", "mnist_lenet5=none",
                 "--data", f"mnist:{shared_path('data', 'mnist')}", "--eps", "0.3", "--limit", "12",
                 "--batch-size", "12", "--pgd-steps", "5", "--explain-images", "4", "--sanity-stages", "2",
                 "--no-progress", "--threads", "1", "--out", str(out)]) == 0
    external: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})

        def route(r):
            if r.request.url.startswith(("data:", "file:")):
                r.continue_()
            else:
                external.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.goto((out / "audit.html").as_uri())
        page.wait_for_load_state("load")
        assert page.title() == "robustlens audit"
        sizes = page.evaluate("() => Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert len(sizes) == 1 + 2 * 4 and all(done and w > 0 for done, w in sizes), sizes
        assert page.locator("#leaderboard tbody tr").count() == 2
        clean = page.locator("#leaderboard th").nth(1)
        clean.click()
        down = [float(v) for v in _column(page, 1)]
        assert down == sorted(down, reverse=True) and down[0] > down[1]
        assert clean.get_attribute("data-dir") == "desc"
        clean.click()
        assert [float(v) for v in _column(page, 1)] == sorted(down)
        page.locator("#leaderboard th").nth(0).click()
        assert _column(page, 0) == sorted(_column(page, 0), reverse=True)
        artifacts = ROOT / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        page.screenshot(path=str(artifacts / "audit.png"), full_page=False)
        browser.close()
    assert not external, f"the page fetched from outside: {external}"
