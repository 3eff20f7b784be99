"""End to end in a real browser: Playwright drives Debian's Chromium (headless) against `robustlens app`, and
opens a report's HTML file.

Skips with the reason when Chromium (/usr/bin/chromium), the Playwright package, Gradio or ../shared is
absent (`.ci/setup-browser` installs the first two). Every request the pages make to anything but the local
server is blocked and recorded, and the test fails if there is one: the app and the report work offline.
The screenshot is kept in test-artifacts/app.png (a folder that ignores itself in git).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tests.browser.chromium import ARGS, CHROMIUM, require_browser  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
require_browser()
if importlib.util.find_spec("gradio") is None:
    pytest.skip("needs Gradio (pip install 'robustlens[app]')", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402
from tests.conftest import shared_path  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    ignore = ARTIFACTS / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    return ARTIFACTS


@pytest.fixture(scope="module")
def app_url():
    """`robustlens app` in a subprocess on 127.0.0.1 and a free port; stopped after the module."""
    port = _free_port()
    env = {**os.environ, "ROBUSTLENS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "OMP_NUM_THREADS": os.environ.get("ROBUSTLENS_TEST_THREADS", "1")}
    log = open(_artifacts() / "app-server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "robustlens", "app", "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited with code {proc.returncode}; see {log.name}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail(f"the app did not answer on {url} within 180 s; see {log.name}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


def _offline_page(browser, external: list[str]):
    """A page that may load only the local server, data: and blob: URLs; anything else is blocked and noted."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})

    def route(r):
        url = r.request.url
        if url.startswith(("http://127.0.0.1", "data:", "blob:", "file:")):
            r.continue_()
        else:
            external.append(url)
            r.abort()

    page.route("**/*", route)
    return page


def test_targeted_attack_in_the_app(app_url, browser):
    corgi = shared_path("data", "images", "corgi.jpg")
    external: list[str] = []
    page = _offline_page(browser, external)
    page.goto(app_url)
    page.wait_for_selector("#run-attack", timeout=60_000)
    page.locator("#input-image input[type=file]").set_input_files(str(corgi))
    page.wait_for_selector("#input-image img", timeout=30_000)

    box = page.locator("#target input")
    box.click()
    box.fill("")
    box.press_sequentially("tiger c", delay=30)  # the searchable target list
    page.locator("ul[role=listbox] li").filter(has_text="282 tiger cat").first.click()
    assert box.input_value() == "282 tiger cat"
    steps = page.locator("#steps input[type=number]")
    steps.fill("10")
    steps.press("Enter")

    page.click("#run-attack")
    page.wait_for_function("() => (document.querySelector('#attack-summary')?.innerText || '').includes('SSIM')",
                           timeout=300_000)
    top1 = page.locator("#top5-after [data-testid=label-output-value]").inner_text().strip()
    before = page.locator("#top5-before [data-testid=label-output-value]").inner_text().strip()
    assert before == "Pembroke"
    assert top1 == "tiger cat", page.locator("#attack-summary").inner_text()
    assert page.locator("#adversarial img").count() == 1 and page.locator("#perturbation img").count() == 1
    # the <img> element appears before its picture is decoded: wait for the load, then check the size
    page.wait_for_function("() => { const i = document.querySelector('#adversarial img');"
                           " return i !== null && i.complete && i.naturalWidth > 0; }", timeout=30_000)
    assert page.evaluate("() => document.querySelector('#adversarial img').naturalWidth") == 224
    assert "Success" in page.locator("#attack-summary").inner_text()
    page.screenshot(path=str(_artifacts() / "app.png"), full_page=True)
    assert not external, f"the app fetched from outside: {external}"
    page.close()


def test_report_images_all_load(browser, tmp_path):
    shared_path("data")  # the browser tests run only beside ../shared, like the app test
    from robustlens.report import PARTS, ReportSettings, build_report

    wanted = {"problem2", "problem4_attacks", "problem4_inversion", "dream", "visualize"}
    rep = build_report(tmp_path / "report", settings=ReportSettings.quick_settings(),
                       parts=[p for p in PARTS if p.id in wanted])
    expected = sum(len(b["items"]) for s in rep["sections"] for b in s["blocks"] if b["kind"] == "figures")
    assert expected >= 10
    external: list[str] = []
    page = _offline_page(browser, external)
    page.goto(Path(rep["html"]).as_uri())
    page.wait_for_load_state("load")
    sizes = page.evaluate("() => Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    assert len(sizes) == expected
    assert all(done and width > 0 for done, width in sizes), sizes
    assert not external, f"the report fetched from outside: {external}"
    page.screenshot(path=str(_artifacts() / "report.png"), full_page=False)
    page.close()
