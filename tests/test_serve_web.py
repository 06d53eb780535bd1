"""The web page in headless Chromium (Debian's chromium + chromium-driver): it asks for the token once, submits a
prompt, shows live progress and a preview, plays the finished video, and cancels and deletes jobs. A screenshot of
the page mid-run is kept next to the test's files (``page.png``)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from serve_support import MODEL, TOKEN, live_server, thread_workers, wait_for

from ltxv.serve.fake import FakeEngine

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromium-driver are not installed")


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    options.add_argument("--autoplay-policy=no-user-gesture-required")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_submits_shows_progress_and_plays_the_result(tmp_path: Path, browser) -> None:  # type: ignore[no-untyped-def]
    d = browser
    engine = FakeEngine((MODEL,), step_s=0.4, steps=8)
    with (
        live_server(tmp_path / "store", token=TOKEN) as live,
        thread_workers(live, 1, engine=engine, progress_s=0.0, preview_s=0.0),
    ):
        d.get(live.url + "/")
        # The token is asked for once (the first API call got a 401) and kept.
        wait_for(
            lambda: d.execute_script("return document.getElementById('token-dialog').open"), 20, "the token dialog"
        )
        d.find_element(By.ID, "token-input").send_keys(TOKEN)
        d.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait_for(lambda: d.find_element(By.ID, "size").get_attribute("value") == "96x64", 20, "the model's sizes")
        d.find_element(By.ID, "prompt").send_keys("A red kite drifts over green hills")
        d.find_element(By.ID, "submit").click()
        card = wait_for(lambda: d.find_elements(By.CSS_SELECTOR, ".card"), 20, "a job card")[0]
        state = lambda: card.find_element(By.CSS_SELECTOR, ".state").text  # noqa: E731
        wait_for(lambda: "STEP" in state().upper(), 30, "live progress")
        width = lambda: float(card.find_element(By.CSS_SELECTOR, ".fill").value_of_css_property("width")[:-2])  # noqa: E731
        wait_for(
            lambda: width() > 0 and card.find_elements(By.CSS_SELECTOR, ".still"), 30, "a progress bar and a preview"
        )
        assert "url(" in card.find_element(By.CSS_SELECTOR, ".still").value_of_css_property("background-image")
        d.save_screenshot(str(tmp_path / "page.png"))
        video = wait_for(lambda: card.find_elements(By.CSS_SELECTOR, "video"), 60, "the finished video")[0]
        assert state() == "DONE"
        played = d.execute_async_script(
            """const [v, done] = arguments;
            const check = () => v.readyState >= 2 && v.currentTime > 0 ? done([v.duration, v.videoWidth, v.currentTime])
                                                                      : setTimeout(check, 100);
            v.play().then(check, () => done(null));""",
            video,
        )
        assert played is not None and played[1] == 96 and played[0] > 0.5, played
        assert d.execute_script("return localStorage.getItem('ltxv-token')") == TOKEN
        # Cancel a running job, then delete both.
        d.find_element(By.ID, "prompt").clear()
        d.find_element(By.ID, "prompt").send_keys("A lighthouse at dusk")
        d.find_element(By.ID, "submit").click()
        wait_for(lambda: len(d.find_elements(By.CSS_SELECTOR, ".card")) == 2, 20, "a second card")
        second = d.find_elements(By.CSS_SELECTOR, ".card")[0]
        wait_for(
            lambda: "STEP" in second.find_element(By.CSS_SELECTOR, ".state").text.upper(), 30, "the second job to run"
        )
        second.find_element(By.CSS_SELECTOR, ".cancel").click()
        wait_for(lambda: second.find_element(By.CSS_SELECTOR, ".state").text.upper() == "CANCELLED", 30, "cancelled")
        for c in d.find_elements(By.CSS_SELECTOR, ".card"):
            c.find_element(By.CSS_SELECTOR, ".delete").click()
        wait_for(lambda: not d.find_elements(By.CSS_SELECTOR, ".card"), 20, "no cards")
        time.sleep(0.2)
        assert live.store.list()[0] == []
        errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE" and "401" not in e["message"]]
        assert errors == []
