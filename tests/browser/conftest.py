"""A real headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium
through /usr/bin/chromedriver: nothing is downloaded) against the app and the dev IdP, each
served by a real server thread on a loopback port chosen at run time. One browser per session.

Screenshots go to $BRIDGE_SCREENSHOTS when set (`make screenshots` sets docs/screenshots),
otherwise to the session's temporary folder.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import BaseWSGIServer, make_server

from bridge import accounts, create_app, idps
from saml import devidp

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
    "--window-size=1280,800",
)


class _Later:
    """A WSGI app set after the server is bound (the app needs the port in its base URL)."""

    def __init__(self) -> None:
        self.app = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


def _serve(app: _Later) -> tuple[BaseWSGIServer, str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


@pytest.fixture(scope="session")
def live(settings, tmp_path_factory) -> Iterator[dict]:
    """The bridge and the dev IdP, each on its own free loopback port."""
    bridge_app, idp_app = _Later(), _Later()
    bridge_server, base_url = _serve(bridge_app)
    idp_server, idp_url = _serve(idp_app)
    instance = tmp_path_factory.mktemp("live-instance")
    (instance / "policies").mkdir()
    live_settings = replace(
        settings, base_url=base_url, instance_path=instance, policy_dir=instance / "policies"
    )
    app = create_app(live_settings)
    bridge_app.app = app
    idp_app.app = devidp.create_app(instance / "dev-idp", idp_url)
    _key, cert = devidp.keys(instance / "dev-idp")
    yield {
        "app": app,
        "store": app.extensions["bridge.store"],
        "settings": live_settings,
        "base_url": base_url,
        "idp_url": idp_url,
        "idp_metadata": devidp.metadata(idp_url, cert),
    }
    bridge_server.shutdown()
    idp_server.shutdown()
    app.extensions["bridge.store"].dispose()


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the whole session, with a fresh profile."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:  # .ci/run installs them; a run without them must not pass quietly
        pytest.fail(f"{', '.join(missing)} missing: apt-get install chromium chromium-driver")
    profile = tempfile.mkdtemp(prefix="bridge-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    desktop(driver)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def desktop(driver: webdriver.Chrome) -> None:
    """A 1280x800 viewport (the window size flag sizes the window, not the page)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False},
    )


def phone(driver: webdriver.Chrome) -> None:
    """A phone's viewport (390x844, touch, mobile layout)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True},
    )


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    folder = os.environ.get("BRIDGE_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Console:
    """The browser on one account's console, with the helpers a person's steps need."""

    def __init__(self, browser, live, slug, shots: Path) -> None:
        self.browser, self.live, self.slug, self.shots = browser, live, slug, shots
        self.wait = WebDriverWait(browser, 20)

    def url(self, path: str = "") -> str:
        return f"{self.live['base_url']}/console/{self.slug}/{path}"

    def open(self, path: str = "") -> None:
        self.browser.get(self.url(path))

    def heading(self) -> str:
        return self.browser.find_element(By.TAG_NAME, "h1").text

    def text(self) -> str:
        return self.browser.find_element(By.TAG_NAME, "body").text

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.browser.save_screenshot(str(path))
        return path

    def phone_shot(self, name: str) -> Path:
        """The page as a phone shows it; the page must not scroll sideways."""
        phone(self.browser)
        try:
            self.browser.refresh()
            width = self.browser.execute_script("return document.documentElement.scrollWidth")
            wide = self.browser.execute_script(
                "return [...document.querySelectorAll('body *')]"
                ".filter(e => e.getBoundingClientRect().right > 391)"
                ".map(e => e.tagName + '.' + e.className + '#' + e.id).slice(0, 8)"
            )
            assert width <= 390, f"{name}: the page is {width}px wide on a 390px phone: {wide}"
            return self.shot(name)
        finally:
            desktop(self.browser)

    def click(self, text: str, *, navigates: bool = True) -> None:
        """Click the button or link a person would read as `text` (and wait for the next page)."""
        page = self.browser.find_element(By.TAG_NAME, "html")
        self.browser.find_element(
            By.XPATH, f"//button[normalize-space()='{text}'] | //a[normalize-space()='{text}']"
        ).click()
        if navigates:
            self.wait_gone(page)

    def wait_gone(self, page: Any) -> None:
        """Wait until `page` (the old page's <html>) has left, then for the next page whole."""

        def gone(_browser: Any) -> bool:
            try:
                page.is_enabled()
            except StaleElementReferenceException:
                return True
            except WebDriverException as error:
                # chromedriver sometimes reports a node of a replaced document this way, not as
                # stale (selenium's staleness_of lets it through: a CI run failed on it)
                if "does not belong to the document" in str(error):
                    return True
                raise
            return False

        self.wait.until(gone)
        self.wait.until(lambda b: b.execute_script("return document.readyState") == "complete")

    def fill(self, label: str, value: str) -> None:
        """Type into the field whose <label> says `label` (labels are how people find fields)."""
        field = self.browser.find_element(
            By.XPATH,
            f"//input[@id=//label[normalize-space()='{label}']/@for]"
            f" | //textarea[@id=//label[normalize-space()='{label}']/@for]"
            f" | //select[@id=//label[normalize-space()='{label}']/@for]",
        )
        field.clear()
        field.send_keys(value)

    def sign_in_with_dev_idp(self, user_name: str, groups: str, department: str = "") -> None:
        """Open the console signed out: the account's one IdP (the dev IdP) asks who signs in."""
        self.browser.delete_all_cookies()
        self.open()
        self.wait.until(expected_conditions.url_contains(self.live["idp_url"]))
        for name, value in (
            ("user_name", user_name),
            ("groups", groups),
            ("department", department),
        ):
            field = self.browser.find_element(By.NAME, name)
            field.clear()
            field.send_keys(value)
        self.browser.find_element(By.XPATH, "//button[normalize-space()='Sign in']").click()
        self.wait.until(expected_conditions.url_contains(f"/console/{self.slug}/"))


@pytest.fixture
def console_account(live):
    """A fresh account with the dev IdP registered and a policy: `admins` members are admins."""
    from tests.console_support import write_policy

    store = live["store"]
    slug = f"web-{secrets.token_hex(3)}"
    accounts.create_account(store, slug, name="Acme Media", actor="test")
    accounts.add_environment(store, slug, "production", default=True, actor="test")
    accounts.add_environment(store, slug, "staging", actor="test")
    idps.add(store, slug, live["idp_metadata"], name="dev", actor="test")
    write_policy(live["settings"], slug)
    return slug


@pytest.fixture
def console(browser, live, console_account, screenshots) -> Console:
    return Console(browser, live, console_account, screenshots)
