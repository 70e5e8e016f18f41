"""Node health over time: heartbeat timeouts make nodes offline; the router's own probes decide
reachability (unreachable nodes are re-probed with exponential backoff; a node whose stream was
cut mid-way is probed at once); open circuit breakers are given their trial when due."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from routercore.breaker import CLOSED, HALF_OPEN
from routercore.http.response_parser import BadStatusLine, ProtocolError
from routercore.http.upstream import (
    UpstreamBrokenError,
    UpstreamConnectError,
    UpstreamPool,
    UpstreamRequest,
)
from routercore.node import OFFLINE, ONLINE, UNREACHABLE, Node
from routercore.registry import NodeRegistry

if TYPE_CHECKING:
    from routercore.config import RouterConfig

log = logging.getLogger("routercore.health")


async def probe_runtime(
    pool: UpstreamPool,
    host: str,
    port: int,
    timeout: float,
    auth: tuple[bytes, bytes] | None = None,
    via: str = "",
) -> str | None:
    """None when something at host:port answers an HTTP request (any status), else why not.
    `auth` is the relay's header for a relayed node, so the probe reaches the runtime behind
    the agent's relay instead of being refused by it. `via` is the router's own `Via` value:
    a node that is the router itself sees the loop. Only the head is read: a runtime's `/`
    may be a whole web page."""
    headers = [(b"host", f"{host}:{port}".encode()), (b"connection", b"close")]
    if via:
        headers.append((b"via", via.encode()))
    if auth is not None:
        headers.append(auth)
    try:
        req = UpstreamRequest(host, port, "GET", "/", headers)
        await pool.fetch(req, timeout=timeout, max_body=None, fresh=True)
    except UpstreamConnectError as exc:
        return str(exc)
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except UpstreamBrokenError as exc:
        if isinstance(exc.__cause__, BadStatusLine):
            return "not an HTTP answer"
        if isinstance(exc.__cause__, ProtocolError):
            return None  # an HTTP status line, a malformed rest: up (requests to it get a 502)
        return "closed without an HTTP answer"
    return None


class HealthMonitor:
    """Background task: offline after `heartbeat_timeout` of silence; probe unreachable and
    suspect nodes; let due breakers try one request."""

    def __init__(
        self,
        registry: NodeRegistry,
        cfg: RouterConfig,
        *,
        pool: UpstreamPool | None = None,
        clock: Callable[[], float] = time.monotonic,
        via: str = "",
    ) -> None:
        """`cfg` gives the heartbeat timeout and interval, the probe backoff (probe_interval
        doubling up to probe_max_interval) and the probe's connect_timeout."""
        self.registry = registry
        self.cfg = cfg
        # Probes go through the router's pool (fresh connections, closed after the head).
        self.pool = pool or UpstreamPool(connect_timeout=cfg.connect_timeout, max_idle=0)
        self.via = via
        self.clock = clock
        self.tick = min(0.25, cfg.heartbeat_timeout / 4)
        self.probes: dict[str, tuple[float, float]] = {}  # node id -> (next probe at, backoff)
        self.probing: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        registry.listeners.append(self._on_change)
        registry.prober = self.probe_now

    def _on_change(self, node_id: str, node: Node) -> None:
        if node.status == UNREACHABLE and node_id not in self.probes:
            self.probes[node_id] = (self.clock() + self.cfg.probe_interval, self.cfg.probe_interval)
        elif node.status != UNREACHABLE:
            self.probes.pop(node_id, None)

    async def run(self) -> None:
        while True:
            try:
                self.check_heartbeats()
                self.registry.check_breakers()
                self.start_due_probes()
            except Exception:
                log.exception("event=health_tick_failed")
            await asyncio.sleep(self.tick)

    def check_heartbeats(self) -> None:
        now = self.clock()
        reg = self.registry
        for node_id, node in list(reg.nodes.items()):
            if node.status not in (ONLINE, UNREACHABLE):
                continue
            silent = now - reg.last_beat.get(node_id, 0.0)
            if silent > self.cfg.heartbeat_timeout:
                reg.mark_offline(node_id, f"no heartbeat for {silent:.1f}s")

    def start_due_probes(self) -> None:
        now = self.clock()
        for node_id, (due, backoff) in list(self.probes.items()):
            if due <= now and node_id not in self.probing:
                self._start(node_id, backoff, None)

    def probe_now(self, node_id: str, why: str) -> None:
        """Probe at once instead of waiting for the schedule (see NodeRegistry.prober)."""
        if node_id in self.probing:
            return
        log.info("event=probe_now id=%s why=%r", node_id, why)
        _, backoff = self.probes.get(node_id, (0.0, self.cfg.probe_interval))
        self._start(node_id, backoff, why)

    def _start(self, node_id: str, backoff: float, why: str | None) -> None:
        self.probing.add(node_id)
        task = asyncio.get_running_loop().create_task(self._probe(node_id, backoff, why))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _probe(self, node_id: str, backoff: float, why: str | None) -> None:
        try:
            node = self.registry.nodes.get(node_id)
            if node is None or (why is None and node.status != UNREACHABLE):
                self.probes.pop(node_id, None)
                return
            failure = await probe_runtime(
                self.pool,
                node.ip_address,
                node.upstream_port,
                self.cfg.connect_timeout,
                node.relay_auth,
                self.via,
            )
            if failure is None:
                if not node.reachable:
                    log.info("event=probe_ok id=%s", node_id)
                    self.registry.mark_reachable(node_id)
                self.probes.pop(node_id, None)
                return
            if node.reachable:
                # A suspect node (its stream was cut) whose runtime no longer answers.
                log.warning("event=probe_failed id=%s why=%r reason=%r", node_id, why, failure)
                self.registry.mark_unreachable(node_id, failure)
            elif node_id in self.probes:
                backoff = min(backoff * 2, self.cfg.probe_max_interval)
                log.info(
                    "event=probe_failed id=%s reason=%r next_in=%.1fs", node_id, failure, backoff
                )
                node.unreachable_reason = failure
                self.probes[node_id] = (self.clock() + backoff, backoff)
        finally:
            self.probing.discard(node_id)

    # -- what clients and operators are told --------------------------------------------------

    def next_check_in(self, node: Node) -> float | None:
        """Seconds until something may bring this node back: its next probe or breaker trial."""
        now = self.clock()
        if node.status == UNREACHABLE:
            due = self.probes.get(node.id)
            return max(0.0, due[0] - now) if due else 0.0
        brk = self.registry.breakers.get(node.id)
        if brk is not None:
            return brk.seconds_to_trial()
        return None

    def describe(self, node: Node) -> dict[str, Any]:
        """The `health` object of `GET /api/agents`: in rotation or not, why, and when next."""
        brk = self.registry.breakers.get(node.id)
        state = brk.state if brk is not None else CLOSED
        failures = brk.failures if brk is not None else 0
        reason: str | None = None
        if node.id in self.registry.disconnected:
            reason = "disconnected by admin"
        elif node.status == OFFLINE:
            reason = "offline: no heartbeat"
        elif node.status == UNREACHABLE:
            reason = f"unreachable: {node.unreachable_reason or 'connection failed'}"
        elif not node.enabled:
            reason = "disabled"
        elif not node.runtime_up:
            reason = "runtime down (reported by its agent)"
        elif brk is not None and not brk.admits:
            reason = (
                f"breaker open: {failures} failures"
                if brk.state != HALF_OPEN
                else "breaker half-open: trial request in flight"
            )
        next_check = self.next_check_in(node)
        return {
            "in_rotation": reason is None,
            "reason": reason,
            "breaker": {"state": state, "consecutive_failures": failures},
            "next_check_in_secs": round(next_check, 1) if next_check is not None else None,
        }

    def retry_after(self, model: str) -> int:
        """Whole seconds until some enabled node listing `model` may take requests again."""
        waits: list[float] = []
        for node in self.registry.nodes.values():
            if not node.enabled or model not in node.models:
                continue
            if node.status == OFFLINE or not node.runtime_up:
                waits.append(self.cfg.heartbeat_interval)
                continue
            wait = self.next_check_in(node)
            waits.append(self.cfg.probe_interval if wait is None else wait)
        best = min(waits) if waits else self.cfg.probe_interval
        return max(1, min(math.ceil(best), int(self.cfg.probe_max_interval) or 1))
