"""The system's Chromium, driven headless by Selenium through Debian's chromedriver
(`scripts/install-tools.sh` installs both; the tests fail, not skip, when they are missing)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 300  # a grounded answer on two CPU cores takes seconds; a cold adapter load more


@contextmanager
def headless_chromium(downloads: Path) -> Iterator[webdriver.Chrome]:
    for binary in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(binary), f"{binary} is missing: run scripts/install-tools.sh"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--window-size=1280,1100",
        "--disable-gpu",
        "--no-first-run",
    ):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors, for failures
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class Console:
    """The console page in the browser, addressed the way a user finds things: by ids and text."""

    def __init__(self, driver: webdriver.Chrome, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url

    def open(self, page: str) -> None:
        self.driver.get(f"{self.base_url}/console/#/{page}")
        self.driver.refresh()  # a new hash alone may not reload: render the page afresh
        self.wait_for(lambda: self.driver.find_elements(By.CSS_SELECTOR, "main[aria-busy=false]"))

    def sign_in(self, key: str) -> None:
        self.driver.get(f"{self.base_url}/console/")
        self.driver.execute_script("sessionStorage.clear()")
        self.driver.get(f"{self.base_url}/console/")
        field = self.find("#api-key")
        field.send_keys(key)
        field.submit()  # the form's submit, as Enter does
        self.wait_for(lambda: "tenant" in self.find("#who").text)

    def find(self, css: str) -> WebElement:
        return self.wait_for(lambda: self.driver.find_element(By.CSS_SELECTOR, css))

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait_for(self, condition: Callable[[], Any], timeout: float = WAIT_S) -> Any:
        try:
            return WebDriverWait(
                self.driver,
                timeout,
                poll_frequency=0.2,
                ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
            ).until(lambda _: condition())
        except TimeoutException:
            raise AssertionError(f"timed out after {timeout} s; {self.state()}") from None

    def state(self) -> str:
        """What the page shows and what its scripts logged: the message of a failed wait."""
        text = self.driver.execute_script("return document.body.innerText")
        logs = [entry["message"] for entry in self.driver.get_log("browser")]
        return f"page at {self.driver.current_url}:\n{text}\nbrowser log: {logs}"

    def wait_text(self, css: str, text: str, timeout: float = WAIT_S) -> WebElement:
        return self.wait_for(
            lambda: next((e for e in self.all(css) if text in e.text), None), timeout
        )

    def button(self, text: str) -> WebElement:
        return self.wait_for(
            lambda: next(
                (b for b in self.all("button") if b.is_displayed() and b.text.strip() == text),
                None,
            )
        )

    def screenshot(self, path: Path) -> Path:
        self.driver.set_window_size(1280, 1100)
        height = self.driver.execute_script("return document.body.scrollHeight")
        self.driver.set_window_size(1280, min(max(int(height) + 40, 700), 2600))
        self.driver.save_screenshot(str(path))
        return path
