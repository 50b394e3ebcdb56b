"""The history's web page in a real headless browser: Debian's chromium and chromedriver driven by Selenium
(Selenium Manager off: the driver's path is given). The page loads with no console errors, each chart
has one marker per valid run, and strings from result files that hold HTML and script stay text.

Outside CI a machine without chromium skips; in CI (CI=true) it fails (make test installs it:
make browser-tools). A screenshot goes to runs/screenshots/history-page.png.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from bench.cli import main
from bench.history import store
from tests.test_history import history_results

REPO = Path(__file__).resolve().parents[1]
HOSTILE_HOST = "<script>window.__pwned=1</script>"
HOSTILE_VERSION = "<img src=x onerror=\"window.__pwned=2\">"


def browser():
    """A headless chromium under Selenium, or a skip (a failure in CI) where it is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    if not chromium or not driver:
        message = "chromium and chromedriver are needed (apt-get install -y chromium chromium-driver; make browser-tools)"
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs the browser: " + message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager reach out (the driver path is given anyway)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,2400"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def hostile_history(where: Path) -> list[dict]:
    """The step history of tests/test_history.py with a tainted run, and HTML/script in recorded strings."""
    rs = history_results(val_every_n_epochs=1)
    rs[2]["world"]["hostnames"] = [HOSTILE_HOST]
    rs[4]["environment"] = {**rs[4]["environment"], "torch": HOSTILE_VERSION}
    rs[5]["contention"] = {"classification": {"state": "tainted", "reasons": [HOSTILE_VERSION]}}
    store.add([(r, "test") for r in rs + ddp_points()], where)
    return rs


def ddp_points() -> list[dict]:
    """ddp on 2 and 4 devices, 3 runs each, at the newest commit: a scaling curve of 3 points with baseline."""
    from tests.results_factory import CPU, result

    out = []
    for devices, fits in ((2, [13.1, 13.0, 13.2]), (4, [7.4, 7.5, 7.3])):
        for i, fit in enumerate(fits):
            r = result("ddp", [fit], devices=devices, env={**CPU, "git_commit": "bbb", "git_dirty": False,
                                                           "torch": "2.15.0"}, run_id=f"ddp{devices}-{i}")
            r["started_utc"] = f"2026-01-01T01:{devices}{i}:00+00:00"
            out.append(r)
    return out


def test_page_in_a_real_browser(tmp_path):
    where, site = tmp_path / "hist", tmp_path / "site"
    rs = hostile_history(where)
    main(["history", "--history", str(where), "--html", str(site)])
    html = (site / "index.html").read_text()
    assert "<script" not in html and not re.search(r"(src|href)\s*=\s*['\"](https?:|//)", html)  # nothing fetched
    driver = browser()
    try:
        driver.get((site / "index.html").as_uri())
        errors = [x for x in driver.get_log("browser") if x["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        figures = driver.find_elements("css selector", "figure[data-series]")
        assert len(figures) == 3  # baseline, ddp on 2 and on 4 devices
        markers = driver.find_elements("css selector", "#points-0 use")
        assert len(markers) == int(figures[0].get_attribute("data-points")) == len(rs) - 1  # the tainted one is no figure
        assert len(driver.find_elements("css selector", "#invalid-0 use")) == 1
        assert len(driver.find_elements("css selector", "[id^='change-0-']")) == 1
        [curve] = driver.find_elements("css selector", "figure[data-scaling]")
        assert len(driver.find_elements("css selector", "#scaling-points-0 use")) == int(curve.get_attribute("data-points")) == 3
        assert driver.execute_script("return window.__pwned === undefined")
        assert driver.execute_script("return document.getElementsByTagName('script').length") == 0
        assert driver.execute_script("return document.getElementsByTagName('img').length") == 0
        text = driver.execute_script("return document.body.textContent")
        assert HOSTILE_HOST in text and HOSTILE_VERSION in text
        assert "option val_every_n_epochs: None -> 1" in text
        shots = REPO / "runs" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(shots / "history-page.png"))
        assert (shots / "history-page.png").stat().st_size > 10_000
    finally:
        driver.quit()
