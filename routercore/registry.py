"""The live node table: authoritative in memory, persisted through the store, mirrored into
the balancer on every change."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from routercore.auth import hash_token, new_token, token_matches
from routercore.errors import NotFound, Unauthorized
from routercore.node import OFFLINE, ONLINE, UNREACHABLE, Node, NodeMetrics

if TYPE_CHECKING:
    from routercore.balancer import Balancer

log = logging.getLogger("routercore.registry")


_second_text: tuple[int, str] = (-1, "")


def now_rfc3339() -> str:
    """UTC now as `2026-01-02T03:04:05.678Z`; the seconds part is formatted once per second
    (this runs once per proxied request)."""
    global _second_text
    now = time.time()
    second = int(now)
    if second != _second_text[0]:
        _second_text = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second_text[1]}.{int((now - second) * 1000):03d}Z"


class NodeStore(Protocol):
    """The part of routercore.store.Store the registry uses."""

    def load_nodes(self) -> list[Node]: ...
    def save_node(self, node: Node) -> None: ...
    def delete_node(self, node_id: str) -> None: ...
    def add_health_sample(
        self,
        node_id: str,
        ts: str,
        cpu: float | None,
        memory: float | None,
        gpu: float | None,
        gpu_memory: float | None,
        active_requests: int,
    ) -> None: ...


Listener = Callable[[str, Node], None]


class NodeRegistry:
    """Registered nodes by id. Every status change is logged, persisted and announced."""

    def __init__(
        self, store: NodeStore, balancer: Balancer, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.balancer = balancer
        self.clock = clock
        self.nodes: dict[str, Node] = {}
        self.last_beat: dict[str, float] = {}
        self.disconnected: set[str] = set()
        self.listeners: list[Listener] = []

    # -- start-up ------------------------------------------------------------------------------

    def load(self) -> int:
        """Bring back the persisted nodes, all offline until they heartbeat again."""
        for node in self.store.load_nodes():
            node.status = OFFLINE
            node.online_since = None
            node.metrics = NodeMetrics()
            self.nodes[node.id] = node
            self._sync_balancer(node)
        return len(self.nodes)

    # -- queries -------------------------------------------------------------------------------

    def get(self, node_id: str) -> Node:
        node = self.nodes.get(node_id)
        if node is None:
            raise NotFound(f"agent {node_id} not found")
        return node

    def find(self, machine_name: str, ip_address: str, runtime_port: int) -> Node | None:
        for node in self.nodes.values():
            if (node.machine_name, node.ip_address, node.runtime_port) == (
                machine_name,
                ip_address,
                runtime_port,
            ):
                return node
        return None

    def online(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.status == ONLINE and n.enabled]

    # -- agent calls ---------------------------------------------------------------------------

    def register(
        self, *, machine_name: str, ip_address: str, runtime_port: int, details: dict[str, Any]
    ) -> tuple[Node, bool, str]:
        """Create or refresh a node. Returns (node, created, fresh agent token)."""
        token = new_token("agt_")
        node = self.find(machine_name, ip_address, runtime_port)
        created = node is None
        now = now_rfc3339()
        if node is None:
            node = Node(
                id=str(uuid.uuid4()),
                machine_name=machine_name,
                ip_address=ip_address,
                runtime_port=runtime_port,
                registered_at=now,
            )
            self.nodes[node.id] = node
        for key, value in details.items():
            if value is not None:
                setattr(node, key, value)
        node.token_hash = hash_token(token)
        node.last_seen = now
        node.runtime_up = True
        self.disconnected.discard(node.id)
        self.last_beat[node.id] = self.clock()
        log.info(
            "event=node_registered id=%s machine=%s address=%s:%s created=%s",
            node.id,
            machine_name,
            ip_address,
            runtime_port,
            created,
        )
        self._set_status(node, ONLINE, "registered")
        self.store.save_node(node)
        self._sync_balancer(node)
        return node, created, token

    def check_token(self, node_id: str, token: str | None) -> Node:
        node = self.get(node_id)
        if token is None or not token_matches(token, node.token_hash):
            raise Unauthorized("invalid agent token")
        return node

    def heartbeat(
        self, node: Node, metrics: NodeMetrics, models: list[str] | None, runtime_up: bool
    ) -> str:
        """Apply a heartbeat; returns the status string to tell the agent."""
        now = now_rfc3339()
        node.metrics = metrics
        if models is not None:
            node.models = models
        node.runtime_up = runtime_up
        node.last_seen = now
        self.last_beat[node.id] = self.clock()
        if node.id in self.disconnected:
            status = "disconnected"
        else:
            self._set_status(node, ONLINE, "heartbeat")
            status = "ok"
        self.store.save_node(node)
        self.store.add_health_sample(
            node.id,
            now,
            metrics.cpu_usage,
            metrics.memory_usage,
            metrics.gpu_usage,
            metrics.gpu_memory_usage,
            metrics.active_requests,
        )
        self._sync_balancer(node)
        return status

    # -- admin calls ---------------------------------------------------------------------------

    def update(self, node: Node, changes: dict[str, Any]) -> Node:
        for key, value in changes.items():
            setattr(node, key, value)
        log.info("event=node_updated id=%s fields=%s", node.id, ",".join(sorted(changes)))
        self.store.save_node(node)
        self._sync_balancer(node)
        self._announce(node)
        return node

    def delete(self, node_id: str) -> None:
        node = self.get(node_id)
        del self.nodes[node_id]
        self.last_beat.pop(node_id, None)
        self.disconnected.discard(node_id)
        self.balancer.remove_node(node_id)
        self.store.delete_node(node_id)
        log.info("event=node_deleted id=%s machine=%s", node_id, node.machine_name)
        node.status = "deleted"
        self._announce(node)

    def disconnect(self, node_id: str) -> Node:
        node = self.get(node_id)
        self.disconnected.add(node_id)
        self._set_status(node, OFFLINE, "disconnected by admin")
        self.store.save_node(node)
        self._sync_balancer(node)
        return node

    # -- health --------------------------------------------------------------------------------

    def mark_offline(self, node_id: str, reason: str) -> None:
        node = self.nodes.get(node_id)
        if node is not None and node.status != OFFLINE:
            self._set_status(node, OFFLINE, reason)
            self.store.save_node(node)
            self._sync_balancer(node)

    def mark_unreachable(self, node_id: str, reason: str) -> None:
        node = self.nodes.get(node_id)
        if node is not None and node.status == ONLINE:
            self._set_status(node, UNREACHABLE, reason)
            self.store.save_node(node)
            self._sync_balancer(node)

    def mark_reachable(self, node_id: str) -> None:
        node = self.nodes.get(node_id)
        if node is not None and node.status == UNREACHABLE and node_id not in self.disconnected:
            self._set_status(node, ONLINE, "probe answered")
            self.store.save_node(node)
            self._sync_balancer(node)

    def record_result(self, node_id: str, ok: bool, latency_ms: float) -> None:
        node = self.nodes.get(node_id)
        if node is None:
            return
        node.stats.total_requests += 1
        node.stats.total_latency_ms += latency_ms
        if not ok:
            node.stats.failed_requests += 1

    # -- internals -----------------------------------------------------------------------------

    def _set_status(self, node: Node, status: str, reason: str) -> None:
        if node.status == status:
            return
        old = node.status
        node.status = status
        node.online_since = now_rfc3339() if status == ONLINE else None
        log.info(
            "event=node_status id=%s machine=%s from=%s to=%s reason=%r",
            node.id,
            node.machine_name,
            old,
            status,
            reason,
        )
        self._announce(node)

    def _announce(self, node: Node) -> None:
        for listener in list(self.listeners):
            try:
                listener(node.id, node)
            except Exception:
                log.exception("event=listener_failed")

    def _sync_balancer(self, node: Node) -> None:
        m = node.metrics
        self.balancer.set_node(
            node.id,
            models=node.models,
            available=node.status == ONLINE and node.enabled and node.runtime_up,
            max_concurrency=node.max_concurrency,
            cpu=m.cpu_usage,
            memory=m.memory_usage,
            gpu=m.gpu_usage,
            gpu_memory=m.gpu_memory_usage,
        )
