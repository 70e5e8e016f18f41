"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright.

What every page test shares: the browser's settings and marks, a page that fails the test on
any JavaScript error, and opening the dashboard. The `browser` and `page` fixtures built on
these are in tests/e2e/conftest.py. Importing this module skips the importing test module when
Playwright is missing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT
from tests.support.routers import RouterThread

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = os.environ.get("LLM_ROUTER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = ROOT / "test-artifacts"
LIVE = 2000  # ms: how soon the page must reflect a change
DASH = "\u2013"  # the page writes ranges and missing values with an en dash

# Every browser test module's marks (`pytestmark = BROWSER_MARKS`, plus its own).
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed"),
]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless chromium for the duration of the block."""
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@contextlib.contextmanager
def fresh_page(browser: Any) -> Iterator[Any]:
    """A page in a new context (no shared storage); fails when the page raised a JavaScript
    error meanwhile."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, locale="en-US")
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def open_dashboard(page: Any, router: RouterThread, view: str = "overview") -> None:
    """Load the page and wait for its first snapshot (polled in the DOM: the page's CSP
    forbids the string evaluation `wait_for_function` would need)."""
    page.goto(f"{router.url}/dashboard#{view}")
    expect(page.locator("#card-nodes")).not_to_have_text(DASH)


def node_row(page: Any, node_id: str) -> Any:
    return page.locator(f'#nodes-table tr[data-node-id="{node_id}"]')
