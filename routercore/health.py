"""Node liveness: heartbeat timeouts make nodes offline; unreachable nodes are re-probed with
exponential backoff until their runtime answers again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from routercore.node import ONLINE, UNREACHABLE, Node
from routercore.registry import NodeRegistry

log = logging.getLogger("routercore.health")


async def probe_runtime(host: str, port: int, timeout: float) -> bool:
    """True when something at host:port answers an HTTP request (any status)."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.startswith(b"HTTP/1.")
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()


class HealthMonitor:
    """Background task: offline after `heartbeat_timeout` of silence; re-probe unreachable."""

    def __init__(
        self,
        registry: NodeRegistry,
        *,
        heartbeat_timeout: float,
        probe_interval: float,
        probe_max_interval: float,
        connect_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.heartbeat_timeout = heartbeat_timeout
        self.probe_interval = probe_interval
        self.probe_max_interval = probe_max_interval
        self.connect_timeout = connect_timeout
        self.clock = clock
        self.tick = min(0.25, heartbeat_timeout / 4)
        self.probes: dict[str, tuple[float, float]] = {}  # node id -> (next probe at, backoff)
        self.probing: set[str] = set()
        registry.listeners.append(self._on_change)

    def _on_change(self, node_id: str, node: Node) -> None:
        if node.status == UNREACHABLE and node_id not in self.probes:
            self.probes[node_id] = (self.clock() + self.probe_interval, self.probe_interval)
        elif node.status != UNREACHABLE:
            self.probes.pop(node_id, None)

    async def run(self) -> None:
        while True:
            try:
                self.check_heartbeats()
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
            if silent > self.heartbeat_timeout:
                reg.mark_offline(node_id, f"no heartbeat for {silent:.1f}s")

    def start_due_probes(self) -> None:
        now = self.clock()
        for node_id, (due, backoff) in list(self.probes.items()):
            if due <= now and node_id not in self.probing:
                self.probing.add(node_id)
                asyncio.get_running_loop().create_task(self._probe(node_id, backoff))

    async def _probe(self, node_id: str, backoff: float) -> None:
        try:
            node = self.registry.nodes.get(node_id)
            if node is None or node.status != UNREACHABLE:
                self.probes.pop(node_id, None)
                return
            ok = await probe_runtime(node.ip_address, node.runtime_port, self.connect_timeout)
            if ok:
                log.info("event=probe_ok id=%s", node_id)
                self.registry.mark_reachable(node_id)
                self.probes.pop(node_id, None)
            elif node_id in self.probes:
                backoff = min(backoff * 2, self.probe_max_interval)
                log.info("event=probe_failed id=%s next_in=%.1fs", node_id, backoff)
                self.probes[node_id] = (self.clock() + backoff, backoff)
        finally:
            self.probing.discard(node_id)
