"""`FakeNode`: one fake runtime on one port (lifecycle, settings, faults, the /_fake/* control
endpoints) and `ThreadedFakeNode` for sync callers. The public surface is
`routercore.testing.fakenode`; this module never imports it or the command line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypedDict, TypeVar, Unpack

import orjson

from routercore.errors import ConfigError
from routercore.testing.fake_api import FakeAPI, Reply, error_reply, json_reply
from routercore.testing.fake_register import RouterRegistration
from routercore.testing.fake_server import FakeHTTPProtocol
from routercore.testing.fake_state import FAULTS, Faults, Settings, Stats

log = logging.getLogger(__name__)
T = TypeVar("T")
_WILDCARDS = ("", "0.0.0.0", "::")


class FaultLimits(TypedDict, total=False):
    """How long a fault set from Python lasts: `times` requests, `seconds` (None: until
    cleared)."""

    times: int | None
    seconds: float | None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed: the fake node is the baseline in benchmarks."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class FakeNode:
    """One fake runtime on one port. Sync methods are safe to call from any thread."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] | str | None = None,
        api: str = "both",
        tokens: int = 8,
        token_delay: float = 0.0,
        first_token_delay: float = 0.0,
        embedding_dim: int = 8,
        faults: Mapping[str, Any] | Iterable[str] | None = None,
        register: str | None = None,
        name: str | None = None,
        registration_token: str | None = None,
        max_concurrency: int | None = None,
        register_retry_base: float = 0.5,
        tls: ssl.SSLContext | None = None,
        api_key: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        # A cloud provider's face: HTTPS, and 401 unless `Authorization: Bearer <api_key>`.
        self.tls = tls
        self.api_key = api_key.encode() if api_key is not None else None
        self.settings = Settings()
        changes: dict[str, Any] = {
            "api": api,
            "tokens": tokens,
            "token_delay": token_delay,
            "first_token_delay": first_token_delay,
            "embedding_dim": embedding_dim,
        }
        if models is not None:
            changes["models"] = models
        self.settings.update(changes)
        self.faults = Faults()
        if faults is not None:
            items = faults.items() if isinstance(faults, Mapping) else ((f, True) for f in faults)
            for fault, value in items:
                self.faults.set(fault, value)
        self.stats = Stats()
        self.api = FakeAPI(self.settings, self._models_changed)
        self.connections: set[FakeHTTPProtocol] = set()
        self.register_url = register
        self.name = name
        self.registration_token = registration_token
        self.max_concurrency = max_concurrency
        self.register_retry_base = register_retry_base
        self.registration: RouterRegistration | None = None
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where clients connect (wildcard hosts map to loopback)."""
        host = "127.0.0.1" if self.host in _WILDCARDS else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def start(self) -> FakeNode:
        """Bind and serve; with `register`, start the registration/heartbeat loop."""
        self._loop = asyncio.get_running_loop()
        if self.faults.refuse:
            self._bind().close()  # only fixes the port number; clearing the fault listens
        else:
            await self._listen(self._bind())
        if self.register_url:
            self.registration = RouterRegistration(
                self.register_url,
                machine_name=self.name or f"fake-{self.port}",
                runtime_port=self.port,
                describe=self._describe,
                registration_token=self.registration_token,
                max_concurrency=self.max_concurrency,
                retry_base=self.register_retry_base,
            )
            self._spawn(self.registration.run())
        log.info("fakenode started url=%s models=%s", self.url, ",".join(self.settings.models))
        return self

    async def stop(self) -> None:
        """Stop listening, cut open connections, stop heartbeats."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = [c.task for c in self.connections if c.task is not None]
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()  # connection_lost cancels each reply task
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> FakeNode:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _bind(self) -> socket.socket:
        """Bind synchronously so clearing `refuse` accepts connections at once."""
        info = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0]
        sock = socket.create_server(info[4][:2], family=info[0], backlog=1024)
        self.port = sock.getsockname()[1]
        return sock

    async def _listen(self, sock: socket.socket) -> None:
        assert self._loop is not None
        self._server = await self._loop.create_server(
            lambda: FakeHTTPProtocol(self), sock=sock, ssl=self.tls
        )

    def _spawn(self, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the node's loop: directly when already there, else hop and wait."""
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return fn()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return fn()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(timeout=30)

    # -- runtime control --------------------------------------------------------------------

    def configure(self, **changes: Any) -> None:
        """Change settings (models, api, tokens, token_delay, first_token_delay, ...)."""
        self._call(lambda: self._configure(changes))

    def set_fault(self, name: str, value: Any = True, **limits: Unpack[FaultLimits]) -> None:
        """Switch a fault on: `times` limits it to N requests, `seconds` to a duration."""
        times, seconds = limits.get("times"), limits.get("seconds")
        self._call(lambda: self._set_fault(name, value, times, seconds))

    def clear_faults(self) -> None:
        self._call(self._clear_faults)

    def reset_stats(self) -> None:
        self._call(self.stats.reset)

    def snapshot(self) -> dict[str, Any]:
        """Counters plus current settings, faults and registration state (GET /_fake/stats)."""
        return self._call(self._snapshot)

    def _configure(self, changes: Mapping[str, Any]) -> None:
        old = (list(self.settings.models), self.settings.api)
        self.settings.update(dict(changes))
        if (self.settings.models, self.settings.api) != old:
            self._models_changed()

    def _set_fault(
        self,
        name: str,
        value: Any,
        times: int | None,
        seconds: float | None,
        keep: FakeHTTPProtocol | None = None,
    ) -> None:
        self.faults.set(name, value, times)
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        if name == "refuse":
            self._apply_refuse(keep)
        if seconds is not None and self._loop is not None:
            if seconds < 0:
                raise ConfigError("seconds must be >= 0")
            off = None if name == "drop_after" else False
            self._timers[name] = self._loop.call_later(
                seconds, lambda: self._set_fault(name, off, None, None)
            )

    def _clear_faults(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.faults.clear()
        self._apply_refuse(None)

    def _apply_refuse(self, keep: FakeHTTPProtocol | None) -> None:
        """Refuse: close the listener and cut connections (except the one asking)."""
        if self._loop is None:
            return  # not started: start() honours the flag
        if self.faults.refuse and self._server is not None:
            self._server.close()
            self._server = None
            for conn in list(self.connections):
                if conn is not keep and conn.transport is not None:
                    conn.transport.abort()
        elif not self.faults.refuse and self._server is None:
            sock = self._bind()  # listening now; accept() starts a moment later
            self._spawn(self._listen(sock))

    def _models_changed(self) -> None:
        self.api.invalidate()
        if self.registration is not None:
            self.registration.wakeup.set()  # tell the router about the new list at once

    def _describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            "models": list(s.models),
            "active_requests": self.stats.in_flight,
            "cpu_usage": s.cpu_usage,
            "memory_usage": s.memory_usage,
            # Like the agent: a node serving only /v1 is an "openai" runtime (llama.cpp, vLLM).
            "runtime_kind": "openai" if s.api == "openai" else "ollama",
        }

    def has_stream_delay(self) -> bool:
        s = self.settings
        return s.token_delay > 0 or s.first_token_delay > 0

    def _snapshot(self) -> dict[str, Any]:
        out = self.stats.snapshot()
        out["settings"] = self.settings.snapshot()
        out["faults"] = self.faults.snapshot()
        reg = self.registration
        out["registration"] = reg.status.snapshot() if reg is not None else None
        return out

    def control(self, method: str, path: str, body: bytes, conn: FakeHTTPProtocol) -> Reply:
        """The /_fake/* endpoints other processes use to steer and observe the node."""
        if path == "/_fake/stats" and method == "GET":
            return json_reply(200, self._snapshot())
        if path == "/_fake/config" and method == "GET":
            return json_reply(200, self._config_view())
        if path == "/_fake/reset" and method == "POST":
            self.stats.reset()
            return json_reply(200, self._snapshot())
        if path == "/_fake/config" and method == "POST":
            try:
                req = orjson.loads(body) if body else {}
                if not isinstance(req, dict):
                    raise ConfigError("body must be a JSON object")
                self._apply_http_config(req, conn)
            except (orjson.JSONDecodeError, ConfigError) as exc:
                return json_reply(400, {"error": str(exc)})
            return json_reply(200, self._config_view())
        return error_reply(path, 404, f"unknown control endpoint {method} {path}")

    def _config_view(self) -> dict[str, Any]:
        return {"settings": self.settings.snapshot(), "faults": self.faults.snapshot()}

    def _apply_http_config(self, req: dict[str, Any], conn: FakeHTTPProtocol) -> None:
        """{"clear_faults": bool, "faults": {name: value | {value, times, seconds}}, **settings}"""
        faults = req.pop("faults", None) or {}
        clear = req.pop("clear_faults", False)
        if not isinstance(faults, dict):
            raise ConfigError('"faults" must be an object')
        plan: list[tuple[str, Any, int | None, float | None]] = []
        for name, spec in faults.items():
            if name not in FAULTS:
                raise ConfigError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
            if isinstance(spec, dict):
                plan.append((name, spec.get("value", True), spec.get("times"), spec.get("seconds")))
            else:
                plan.append((name, spec, None, None))
        Settings(**self.settings.snapshot()).update(req)  # validate before changing anything
        probe = Faults()
        for name, value, times, _ in plan:
            probe.set(name, value, times)
        if clear:
            self._clear_faults()
        self._configure(req)
        for name, value, times, seconds in plan:
            self._set_fault(name, value, times, seconds, keep=conn)


class ThreadedFakeNode:
    """A FakeNode on its own event loop in a daemon thread; a context manager."""

    def __init__(self, **kwargs: Any) -> None:
        self.node = FakeNode(**kwargs)
        self._loop = new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fakenode", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.node.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    @property
    def url(self) -> str:
        return self.node.url

    @property
    def port(self) -> int:
        return self.node.port

    # The node's sync controls hop onto its loop by themselves; these save a `.node`.
    def configure(self, **changes: Any) -> None:
        self.node.configure(**changes)

    def set_fault(self, name: str, value: Any = True, **limits: Unpack[FaultLimits]) -> None:
        self.node.set_fault(name, value, **limits)

    def clear_faults(self) -> None:
        self.node.clear_faults()

    def reset_stats(self) -> None:
        self.node.reset_stats()

    def snapshot(self) -> dict[str, Any]:
        return self.node.snapshot()

    def close(self) -> None:
        """Stop the node and its loop; waits for the thread to end."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.node.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def __enter__(self) -> FakeNode:
        return self.node

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_in_thread(**kwargs: Any) -> ThreadedFakeNode:
    """Start a FakeNode (same keyword arguments) in a background thread; call `.close()`."""
    return ThreadedFakeNode(**kwargs)
