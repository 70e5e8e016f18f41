"""Keep one router informed: register, heartbeat at its interval, re-register when lost.

`RouterSession` holds the protocol decisions as plain state transitions (tested without a loop);
`RouterClient` runs them against the network with asyncio, one client per router URL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.backoff import Backoff
from agent.httpjson import JsonResponse, TransportError, request_json

log = logging.getLogger(__name__)

REGISTER_PATH = "/api/agents/register"
HEARTBEAT_PATH = "/api/health"

REGISTER = "register"
HEARTBEAT = "heartbeat"


@dataclass(frozen=True)
class Step:
    """What to do next and how long to wait before doing it."""

    action: str  # REGISTER or HEARTBEAT
    delay: float


class RouterSession:
    """Protocol state for one router: credentials, interval, and what a response means."""

    def __init__(
        self,
        url: str,
        *,
        registration_token: str | None = None,
        default_interval: float = 10.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url.rstrip("/")
        self.clock = clock
        self.last_heartbeat: float | None = None  # wall time of the last accepted heartbeat
        self.registration_token = registration_token
        self.default_interval = default_interval
        self.backoff = backoff or Backoff(1.0, 60.0)
        self.agent_id: str | None = None
        self.agent_token: str | None = None
        self.interval = default_interval
        self.registered = False
        self.last_error: str | None = None
        self.logs_wanted: int | None = None  # lines the router asked for, sent next heartbeat

    def register_headers(self) -> dict[str, str]:
        if self.registration_token:
            return {"Authorization": f"Bearer {self.registration_token}"}
        return {}

    def heartbeat_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.agent_token}"} if self.agent_token else {}

    def _lost(self, error: str) -> Step:
        """Back off, then register again: after an outage the router may have lost us."""
        self.registered = False
        self.last_error = error
        return Step(REGISTER, self.backoff.next_delay())

    def on_register_response(self, resp: JsonResponse) -> Step:
        body = resp.body if isinstance(resp.body, dict) else {}
        if resp.status in (200, 201) and body.get("agent_id") and body.get("agent_token"):
            self.agent_id = str(body["agent_id"])
            self.agent_token = str(body["agent_token"])
            interval = body.get("heartbeat_interval_secs")
            valid = (
                isinstance(interval, int | float)
                and not isinstance(interval, bool)
                and interval > 0
            )
            self.interval = float(interval) if valid else self.default_interval  # type: ignore[arg-type]
            self.registered = True
            self.last_error = None
            self.backoff.reset()
            return Step(HEARTBEAT, 0.0)  # first heartbeat at once: it carries the metrics
        message = body.get("error") if isinstance(body.get("error"), str) else None
        if resp.status in (401, 403):
            error = f"registration refused (HTTP {resp.status}): check the registration token"
        else:
            error = f"registration failed: HTTP {resp.status}" + (f" {message}" if message else "")
        return self._lost(error)

    def on_heartbeat_response(self, resp: JsonResponse) -> Step:
        if resp.ok:
            self.last_error = None
            self.last_heartbeat = self.clock()
            self.backoff.reset()
            body = resp.body if isinstance(resp.body, dict) else {}
            ask = body.get("send_logs")
            lines = ask.get("lines") if isinstance(ask, dict) else None
            if isinstance(lines, int) and not isinstance(lines, bool) and lines > 0:
                self.logs_wanted = min(lines, 5000)
                return Step(HEARTBEAT, 0.0)  # the router is waiting: send the log at once
            return Step(HEARTBEAT, self.interval)
        if resp.status in (401, 404):
            # 404: the router forgot us (new DB); 401: someone re-registered us, token is stale.
            self.registered = False
            self.last_error = f"heartbeat answered HTTP {resp.status}; registering again"
            return Step(REGISTER, 0.0)
        self.last_error = f"heartbeat failed: HTTP {resp.status}"
        return Step(HEARTBEAT, min(self.interval, self.backoff.next_delay()))

    def on_transport_error(self, error: str) -> Step:
        return self._lost(error)


class Agent(Protocol):
    """What a RouterClient asks of the agent it speaks for (`agent.service.AgentService`)."""

    async def registration_payload(self) -> dict[str, Any]: ...
    async def heartbeat_payload(self) -> dict[str, Any]: ...
    def log_lines(self, lines: int) -> list[str]: ...
    def on_router_change(self, session: RouterSession) -> None: ...


class RouterClient:
    """Runs a RouterSession until `stop` is set; `poke()` sends the next heartbeat early."""

    def __init__(self, session: RouterSession, agent: Agent, *, timeout: float = 10.0) -> None:
        self.session = session
        self.agent = agent
        self._timeout = timeout
        self._wake = asyncio.Event()

    def poke(self) -> None:
        self._wake.set()

    async def _post(self, path: str, payload: dict[str, Any], headers: dict[str, str]) -> Any:
        return await asyncio.to_thread(
            request_json,
            "POST",
            self.session.url + path,
            payload,
            headers=headers,
            timeout=self._timeout,
        )

    async def step(self, action: str) -> Step:
        """Do one register or heartbeat round trip and return what comes next."""
        s = self.session
        try:
            if action == REGISTER:
                resp = await self._post(
                    REGISTER_PATH, await self.agent.registration_payload(), s.register_headers()
                )
                nxt = s.on_register_response(resp)
                if s.registered:
                    log.info(
                        "registered router=%s agent_id=%s interval=%.1fs status=%s",
                        s.url,
                        s.agent_id,
                        s.interval,
                        resp.body.get("status") if isinstance(resp.body, dict) else None,
                    )
            else:
                payload = await self.agent.heartbeat_payload()
                payload["agent_id"] = s.agent_id
                if s.logs_wanted:
                    payload["logs"] = self.agent.log_lines(s.logs_wanted)
                    s.logs_wanted = None
                resp = await self._post(HEARTBEAT_PATH, payload, s.heartbeat_headers())
                nxt = s.on_heartbeat_response(resp)
        except TransportError as exc:
            nxt = s.on_transport_error(str(exc))
        if s.last_error:
            log.warning(
                "router_problem router=%s error=%s retry_in=%.1fs", s.url, s.last_error, nxt.delay
            )
        self.agent.on_router_change(s)
        return nxt

    async def run(self, stop: asyncio.Event) -> None:
        nxt = Step(REGISTER, 0.0)
        while not stop.is_set():
            if nxt.delay > 0:
                await self._sleep(nxt.delay, stop, wakeable=nxt.action == HEARTBEAT)
                if stop.is_set():
                    break
            self._wake.clear()
            try:
                nxt = await self.step(nxt.action)
            except Exception:  # a bug in a payload or a listener must not end the loop
                log.exception("router_step_failed router=%s", self.session.url)
                nxt = Step(REGISTER, self.session.backoff.next_delay())

    async def _sleep(self, delay: float, stop: asyncio.Event, *, wakeable: bool) -> None:
        waiters = [asyncio.ensure_future(stop.wait())]
        if wakeable:
            waiters.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
