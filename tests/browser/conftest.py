"""Browser tests: one `tether demo` server and one headless Debian Chromium for the whole session."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ..conftest import ROOT
from ..support.demo import demo_copy
from ..support.served import serving

CHROMIUM = Path(os.environ.get("TETHER_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Each new browser context would also open the address bar's suggestion popup as a page of its own (a renderer
    # and half a second of CPU): headless tests never show it.
    "--disable-features=WebUIOmniboxPopup,WebUIOmniboxAimPopup",
]
VIEWPORT = {"width": 1280, "height": 800}


@dataclass
class Served:
    """A running demo server: its address, the demo users' API tokens and password."""

    base: str
    tokens: dict[str, str]
    password: str
    database: Path

    def api(self, user: str, method: str, path: str, **kw) -> requests.Response:
        """Call the JSON API as one of the demo users (``headers`` are sent besides the token)."""
        headers = {**kw.pop("headers", {}), "Authorization": f"Bearer {self.tokens[user]}"}
        return requests.request(method, f"{self.base}/api/v1{path}", timeout=15, headers=headers, **kw)


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> Served:
    """A copy of `tether demo`'s data served by `tether serve` on a free port (with the timer scheduler)."""
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium is not installed at {CHROMIUM}; `make test` installs it (apt-get install chromium)")
    folder = tmp_path_factory.mktemp("browser-demo")
    demo = demo_copy("sqlite", tmp_path_factory, folder)
    database = Path(demo.url.removeprefix("sqlite:///"))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TETHER_DATABASE_URL": demo.url,
        "TETHER_LOGIN_RATE_LIMIT": "1000 per minute",
    }  # every test logs in from 127.0.0.1
    tokens, password = demo.tokens, demo.password
    with serving(env, folder) as (api_base, _proc, _log):
        yield Served(api_base.removesuffix("/api/v1"), tokens, password, database)


@pytest.fixture(scope="session")
def browser(served):
    """Debian's Chromium, headless, driven by Playwright (its own browser downloads are not used)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_context(browser, served: Served, viewport: dict | None = None):
    """A fresh browser context (no cookies), at 1280x800 unless ``viewport`` says otherwise, pointed at the served
    demo, in Berlin's time zone."""
    context = browser.new_context(base_url=served.base, viewport=viewport or VIEWPORT, timezone_id="Europe/Berlin")
    context.set_default_timeout(15_000)
    return context


@pytest.fixture
def page(browser, served):
    """A fresh browser context (no cookies) at 1280x800, pointed at the served demo."""
    context = open_context(browser, served)
    yield context.new_page()
    context.close()


@pytest.fixture
def new_page(browser, served):
    """A factory of more browser contexts (several people at once)."""
    contexts = []

    def make(viewport=None):
        contexts.append(open_context(browser, served, viewport))
        return contexts[-1].new_page()

    yield make
    for context in contexts:
        context.close()
