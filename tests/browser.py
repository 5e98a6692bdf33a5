"""A real headless Chromium for the UI tests and the screenshot script: Debian's ``chromium`` and
``chromium-driver`` driven by Selenium, pointed at both explicitly so that Selenium Manager never downloads
anything. Nothing here skips: a browser that cannot start is an error that says what to install."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("ADAPTVC_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ADAPTVC_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver; pip install selenium"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--hide-scrollbars", "--force-device-scale-factor=1")


class BrowserUnavailable(RuntimeError):
    pass


def chromium(width: int = 1400, height: int = 1000, profile: str | os.PathLike[str] | None = None) -> Any:
    """A Selenium WebDriver for headless Chromium with a fresh profile; BrowserUnavailable (saying what to
    install) when it cannot start. The caller quits it."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise BrowserUnavailable(f"selenium is not installed; the UI tests drive a real Chromium: {INSTALL}") \
            from None
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).is_file():
            raise BrowserUnavailable(f"{path} is missing; the UI tests drive a real Chromium: {INSTALL}")
    os.environ["SE_OFFLINE"] = "true"  # belt and braces: with both paths given Selenium Manager is not run
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--user-data-dir={profile or tempfile.mkdtemp(prefix='adaptvc-chromium-')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except WebDriverException as e:
        raise BrowserUnavailable(f"Chromium did not start ({(e.msg or str(e)).splitlines()[0]}); {INSTALL}") \
            from None


def wait_ready(driver: Any, page: str, timeout: float = 30) -> None:
    """Wait until the page script has drawn ``page`` (``document.body.dataset.ready``); fail on another."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: d.execute_script("return document.body && document.body.dataset.ready"))
    ready = driver.execute_script("return document.body.dataset.ready")
    if ready != page:
        error = driver.execute_script("const e = document.getElementById('error'); return e && e.innerText")
        raise AssertionError(f"expected the {page} page, got {ready!r}: {error}")
