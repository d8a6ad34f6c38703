"""The web app end to end, as a student uses it: Debian's headless Chromium, driven
by Playwright, opens the page, picks the model, uploads a patch and reads the
probabilities off the page. A screenshot goes to the test's tmp folder, and to
$APP_SCREENSHOT when that is set.

Playwright's own browser download is not used (``make browser`` installs
Debian's chromium); without /usr/bin/chromium the test skips.
"""

import os
import shutil
import threading
from pathlib import Path

import pytest

import flask  # noqa: F401  (a hard dependency: a broken install fails here, it does not skip)
from playwright import sync_api  # noqa: E402  (a dev dependency that make setup installs)

from werkzeug.serving import make_server  # noqa: E402

from helpers.tools import app as webapp  # noqa: E402
from test_app import SIDECAR, png_bytes, save_model  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
# Headless as root in a container: no sandbox, no GPU, and nothing that phones home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is missing: `make browser` installs "
                       "Debian's chromium"),
]


@pytest.fixture
def server(tmp_path):
    """The app over a tmp outputs folder with one model, on a free port of 127.0.0.1."""
    outputs = tmp_path / "outputs"
    save_model(outputs / "models" / "cancernet.keras", SIDECAR)
    httpd = make_server("127.0.0.1", 0, webapp.create_app(outputs), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/", webapp.discover_models(outputs)[0]
    httpd.shutdown()
    thread.join(10)


def test_upload_in_a_real_browser(server, tmp_path):
    url, entry = server
    patch = tmp_path / "patch.png"
    patch.write_bytes(png_bytes())
    screenshot = tmp_path / "app_screenshot.png"
    with sync_api.sync_playwright() as playwright:
        # launch() gives the browser a fresh, temporary user-data-dir of its own.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.set_default_timeout(60_000)  # the first prediction loads TensorFlow's graph
            page.goto(url)
            assert page.locator("#model option").all_inner_texts() == [entry.label]

            page.click("#submit")  # no file chosen yet
            assert "No file was chosen" in page.inner_text("#error")

            page.select_option("#model", entry.id)
            page.set_input_files("#image", str(patch))
            page.click("#submit")
            page.wait_for_selector("#result")
            proba = [float(page.inner_text(f"#prob-{i}")) for i in (0, 1)]
            overlay_width = page.eval_on_selector("#overlay", "img => img.naturalWidth")
            prediction = page.inner_text("#prediction")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    print(f"browser read probabilities {proba}, {prediction!r}; screenshot {screenshot}")
    assert all(0 <= p <= 1 for p in proba) and abs(sum(proba) - 1) <= 1e-4
    assert prediction == f"Predicted: {'IDC' if proba[1] >= SIDECAR['threshold'] else 'no IDC'}"
    assert overlay_width == 50
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("APP_SCREENSHOT"):
        target = Path(os.environ["APP_SCREENSHOT"])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, target)
