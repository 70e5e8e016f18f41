"""The live node table: authoritative in memory, persisted through the store, mirrored into
the balancer on every change."""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from routercore.auth import hash_token, new_token, token_matches
from routercore.breaker import CLOSED, HALF_OPEN, CircuitBreaker
from routercore.errors import NotFound, Unauthorized
from routercore.node import OFFLINE, ONLINE, UNREACHABLE, Node, NodeMetrics, repair
from routercore.timestamps import now_rfc3339

if TYPE_CHECKING:
    from routercore.balancer import Balancer

log = logging.getLogger("routercore.registry")


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
    """Registered nodes by id. Every status change is logged, persisted and announced.

    Two facts make a node's status, and each has one source:
    - liveness: its agent's heartbeats (silent past the timeout, or disconnected: `offline`);
    - reachability: the router's own view of the runtime (a connection-level failure: `unreachable`;
      only the router's probe clears it, since a live agent says nothing about its runtime).
    A node that answers but fails requests stays `online`; its circuit breaker takes it out of
    rotation after `breaker_failures` consecutive failures.
    """

    def __init__(
        self,
        store: NodeStore,
        balancer: Balancer,
        *,
        breaker_failures: int = 5,
        breaker_backoff: float = 5.0,
        breaker_max_backoff: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.balancer = balancer
        self.clock = clock
        # One policy for every node's breaker, made on the node's first failure.
        self.new_breaker = functools.partial(
            CircuitBreaker,
            threshold=breaker_failures,
            backoff=breaker_backoff,
            max_backoff=breaker_max_backoff,
            clock=clock,
        )
        self.nodes: dict[str, Node] = {}
        self.last_beat: dict[str, float] = {}
        self.disconnected: set[str] = set()
        self.listeners: list[Listener] = []
        self.breakers: dict[str, CircuitBreaker] = {}
        # Nodes whose breaker lets one trial request through; the proxy checks this (cheap,
        # usually empty) after every pick.
        self.half_open: set[str] = set()
        # Set by the health monitor: probe this node now (why). Called when a stream is cut
        # mid-way and when an unreachable node's agent registers again.
        self.prober: Callable[[str, str], None] | None = None
        # model -> how many registered nodes list it (any status): what /metrics may label.
        self.model_refs: dict[str, int] = {}
        self._listed: dict[str, list[str]] = {}  # node id -> the models counted for it

    # -- start-up ------------------------------------------------------------------------------

    def load(self) -> int:
        """Bring back the persisted nodes, all offline until they heartbeat again."""
        for node in self.store.load_nodes():
            bad = repair(node)
            if bad:
                earlier = f"{node.problem}; " if node.problem else ""
                node.problem = f"{earlier}stored fields of the wrong type reset: {', '.join(bad)}"
            if node.problem:
                log.warning("event=node_record_repaired id=%s problem=%r", node.id, node.problem)
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

    def knows_model(self, model: str) -> bool:
        """Some registered node lists `model` (any state, enabled or not): a name clients
        cannot invent. A dict lookup: this runs for every proxied request."""
        return model in self.model_refs

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
            if value is not None or key == "relay_port":  # a node may stop relaying
                setattr(node, key, value)
        node.token_hash = hash_token(token)
        node.problem = None  # a fresh registration replaces whatever was damaged
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
        # A registration proves the agent alive, not its runtime reachable: a node the router
        # could not reach stays unreachable until its probe answers (scheduled at once).
        self._set_status(node, self._alive_status(node), "registered")
        if not node.reachable and self.prober is not None:
            self.prober(node.id, "its agent registered again")
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
        if models is not None and (runtime_up or models):
            # A runtime that is down lists nothing; its models are still the node's (the model
            # is unavailable for now, not unknown), so the last list is kept.
            node.models = models
        node.runtime_up = runtime_up
        node.last_seen = now
        self.last_beat[node.id] = self.clock()
        if node.id in self.disconnected:
            status = "disconnected"
        else:
            self._set_status(node, self._alive_status(node), "heartbeat")
            status = "ok"
            if not node.reachable and runtime_up and self.prober is not None:
                # The agent sees its runtime up: not proof, but worth a probe now rather than
                # at the end of the backoff (the probe decides).
                self.prober(node.id, "its agent reports the runtime up")
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

    def set_models(self, node: Node, models: list[str]) -> None:
        """Change what a node serves now (a pull finished, a model was deleted)."""
        node.models = models
        self.store.save_node(node)
        self._sync_balancer(node)
        self._announce(node)

    def delete(self, node_id: str) -> None:
        node = self.get(node_id)
        del self.nodes[node_id]
        self.last_beat.pop(node_id, None)
        self.breakers.pop(node_id, None)
        self.half_open.discard(node_id)
        self.disconnected.discard(node_id)
        self.balancer.remove_node(node_id)
        self._count_models(node_id, [])
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
        """A connection-level failure: out of rotation until the router's probe answers."""
        node = self.nodes.get(node_id)
        if node is None:
            return
        node.reachable = False
        node.unreachable_reason = reason
        if node.status == ONLINE:
            self._set_status(node, UNREACHABLE, reason)
            self.store.save_node(node)
            self._sync_balancer(node)

    def mark_reachable(self, node_id: str) -> None:
        """The router's own probe answered: the runtime takes connections again."""
        node = self.nodes.get(node_id)
        if node is None:
            return
        node.reachable = True
        node.unreachable_reason = None
        if node.status == UNREACHABLE and node_id not in self.disconnected:
            self._set_status(node, ONLINE, "probe answered")
            self.store.save_node(node)
            self._sync_balancer(node)

    def suspect(self, node_id: str, why: str) -> None:
        """Something hinted the runtime is gone (a stream cut mid-way): probe it now; the node
        stays in rotation unless the probe fails."""
        if self.prober is not None and node_id in self.nodes:
            self.prober(node_id, why)

    def lists_model(self, model: str) -> bool:
        """Some registered, enabled node lists `model`, whatever its state now."""
        if model not in self.model_refs:  # a name no node lists (a client's invention): O(1)
            return False
        return any(model in n.models for n in self.nodes.values() if n.enabled)

    # -- circuit breaker ------------------------------------------------------------------------

    def breaker(self, node_id: str) -> CircuitBreaker:
        brk = self.breakers.get(node_id)
        if brk is None:
            brk = self.breakers[node_id] = self.new_breaker()
        return brk

    def request_succeeded(self, node_id: str) -> None:
        brk = self.breakers.get(node_id)
        if brk is None or (brk.failures == 0 and brk.state == CLOSED):
            return  # the hot path: nothing to reset
        if brk.success():
            log.info("event=breaker_closed id=%s", node_id)
            self.half_open.discard(node_id)
            self._breaker_changed(node_id)

    def request_failed(self, node_id: str, reason: str) -> None:
        """A failed request (an HTTP 5xx, a stream cut mid-way): counts toward the breaker."""
        brk = self.breaker(node_id)
        if brk.failure():
            self.half_open.discard(node_id)
            log.warning(
                "event=breaker_open id=%s failures=%d retry_in=%.1fs reason=%r",
                node_id,
                brk.failures,
                brk.backoff,
                reason,
            )
            self._breaker_changed(node_id)

    def start_trial(self, node_id: str) -> None:
        """The proxy picked a half-open node: that one request is its trial, nobody else's."""
        self.half_open.discard(node_id)
        brk = self.breakers.get(node_id)
        if brk is not None and brk.state == HALF_OPEN:
            brk.start_trial()
            log.info("event=breaker_trial id=%s", node_id)
            self._breaker_changed(node_id)

    def trial_abandoned(self, node_id: str) -> None:
        brk = self.breakers.get(node_id)
        if brk is not None and brk.state == HALF_OPEN and brk.trial_in_flight:
            brk.abandon_trial()
            self.half_open.add(node_id)
            self._breaker_changed(node_id)

    def check_breakers(self) -> None:
        """Open breakers whose backoff passed let one trial request through (health tick)."""
        for node_id, brk in self.breakers.items():
            if brk.due():
                log.info("event=breaker_half_open id=%s", node_id)
                self.half_open.add(node_id)
                self._breaker_changed(node_id)

    def _breaker_changed(self, node_id: str) -> None:
        node = self.nodes.get(node_id)
        if node is not None:
            self._sync_balancer(node)
            self._announce(node)

    def record_result(self, node_id: str, ok: bool, latency_ms: float) -> None:
        node = self.nodes.get(node_id)
        if node is None:
            return
        node.stats.total_requests += 1
        node.stats.total_latency_ms += latency_ms
        if not ok:
            node.stats.failed_requests += 1

    # -- internals -----------------------------------------------------------------------------

    def _alive_status(self, node: Node) -> str:
        """The status of a node whose agent just spoke: online unless the router cannot reach it."""
        return ONLINE if node.reachable else UNREACHABLE

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

    def _count_models(self, node_id: str, models: list[str]) -> None:
        old = self._listed.get(node_id)
        if old == models:  # the usual heartbeat: same list, nothing to do
            return
        refs = self.model_refs
        for name in old or ():
            left = refs[name] - 1
            if left:
                refs[name] = left
            else:
                del refs[name]
        for name in models:
            refs[name] = refs.get(name, 0) + 1
        if models:
            self._listed[node_id] = list(models)
        else:
            self._listed.pop(node_id, None)

    def _sync_balancer(self, node: Node) -> None:
        self._count_models(node.id, node.models)
        m = node.metrics
        brk = self.breakers.get(node.id)
        self.balancer.set_node(
            node.id,
            models=node.models,
            available=node.status == ONLINE
            and node.enabled
            and node.runtime_up
            and (brk is None or brk.admits),
            max_concurrency=node.max_concurrency,
            cpu=m.cpu_usage,
            memory=m.memory_usage,
            gpu=m.gpu_usage,
            gpu_memory=m.gpu_memory_usage,
            # Rendezvous by address, not by id: every router replica knows a node's address.
            affinity_key=f"{node.ip_address}:{node.runtime_port}",
        )
