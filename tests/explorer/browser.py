"""Headless Chromium for the explorer's browser tests, driven by selenium through Debian's
`chromium` + `chromium-driver`. Where they are missing the tests skip with a message that says
what to install, unless PERPTEST_REQUIRE_BROWSER=1 (set by .ci/run, which installs them):
then the missing browser is a failure."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

REQUIRE_ENV = "PERPTEST_REQUIRE_BROWSER"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)
INSTALL = "apt-get install -y chromium chromium-driver (and pip install -e '.[test]' for selenium)"


def _which(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or (
            f"/usr/lib/chromium/{name}" if os.path.exists(f"/usr/lib/chromium/{name}") else None
        )
        if found:
            return found
    return None


def unavailable() -> str | None:
    """Why no browser test can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    if _which(BROWSERS) is None:
        return "no Chromium binary (chromium, chromium-browser or google-chrome) on PATH"
    if _which(DRIVERS) is None:
        return "no chromedriver on PATH"
    return None


def require_browser() -> None:
    problem = unavailable()
    if problem is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {problem}: {INSTALL}", pytrace=False)
    pytest.skip(f"browser tests skipped: {problem}; to run them: {INSTALL}")


def start_browser(width: int = 1400, height: int = 1000) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    binary = _which(BROWSERS)
    if binary:
        options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--no-first-run",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(_which(DRIVERS)), options=options)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """Console entries at SEVERE since the last call (JS errors, CSP violations, failed loads)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def wait_until(check: Callable[[], Any], *, timeout_s: float = 15, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except Exception:  # noqa: BLE001 - an element not there yet, a stale one
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or check}")
        time.sleep(0.1)
