"""Fixtures that start real routers (in a thread or as a process) and fake nodes on free ports.

Everything started here is stopped at teardown. Waiting for state always polls with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from routercore.config import load_config
from routercore.http import response_parser
from routercore.testing.fakenode import ThreadedFakeNode, run_in_thread

ADMIN_TOKEN = "test-admin-token"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Poll until `predicate()` is truthy; return its value or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")


def http(
    method: str,
    url: str,
    body: Any = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    """A tiny blocking HTTP client: (status, headers, JSON-or-bytes body)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, hdrs, payload = resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        status, hdrs, payload = exc.code, dict(exc.headers.items()), exc.read()
    hdrs = {k.lower(): v for k, v in hdrs.items()}
    try:
        return status, hdrs, json.loads(payload) if payload else None
    except ValueError:
        return status, hdrs, payload


class RouterThread:
    """A RouterService on its own uvloop loop in a background thread (same process)."""

    def __init__(self, db: str, **settings: Any) -> None:
        from routercore.cli import install_loop
        from routercore.service import RouterService

        settings.setdefault("host", "127.0.0.1")
        settings.setdefault("port", 0)
        settings.setdefault("admin_token", ADMIN_TOKEN)
        settings.setdefault("heartbeat_interval", 0.5)
        settings.setdefault("heartbeat_timeout", 3.0)
        settings.setdefault("probe_interval", 0.3)
        settings.setdefault("shutdown_grace", 2.0)
        settings.setdefault("db", db)
        self.config = load_config(env={}, overrides=settings)
        install_loop()
        self.loop = asyncio.new_event_loop()
        self.service = RouterService(self.config)
        started = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self.service.start())
            except BaseException as exc:
                self.error = exc
                started.set()
                return
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="router", daemon=True)
        self.thread.start()
        started.wait(30)
        if self.error:
            raise self.error
        assert self.service.address is not None
        self.port = self.service.address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the router's loop (to inspect state safely)."""

        async def wrapper() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(10)

    def agents(self) -> list[dict[str, Any]]:
        return http("GET", self.url + "/api/agents", token=ADMIN_TOKEN)[2]

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


class RouterProcess:
    """`python -m routercore serve` as a child process, for restarts, signals and kill -9."""

    def __init__(
        self,
        db: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.db = db
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "LLM_ROUTER_ADMIN_TOKEN": ADMIN_TOKEN,
            "LLM_ROUTER_HEARTBEAT_INTERVAL": "0.5",
            "LLM_ROUTER_HEARTBEAT_TIMEOUT": "3",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.args = args or []
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "routercore",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db",
            self.db,
            *self.args,
        ]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=out, cwd=str(ROOT))
        wait_for(self._ready, timeout=30, message=f"router on port {self.port}")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"router exited with {self.proc.returncode}")
        try:
            return http("GET", self.url + "/healthz", timeout=1)[0] == 200
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


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


def online_ids(
    router: RouterThread | RouterProcess, count: int, timeout: float = 10.0
) -> list[str]:
    """Wait until `count` nodes are online; return their ids."""

    def check() -> list[str] | None:
        agents = http("GET", router.url + "/api/agents", token=ADMIN_TOKEN)[2]
        ids = [a["id"] for a in agents if a["status"] == "online"]
        return ids if len(ids) >= count else None

    return wait_for(check, timeout=timeout, message=f"{count} online nodes")


def join(
    router: RouterThread | RouterProcess,
    fake_nodes: Callable[..., ThreadedFakeNode],
    count: int = 1,
    **kwargs: Any,
) -> list[ThreadedFakeNode]:
    """Start `count` fake nodes registered with `router` and wait until they are online."""
    nodes = [fake_nodes(register=router.url, name=f"fake-{i}", **kwargs) for i in range(count)]
    online_ids(router, count)
    return nodes


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
