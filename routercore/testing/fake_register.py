"""Registers a fake node with a router and keeps it alive with heartbeats, like the agent.

The HTTP client is a few lines of asyncio streams + h11 so it never blocks the node's loop
and can be cancelled at any await.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
import orjson

from routercore import __version__
from routercore.testing.fake_state import RUNTIME_VERSION

log = logging.getLogger(__name__)

_TIMEOUT = 10.0
_MAX_BACKOFF = 10.0


class RouterHTTPError(Exception):
    """The router answered with a status we did not expect."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"router answered {status}: {body[:200]!r}")
        self.status = status


async def post_json(
    url: str, payload: Any, token: str | None = None, timeout: float = _TIMEOUT
) -> tuple[int, Any]:
    """POST JSON, return (status, decoded JSON or None). One connection per call."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http:// URLs are supported: {url}")
    port = parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    body = orjson.dumps(payload)
    headers = [
        ("host", parts.netloc),
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("connection", "close"),
        ("user-agent", f"llm-router-fakenode/{__version__}"),
    ]
    if token:
        headers.append(("authorization", f"Bearer {token}"))

    # asyncio.timeout, not wait_for: a connection opened just as the timeout fires is still
    # closed by the `finally` below instead of leaking from a separate task.
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(parts.hostname, port)
        try:
            conn = h11.Connection(h11.CLIENT)
            writer.write(conn.send(h11.Request(method="POST", target=target, headers=headers)))
            writer.write(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
            await writer.drain()
            status = 0
            chunks: list[bytes] = []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        finally:
            writer.close()
    raw = b"".join(chunks)
    try:
        return status, orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return status, None


def system_info() -> dict[str, Any]:
    """What the agent reports about the machine; psutil is optional here."""
    memory = 0
    try:
        import psutil

        memory = int(psutil.virtual_memory().total)
    except Exception:
        pass
    return {
        "os": platform.system() or "unknown",
        "cpu_model": platform.processor() or platform.machine() or "fake-cpu",
        "cpu_count": os.cpu_count() or 1,
        "memory_bytes": memory,
    }


def _usage() -> tuple[float, float]:
    try:
        import psutil

        return float(psutil.cpu_percent(None)), float(psutil.virtual_memory().percent)
    except Exception:
        return 0.0, 0.0


@dataclass
class RegistrationStatus:
    """What the registration loop has achieved so far (shown in /_fake/stats)."""

    agent_id: str | None = None
    registrations: int = 0
    heartbeats: int = 0
    failures: int = 0
    last_error: str | None = None
    interval: float | None = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "registrations": self.registrations,
            "heartbeats": self.heartbeats,
            "failures": self.failures,
            "last_error": self.last_error,
            "heartbeat_interval_secs": self.interval,
        }


class RouterRegistration:
    """Register, then heartbeat every interval; re-register on 404/401; back off on errors."""

    def __init__(
        self,
        router_url: str,
        *,
        machine_name: str,
        runtime_port: int,
        describe: Callable[[], dict[str, Any]],
        registration_token: str | None = None,
        max_concurrency: int | None = None,
        retry_base: float = 0.5,
    ) -> None:
        self.router_url = router_url.rstrip("/")
        self.machine_name = machine_name
        self.runtime_port = runtime_port
        self.describe = describe  # -> {"models", "active_requests", "cpu_usage", "memory_usage"}
        self.registration_token = registration_token
        self.max_concurrency = max_concurrency
        self.retry_base = retry_base
        self.status = RegistrationStatus()
        self.wakeup = asyncio.Event()  # set to send a heartbeat now (e.g. models changed)
        self._token: str | None = None

    def registration_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "machine_name": self.machine_name,
            "runtime_port": self.runtime_port,
            "runtime_version": RUNTIME_VERSION,
            "agent_version": f"{__version__}-fakenode",
            "models": self.describe()["models"],
            "runtime_kind": self.describe()["runtime_kind"],
            "gpu_devices": [],
            "system": system_info(),
        }
        if self.max_concurrency is not None:
            body["max_concurrency"] = self.max_concurrency
        return body

    def heartbeat_body(self) -> dict[str, Any]:
        now = self.describe()
        cpu, memory = now.get("cpu_usage"), now.get("memory_usage")
        if cpu is None or memory is None:
            real_cpu, real_memory = _usage()
            cpu = real_cpu if cpu is None else cpu
            memory = real_memory if memory is None else memory
        return {
            "agent_id": self.status.agent_id,
            "cpu_usage": cpu,
            "memory_usage": memory,
            "gpu_usage": None,
            "gpu_memory_usage": None,
            "active_requests": now["active_requests"],
            "models": now["models"],
            "runtime_kind": now["runtime_kind"],
            "runtime_up": True,
        }

    async def register(self) -> None:
        status, data = await post_json(
            self.router_url + "/api/agents/register",
            self.registration_body(),
            self.registration_token,
        )
        if status not in (200, 201) or not isinstance(data, dict):
            raise RouterHTTPError(status, orjson.dumps(data))
        self.status.agent_id = str(data["agent_id"])
        self._token = str(data["agent_token"])
        self.status.interval = float(data.get("heartbeat_interval_secs") or 10)
        self.status.registrations += 1
        log.info(
            "fakenode registered router=%s agent_id=%s interval=%s",
            self.router_url,
            self.status.agent_id,
            self.status.interval,
        )

    async def heartbeat(self) -> bool:
        """Send one heartbeat; False when the router no longer knows us."""
        status, _ = await post_json(
            self.router_url + "/api/health", self.heartbeat_body(), self._token
        )
        if status in (401, 404):
            log.info("fakenode heartbeat rejected status=%s; re-registering", status)
            return False
        if status != 200:
            raise RouterHTTPError(status, b"")
        self.status.heartbeats += 1
        return True

    async def run(self) -> None:
        """Forever: register (with backoff), then heartbeat until told to re-register."""
        failures = 0
        registered = False
        while True:
            try:
                if not registered:
                    await self.register()
                    registered = True
                else:
                    registered = await self.heartbeat()
                    if not registered:
                        continue
                failures = 0
                await self._wait(self.status.interval or 10.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.status.failures += 1
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                delay = min(self.retry_base * 2 ** min(failures - 1, 10), _MAX_BACKOFF)
                delay *= 0.8 + 0.4 * random.random()
                log.warning(
                    "fakenode router call failed router=%s error=%r retry_in=%.2fs",
                    self.router_url,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.wakeup.wait(), seconds)
        except TimeoutError:
            pass
        self.wakeup.clear()
