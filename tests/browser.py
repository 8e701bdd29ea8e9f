"""Headless Chromium for tests of pages, driven by Selenium (Debian's chromium + chromium-driver).

`.ci/run` installs both when missing; where they are absent (and cannot be installed) the tests
that need them skip, saying so. Selenium is given the binaries' paths, so its driver manager never
tries to download anything (this machine and CI have no network for that).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ARTIFACTS = Path(os.environ.get("FDM_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
# Root (CI) needs --no-sandbox; the rest keep a headless browser from reaching for the network.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1000")


def _paths() -> tuple[str | None, str | None]:
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    return browser, shutil.which("chromedriver")


def missing() -> str | None:
    """Why a browser test cannot run here, or None (for skipif: before any fixture is built)."""
    if None in _paths():
        return ("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver; "
                ".ci/run installs them)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def find_chromium() -> tuple[str, str]:
    """(browser, driver) paths, or pytest.skip with the reason."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    return _paths()


@pytest.fixture
def chromium():
    """A fresh headless Chromium (own profile folder) that records the page's console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = find_chromium()
    profile = tempfile.mkdtemp(prefix="fdm-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
