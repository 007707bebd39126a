"""A real browser (Debian's chromium, driven by Selenium through /usr/bin/chromedriver) against
``mlc ui`` started as its own process over the tagged workspace.

Screenshots of each page are kept in ``$MLC_TEST_ARTIFACTS_DIR/ui`` (default: the test's
temporary folder).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from mlc_core.jobs.workspace import Workspace
from tests.fixtures.prefect import free_port
from tests.tagged import MLC
from tests.ui.conftest import give_metrics

selenium = pytest.importorskip("selenium", reason="the browser test needs selenium ([dev] extra)")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_SECONDS = 15


@pytest.fixture
def served(tagged_embedded: Workspace) -> Iterator[str]:
    """``mlc ui`` on a free loopback port, as a person starts it; yields its address."""
    give_metrics(tagged_embedded)
    port = free_port()
    command = [str(MLC), "ui", "--port", str(port)]
    process = subprocess.Popen(
        command,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    address = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(address, process)
        yield address
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_healthy(address: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"mlc ui exited with {process.returncode}: {output}")
        try:
            with urllib.request.urlopen(address + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail("mlc ui did not answer /healthz within 60 s")


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    for needed, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not needed.is_file() and shutil.which(needed.name) is None:
            pytest.fail(
                f"the browser test needs {needed}; install it with `apt-get install -y "
                f"{package}` (CI's .ci/run does)",
                pytrace=False,
            )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM) if CHROMIUM.is_file() else shutil.which("chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    driver_path = str(CHROMEDRIVER) if CHROMEDRIVER.is_file() else shutil.which("chromedriver")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    base = os.environ.get("MLC_TEST_ARTIFACTS_DIR")
    folder = (Path(base) if base else tmp_path) / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _keys_on_page(browser: WebDriver) -> list[str]:
    cards = browser.find_elements(By.CSS_SELECTOR, "figure.card")
    return [str(card.get_attribute("data-key")) for card in cards]


def _current_tags(workspace: Workspace, key: str) -> set[str]:
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT tag FROM current_tags WHERE image_uri = :uri"),
            {"uri": workspace.store.uri(key)},
        )
        return {row[0] for row in rows}


def test_a_person_browses_filters_corrects_and_reviews(
    served: str, browser: WebDriver, tagged_embedded: Workspace, screenshots: Path
) -> None:
    # A page replaced by the next one mid-look leaves stale elements: look again.
    wait = WebDriverWait(browser, WAIT_SECONDS, ignored_exceptions=[StaleElementReferenceException])
    browser.get(served + "/")
    assert _keys_on_page(browser) == [
        "images/a.jpg",
        "images/b.jpg",
        "images/c.jpg",
        "images/d.jpg",
        "images/sub/e.jpg",
    ]
    wait.until(
        lambda b: all(
            b.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
            for img in b.find_elements(By.CSS_SELECTOR, "figure.card img")
        )
    )
    browser.save_screenshot(str(screenshots / "gallery.png"))

    browser.find_element(By.NAME, "all").send_keys("beach")
    browser.find_element(By.ID, "apply").click()
    wait.until(lambda b: "all=beach" in b.current_url)
    wait.until(lambda b: _keys_on_page(b) == ["images/a.jpg", "images/sub/e.jpg"])
    browser.save_screenshot(str(screenshots / "gallery-filtered.png"))

    browser.find_element(By.CSS_SELECTOR, 'figure.card[data-key="images/a.jpg"] a.key').click()
    wait.until(lambda b: b.find_element(By.ID, "image-key").text == "images/a.jpg")
    browser.save_screenshot(str(screenshots / "image.png"))
    remove_beach = 'button[data-action="remove"][data-tag="beach"]'
    browser.find_element(By.CSS_SELECTOR, remove_beach).click()
    wait.until(lambda b: not b.find_elements(By.CSS_SELECTOR, remove_beach))
    shown = browser.find_element(By.ID, "current-tags").text
    assert "beach" not in shown and "dog" in shown
    assert _current_tags(tagged_embedded, "images/a.jpg") == {"dog"}
    browser.save_screenshot(str(screenshots / "image-corrected.png"))

    # a now carries a person's label, so the queue holds e alone: its beach at 0.95.
    browser.get(served + "/review")
    assert _review_key(browser) == "images/sub/e.jpg"
    browser.save_screenshot(str(screenshots / "review.png"))
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("s")
    wait.until(lambda b: _review_key(b) == "(done)")
    browser.find_element(By.TAG_NAME, "body").send_keys("b")
    wait.until(lambda b: _review_key(b) == "images/sub/e.jpg")
    browser.find_element(By.TAG_NAME, "body").send_keys("n")
    wait.until(lambda b: _review_key(b) == "(done)")
    assert "beach" not in _current_tags(tagged_embedded, "images/sub/e.jpg")

    for page, element in (("models", "model-v1"), ("runs", "runs")):
        browser.get(f"{served}/{page}")
        assert browser.find_element(By.ID, element).is_displayed()
        browser.save_screenshot(str(screenshots / f"{page}.png"))


def _review_key(browser: WebDriver) -> str | None:
    items = browser.find_elements(By.ID, "review-item")
    return items[0].get_attribute("data-key") if items else "(done)"
