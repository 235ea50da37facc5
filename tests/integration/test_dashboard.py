"""The operator's dashboard (`GET /ui`) in a real headless Chromium (Debian's chromium and
chromium-driver, installed by `make test`) against a live worker with a replayed log: the
stream's figures appear, and a shopper entered in the explorer shows their three layers as bars
and their top 10 with each term's share."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from strata.models.logs.loaders import open_log
from tests.integration.harness import Worker, group_caught_up, isolated_env, publish, wait_until

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Chromium and ChromeDriver are absent: `make test` installs them as root (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1280,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_dashboard_shows_the_stream_and_a_shopper(kafka, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    source = open_log("users=200,items=1000,events=8000", "synthetic", seed=9)
    catalog, events = list(source.catalog()), list(source.events())
    worker = Worker(isolated_env(kafka, "ui"), tmp_path / "data")
    worker.start()
    try:
        publish(worker.settings, catalog, events)
        wait_until(lambda: group_caught_up(worker.settings) and worker.metric("strata_events_processed_total") == len(events),
                   120, "the replay applied")
        user = events[-1]["user_id"]

        browser.get(worker.url + "/ui")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_element(By.ID, "updated").text.startswith("updated"))
        assert browser.find_element(By.ID, "model").text == "no model yet"

        browser.find_element(By.ID, "user").send_keys(user)
        browser.find_element(By.CSS_SELECTOR, "#explore button").click()
        wait.until(lambda d: d.find_element(By.ID, "shopper").is_displayed())
        for layer in ("overall", "domain", "item"):
            assert browser.find_elements(By.CSS_SELECTOR, f"#layer-{layer} .bar"), layer
        recs = browser.find_elements(By.CSS_SELECTOR, "#recs tr.rec")
        assert len(recs) == 10
        assert "%" in recs[0].text  # the terms' shares
        assert browser.find_element(By.ID, "recent").text.strip()

        browser.find_element(By.ID, "user").clear()
        browser.find_element(By.ID, "user").send_keys("nobody-at-all")
        browser.find_element(By.CSS_SELECTOR, "#explore button").click()
        wait.until(lambda d: "no profile" in d.find_element(By.ID, "shopper-error").text)

        wait.until(lambda d: d.find_element(By.ID, "rate").text != "–")  # a sample of the stream's rate (every 5 s)
        target = os.environ.get("STRATA_DASHBOARD_SCREENSHOT")  # the README's picture: docs/dashboard.png
        if target:
            browser.find_element(By.ID, "user").clear()
            browser.find_element(By.ID, "user").send_keys(user)
            browser.find_element(By.CSS_SELECTOR, "#explore button").click()
            wait.until(lambda d: d.find_element(By.ID, "shopper").is_displayed())
            browser.save_screenshot(str(tmp_path / "dashboard.png"))
            shutil.copy(tmp_path / "dashboard.png", target)
    finally:
        worker.stop()
