"""The dashboard as a browser user sees it: log in, open a page, await what it draws, keep a
screenshot, and read the browser's console.

Every wait is on the DOM (WebDriverWait polling a condition), never a fixed sleep. Screenshots go
to `$STOCKADE_ARTIFACTS/screenshots/` (default `<repo>/artifacts/screenshots/`), one PNG per page,
overwritten by the next run; docs/dashboard.md shows a copy of them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import urlencode, urlsplit

from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver import Chrome
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from stockade.controller.dashboard.sessions import SECURE_COOKIE

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def artifacts_dir() -> Path:
    base = Path(os.environ.get("STOCKADE_ARTIFACTS") or REPO / "artifacts")
    out = base / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


class Dashboard:
    """One browser on one controller's dashboard."""

    def __init__(self, driver: Chrome, base_url: str) -> None:
        self.driver = driver
        self.base = base_url.rstrip("/")

    # -- navigation -------------------------------------------------------------------------

    def url(self, path: str, **query: Any) -> str:
        q = {k: v for k, v in query.items() if v is not None}
        return self.base + path + ("?" + urlencode(q) if q else "")

    def path(self) -> str:
        return urlsplit(self.driver.current_url).path

    def log_out_browser(self) -> None:
        """Forget every cookie of the controller's origin (a fresh visitor)."""
        self.driver.get(self.url("/ui/login"))
        self.driver.delete_all_cookies()

    def log_in(self, token: str) -> None:
        """Log in through the form and await the Overview the login redirects to."""
        self.log_out_browser()
        self.driver.get(self.url("/ui/login"))
        field = self.wait_for("#token")
        field.send_keys(token)
        self.find("#login-submit").click()
        self.until(lambda d: self.path() == "/ui/overview", "the login to land on /ui/overview")

    def open(self, page: str, **query: Any) -> None:
        self.driver.get(self.url(f"/ui/{page}", **query))
        self.until(lambda d: d.execute_script("return document.readyState") == "complete" and self.path() == f"/ui/{page}",
                   f"/ui/{page} to load")

    def session_cookie(self) -> str | None:
        cookie = self.driver.get_cookie(SECURE_COOKIE)  # the lab's controller speaks HTTPS
        return cookie["value"] if cookie else None

    # -- waiting and finding ----------------------------------------------------------------

    def until(self, condition: Callable[[WebDriver], T | None], what: str, timeout: float = 10.0) -> T:
        """Poll `condition` on the DOM until truthy; fail naming `what`, the URL and the page error."""
        def safe(d: WebDriver) -> T | None:
            try:
                return condition(d)
            except StaleElementReferenceException:  # the page redrew what we held: look again
                return None
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(safe)  # type: ignore[return-value]
        except TimeoutException:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} at {self.driver.current_url}; "
                                 f"page error: {self.page_error()!r}; console errors: {self.console()}") from None

    def wait_for(self, css: str, timeout: float = 10.0) -> WebElement:
        """The first element matching `css` once it is displayed."""
        def shown(d: WebDriver) -> WebElement | None:
            for el in d.find_elements(By.CSS_SELECTOR, css):
                if el.is_displayed():
                    return el
            return None
        return self.until(shown, f"{css!r} to be displayed", timeout)

    def wait_text(self, css: str, expected: str, timeout: float = 10.0) -> WebElement:
        def has(d: WebDriver) -> WebElement | None:
            els = d.find_elements(By.CSS_SELECTOR, css)
            return els[0] if els and els[0].text.strip() == expected else None
        return self.until(has, f"{css!r} to read {expected!r}", timeout)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def fetch_status(self, api_path: str) -> int:
        """The HTTP status the page's own fetch (session cookie) gets for GET /api/v1/...: what a
        script on the page, or a user at the console, would get."""
        return int(self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch('/api/v1' + arguments[0], {credentials: 'same-origin'}).then(r => done(r.status), e => done(-1));",
            api_path))

    def page_error(self) -> str:
        """The text of the page's error box (#page-error), '' when hidden or absent."""
        try:
            return str(self.js("const e = document.getElementById('page-error');"
                               "return e && !e.hidden ? e.textContent : '';"))
        except Exception:  # a page mid-navigation: no error box to read
            return ""

    # -- evidence ---------------------------------------------------------------------------

    def screenshot(self, name: str) -> Path:
        path = artifacts_dir() / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def console(self) -> list[str]:
        """The browser console's SEVERE entries since the last call (reading them clears them)."""
        return [f"{e.get('source')}: {e.get('message')}" for e in self.driver.get_log("browser")
                if e.get("level") == "SEVERE"]

    def assert_no_js_errors(self, allowed: tuple[str, ...] = ()) -> None:
        """Fail on any SEVERE console entry (a script error, a failed load) not matching `allowed`."""
        errors = [e for e in self.console() if not any(a in e for a in allowed)]
        assert not errors, f"the browser console has errors: {errors}"

    def elapsed_until(self, condition: Callable[[WebDriver], T | None], what: str, since: float,
                      timeout: float = 10.0) -> tuple[T, float]:
        """Await `condition`; its value and the seconds from `since` (time.monotonic) to seeing it."""
        value = self.until(condition, what, timeout)
        return value, time.monotonic() - since
