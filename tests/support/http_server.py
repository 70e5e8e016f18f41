"""A real `HTTPServer` for tests, on the stock asyncio loop and on uvloop, fast path on or off.

The variants: asyncio, uvloop, and uvloop with the wire's fast path off so that h11 reads every
request; a test module takes them all with `run = run_fixture(VARIANTS)` (one suite, both paths).

`make_runner(variant)` runs a test's coroutine on a fresh loop of that variant; `serve(...)`
starts a server with the variant's wire path on a free port inside it. `echo` answers with
what the server parsed; `capture` / `errors` look at the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import Any

import pytest
import uvloop

from routercore.app import error_response
from routercore.http.messages import Request, Response, WebSocketAccept
from routercore.http.server import HTTPServer, ServerLimits

Dispatch = Callable[[Request], Awaitable["Response | WebSocketAccept | None"]]

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.SelectorEventLoop,
    "uvloop": uvloop.new_event_loop,
}


# variant name -> (event loop, ServerLimits.fast_path)
VARIANTS: dict[str, tuple[str, bool]] = {
    "asyncio": ("asyncio", True),
    "uvloop": ("uvloop", True),
    "uvloop-h11": ("uvloop", False),
}
_fast_path = True  # what `serve` uses unless a test says; set by the runner


Runner = Callable[[Coroutine[Any, Any, Any]], Any]


def make_runner(variant: str) -> Runner:
    """Run a coroutine to completion on a fresh loop, with servers of the named variant."""
    loop, fast = VARIANTS[variant]

    def runner(coro: Coroutine[Any, Any, Any]) -> Any:
        global _fast_path
        _fast_path = fast
        try:
            with asyncio.Runner(loop_factory=LOOPS[loop]) as r:
                return r.run(asyncio.wait_for(coro, 60))
        finally:
            _fast_path = True

    return runner


def run_fixture(variants: Iterable[str]) -> Any:
    """A `run` fixture over the named variants: `run = run_fixture(VARIANTS)` in a test module."""

    @pytest.fixture(params=sorted(variants))
    def run(request: pytest.FixtureRequest) -> Runner:
        return make_runner(request.param)

    return run


@contextlib.asynccontextmanager
async def serve(
    dispatch: Dispatch, *, on_error: Any = error_response, **limits: Any
) -> AsyncIterator[tuple[HTTPServer, int]]:
    """A real HTTPServer on 127.0.0.1:<free port> in the running loop, stopped afterwards."""
    limits.setdefault("fast_path", _fast_path)
    server = HTTPServer(dispatch, ServerLimits(**limits), on_error)
    _, port = await server.start("127.0.0.1", 0)
    try:
        yield server, port
    finally:
        await server.shutdown(0)


def capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="routercore")


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


async def echo(request: Request) -> Response:
    """Echoes what the server parsed, so tests can check it."""
    return Response.json(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "body": request.body.decode("latin-1"),
            "peer": request.peer,
            "headers": {k.decode(): v.decode("latin-1") for k, v in request.headers},
        }
    )
