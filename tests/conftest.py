"""Fixtures that start real routers (in a thread or as a process) and fake nodes on free ports.

Everything started here is stopped at teardown. The helpers behind them live in tests/support/
(a test module imports those, never this file).
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from routercore.http import response_parser
from routercore.testing.fakenode import ThreadedFakeNode, run_in_thread
from tests.support.logs import ErrorLog
from tests.support.routers import RouterProcess, RouterThread


@pytest.fixture
def router_factory(tmp_path: Path) -> Iterator[Callable[..., RouterThread]]:
    started: list[RouterThread] = []

    def make(**settings: Any) -> RouterThread:
        db = settings.pop("db", str(tmp_path / f"router{len(started)}.db"))
        r = RouterThread(db, **settings)
        started.append(r)
        return r

    yield make
    for r in started:
        with contextlib.suppress(Exception):
            r.stop()


@pytest.fixture
def router(router_factory: Callable[..., RouterThread]) -> RouterThread:
    return router_factory()


@pytest.fixture
def router_process(tmp_path: Path) -> Iterator[Callable[..., RouterProcess]]:
    started: list[RouterProcess] = []

    def make(db: str | None = None, **kwargs: Any) -> RouterProcess:
        p = RouterProcess(
            db or str(tmp_path / "router.db"),
            log_path=tmp_path / f"router{len(started)}.log",
            **kwargs,
        )
        started.append(p)
        return p

    yield make
    for p in started:
        with contextlib.suppress(Exception):
            p.stop(signal.SIGKILL)


@pytest.fixture
def fake_nodes() -> Iterator[Callable[..., ThreadedFakeNode]]:
    """Factory of fake nodes in background threads; `register=router.url` makes them join."""
    started: list[ThreadedFakeNode] = []

    def make(**kwargs: Any) -> ThreadedFakeNode:
        kwargs.setdefault("models", ["llama3"])
        node = run_in_thread(**kwargs)
        started.append(node)
        return node

    yield make
    for node in started:
        with contextlib.suppress(Exception):
            node.close()


@pytest.fixture(
    scope="module",
    params=[
        "python",
        pytest.param(
            "cython",
            marks=pytest.mark.skipif(
                not response_parser.COMPILED_AVAILABLE,
                reason=f"unavailable: {response_parser.COMPILED_UNAVAILABLE_REASON}",
            ),
        ),
    ],
)
def response_parser_impl(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a test module once per upstream response parser (compiled, twin): the module's own
    `ResponseParser` name is pointed at that implementation's class for the module's run."""
    cls = response_parser.implementation(request.param).ResponseParser
    saved = request.module.ResponseParser
    request.module.ResponseParser = cls
    yield request.param
    request.module.ResponseParser = saved


@pytest.fixture
def error_log() -> Iterator[ErrorLog]:
    """Every ERROR record logged during the test, from any thread."""
    handler = ErrorLog()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
