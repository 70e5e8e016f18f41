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
from typing import Any, TypeVar

import pytest

from routercore.http import response_parser
from routercore.testing.fakenode import ThreadedFakeNode, run_in_thread
from tests.support.logs import ErrorLog
from tests.support.routers import RouterProcess, RouterThread

T = TypeVar("T")


def started_until_teardown(
    build: Callable[..., T], stop: Callable[[T], object]
) -> Iterator[Callable[..., T]]:
    """The body of a factory fixture: `make(...)` builds one more; teardown stops every one
    built, quietly, so one failed stop does not leave the others running."""
    started: list[T] = []

    def make(*args: Any, **kwargs: Any) -> T:
        item = build(len(started), *args, **kwargs)
        started.append(item)
        return item

    yield make
    for item in started:
        with contextlib.suppress(Exception):
            stop(item)


@pytest.fixture
def router_factory(tmp_path: Path) -> Iterator[Callable[..., RouterThread]]:
    def build(n: int, **settings: Any) -> RouterThread:
        return RouterThread(settings.pop("db", str(tmp_path / f"router{n}.db")), **settings)

    yield from started_until_teardown(build, RouterThread.stop)


@pytest.fixture
def router(router_factory: Callable[..., RouterThread]) -> RouterThread:
    return router_factory()


@pytest.fixture
def router_process(tmp_path: Path) -> Iterator[Callable[..., RouterProcess]]:
    def build(n: int, db: str | None = None, **kwargs: Any) -> RouterProcess:
        log_path = tmp_path / f"router{n}.log"
        return RouterProcess(db or str(tmp_path / "router.db"), log_path=log_path, **kwargs)

    yield from started_until_teardown(build, lambda p: p.stop(signal.SIGKILL))


@pytest.fixture
def fake_nodes() -> Iterator[Callable[..., ThreadedFakeNode]]:
    """Factory of fake nodes in background threads; `register=router.url` makes them join."""

    def build(n: int, **kwargs: Any) -> ThreadedFakeNode:
        kwargs.setdefault("models", ["llama3"])
        return run_in_thread(**kwargs)

    yield from started_until_teardown(build, ThreadedFakeNode.close)


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
