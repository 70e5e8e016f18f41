"""Fixtures the store's test modules share: a database path and stores closed at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from routercore.store import Store


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "router.db"


@pytest.fixture
def opened(db: Path) -> Iterator[Callable[..., Store]]:
    stores: list[Store] = []

    def make(path: str | Path = db, **kw: Any) -> Store:
        s = Store(str(path), **kw)
        s.open()
        stores.append(s)
        return s

    yield make
    for s in stores:
        s.close(timeout=5)
