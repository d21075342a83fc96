"""The upload page in headless Chromium (Debian's ``chromium``, driven by Playwright; ``.ci/run`` installs it)."""

import shutil

import pytest

from fer.serve import create_app, running

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")]
# This machine has no network: without these flags Chromium keeps trying to reach Google's services.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(trained):
    with running(create_app(trained[0])) as url:
        yield url


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser.new_page()
        browser.close()


def test_uploading_a_face_shows_its_box_and_one_bar_per_emotion(server, page, tiny_tree, tmp_path):
    page.goto(server)
    page.set_input_files("#file", str(tiny_tree / "test" / "surprise" / "00000.png"))
    page.wait_for_selector(".face h3", timeout=20_000)
    assert page.locator("#status").inner_text() == "1 face(s) found."
    assert page.locator(".face .bar").count() == 6  # the test model knows six emotions
    widths = page.locator(".face .fill").evaluate_all("bars => bars.map(b => parseFloat(b.style.width))")
    assert abs(sum(widths) - 100) < 1 and widths == sorted(widths, reverse=True)
    assert page.evaluate("document.getElementById('canvas').width") == 48  # the photo was drawn
    page.screenshot(path=str(tmp_path / "page.png"))


def test_a_file_that_is_not_an_image_shows_the_error(server, page, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    page.goto(server)
    page.set_input_files("#file", str(text))
    page.wait_for_selector("#status.error", timeout=20_000)
    assert "Error 400" in page.locator("#status").inner_text()
    assert page.locator(".face").count() == 0
