"""The browser fixtures of the dashboard tests (built from tests/support/browser.py, imported
when a test asks for them: that import skips without Playwright)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from tests.support.browser import chromium

    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    from tests.support.browser import fresh_page

    with fresh_page(browser) as pg:
        yield pg
