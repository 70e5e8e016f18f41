"""A real router for a test: in a background thread of this process (`RouterThread`) or as a
child process (`RouterProcess`, for restarts, signals and kill -9); the blocking HTTP client the
tests talk to it with, and joining fake nodes to it."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from routercore.config import load_config
from routercore.testing.fakenode import ThreadedFakeNode
from routercore.testing.processes import (
    Child,
    free_port,
    inherited_env,
    router_cmd,
    wait_router,
    wait_until,
)
from tests.support import ROOT

ADMIN_TOKEN = "test-admin-token"


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


class RouterProcess(Child):
    """`python -m routercore serve` as a child process, started at once and again by `start()`
    after a stop (same port, same database); fast heartbeats unless `env` says otherwise."""

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
        settings = {
            "LLM_ROUTER_ADMIN_TOKEN": ADMIN_TOKEN,
            "LLM_ROUTER_HEARTBEAT_INTERVAL": "0.5",
            "LLM_ROUTER_HEARTBEAT_TIMEOUT": "3",
            **(env or {}),
        }
        cmd = router_cmd(self.port, db, *(args or []))
        log = log_path if log_path is not None else Path("/dev/null")
        super().__init__(cmd, log, env=inherited_env(settings), cwd=ROOT, name="router")
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> RouterProcess:
        super().start()
        wait_router(self, self.port)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        return super().stop(sig, timeout)


def online_ids(
    router: RouterThread | RouterProcess, count: int, timeout: float = 10.0
) -> list[str]:
    """Wait until `count` nodes are online; return their ids."""

    def check() -> list[str] | None:
        agents = http("GET", router.url + "/api/agents", token=ADMIN_TOKEN)[2]
        ids = [a["id"] for a in agents if a["status"] == "online"]
        return ids if len(ids) >= count else None

    return wait_until(check, timeout=timeout, message=f"{count} online nodes")


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
