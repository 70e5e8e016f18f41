"""Deployments: "model M on N nodes (or all)", kept true by a reconcile loop.

The router picks the nodes (`rank_nodes`: most free GPU memory first, else most free RAM,
skipping nodes the model cannot fit), pulls there through the PullManager, and keeps watching:
a node that joins later gets an `"all"` model; a replica whose node stays offline for longer
than the heartbeat timeout (after it went offline, which takes a heartbeat timeout too) is
placed again elsewhere. The desired state survives a restart (routercore.deployment_store).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from routercore.deployment_store import DeploymentStore
from routercore.http.upstream import UpstreamPool
from routercore.model_overrides import has_model
from routercore.node import OFFLINE, ONLINE, Node
from routercore.pulls import FAILED, READY, NodePull, PullManager, node_request
from routercore.registry import NodeRegistry
from routercore.timestamps import now_rfc3339

log = logging.getLogger("routercore.deployments")

PENDING, PULLING = "pending", "pulling"
GIB = 1024**3
# Bits per weight of Ollama's common quantisations (llama.cpp's figures), for the size estimate.
_BITS = {"Q2_K": 2.6, "Q3_K": 3.4, "Q4_0": 4.5, "Q4_1": 5.0, "Q4_K": 4.8, "Q5_0": 5.5}
_BITS |= {"Q5_1": 6.0, "Q5_K": 5.7, "Q6_K": 6.6, "Q8_0": 8.5, "F16": 16.0, "BF16": 16.0}
_BITS |= {"F32": 32.0}


# -- placement (pure) ---------------------------------------------------------------------------


def free_memory(node: Node) -> tuple[int | None, int | None]:
    """(free GPU memory, free RAM) in bytes from the node's registration and last heartbeat;
    None when the node has no GPU / did not say."""
    vram = 0
    for device in node.gpu_devices:
        mem, count = device.get("memory_bytes"), device.get("count") or 1
        if isinstance(mem, int) and isinstance(count, int):
            vram += mem * count
    m = node.metrics
    gpu_free = None
    if vram:
        used = m.gpu_memory_usage or 0.0
        gpu_free = int(vram * (1 - used / 100))
    ram = node.system.get("memory_bytes") if isinstance(node.system, dict) else None
    ram_free = None
    if isinstance(ram, int) and ram > 0:
        ram_free = int(ram * (1 - (m.memory_usage or 0.0) / 100))
    return gpu_free, ram_free


def rank_nodes(nodes: Iterable[Node], model: str, need_bytes: int | None) -> list[Node]:
    """Best first: nodes that already have the model, then GPU nodes by free GPU memory, then
    the rest by free RAM. A node whose free memory is below `need_bytes` is left out."""
    ranked: list[tuple[tuple[int, int, int], Node]] = []
    for node in nodes:
        gpu_free, ram_free = free_memory(node)
        capacity = gpu_free if gpu_free is not None else ram_free
        present = has_model(node.models, model)
        if need_bytes and not present and (capacity is None or capacity < need_bytes):
            continue
        ranked.append(((int(present), int(gpu_free is not None), capacity or 0), node))
    ranked.sort(key=lambda item: item[0], reverse=True)
    return [node for _, node in ranked]


def size_from_show(show: Any) -> int | None:
    """A model's memory need estimated from Ollama's `/api/show`: parameter count times bits per
    weight of its quantisation, plus 10% for the context; None when the answer lacks them."""
    if not isinstance(show, dict):
        return None
    info = show.get("model_info")
    details = show.get("details")
    info = info if isinstance(info, dict) else {}
    details = details if isinstance(details, dict) else {}
    params = info.get("general.parameter_count")
    if not isinstance(params, int) or params <= 0:
        text = str(details.get("parameter_size") or "")
        match = re.fullmatch(r"([\d.]+)\s*([KMBT])", text.strip().upper())
        if match is None:
            return None
        scale = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[match.group(2)]
        params = int(float(match.group(1)) * scale)
    quant = str(details.get("quantization_level") or "F16").upper()
    bits = next((b for q, b in _BITS.items() if quant.startswith(q)), 16.0)
    return int(params * bits / 8 * 1.1)


# -- state ----------------------------------------------------------------------------------------


@dataclass
class Replica:
    agent_id: str
    state: str = PENDING
    error: str | None = None
    progress: float | None = None


@dataclass
class Deployment:
    model: str
    replicas: int | str
    min_memory_gb: float | None
    created_at: str
    size_bytes: int | None = None
    nodes: dict[str, Replica] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "replicas": self.replicas,
            "min_memory_gb": self.min_memory_gb,
            "size_bytes": self.size_bytes,
            "created_at": self.created_at,
            "nodes": {a: {"state": r.state, "error": r.error} for a, r in self.nodes.items()},
        }

    def need_bytes(self) -> int | None:
        need = max(self.size_bytes or 0, int((self.min_memory_gb or 0) * GIB))
        return need or None


class DeploymentManager:
    """The desired state in memory and SQLite, and the loop that makes the cluster match it."""

    def __init__(
        self,
        registry: NodeRegistry,
        pulls: PullManager,
        store: DeploymentStore,
        *,
        heartbeat_timeout: float,
        show: Callable[[Node, str], Awaitable[Any]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.pulls = pulls
        self.store = store
        self.heartbeat_timeout = heartbeat_timeout
        self.show = show  # async (node, model) -> /api/show answer or None
        self.clock = clock
        self.deployments: dict[str, Deployment] = {}
        self.offline_since: dict[str, float] = {}
        self.wake = asyncio.Event()
        self.tick = min(1.0, heartbeat_timeout / 4)
        pulls.listeners.append(self._pull_finished)
        registry.listeners.append(lambda _id, _node: self.wake.set())

    # -- API -------------------------------------------------------------------------------------

    def load(self) -> int:
        for row in self.store.load():
            d = Deployment(
                row["model"],
                row["replicas"],
                row["min_memory_gb"],
                row["created_at"],
                row["size_bytes"],
            )
            for agent_id, r in row["nodes"].items():
                state = r.get("state") or PENDING
                d.nodes[agent_id] = Replica(agent_id, PENDING if state == PULLING else state)
                d.nodes[agent_id].error = r.get("error")
            self.deployments[d.model] = d
        return len(self.deployments)

    async def deploy(self, model: str, replicas: int | str, min_gb: float | None) -> dict[str, Any]:
        """Create or change a deployment; placement starts at once."""
        d = self.deployments.get(model)
        if d is None:
            d = Deployment(model, replicas, min_gb, now_rfc3339())
            holder = next((n for n in self.registry.online() if has_model(n.models, model)), None)
            if holder is not None:
                d.size_bytes = size_from_show(await self.show(holder, model))
            self.deployments[model] = d
        else:
            d.replicas, d.min_memory_gb = replicas, min_gb
            for r in d.nodes.values():
                if r.state == FAILED:  # deploying again retries the failed replicas
                    r.state, r.error = PENDING, None
        log.info(
            "event=deployment_set model=%s replicas=%s min_memory_gb=%s size_bytes=%s",
            model,
            replicas,
            min_gb,
            d.size_bytes,
        )
        self.reconcile()
        self.store.save(d.row())
        return self.public_one(d)

    def drop(self, model: str) -> bool:
        d = self.deployments.pop(model, None)
        if d is None:
            return False
        self.store.delete(model)
        log.info("event=deployment_dropped model=%s", model)
        return True

    def public(self) -> list[dict[str, Any]]:
        return [self.public_one(d) for d in self.deployments.values()]

    def public_one(self, d: Deployment) -> dict[str, Any]:
        nodes = []
        for r in d.nodes.values():
            node = self.registry.nodes.get(r.agent_id)
            nodes.append(
                {
                    "agent_id": r.agent_id,
                    "machine_name": node.custom_name or node.machine_name if node else None,
                    "state": r.state,
                    "progress": r.progress,
                    "error": r.error,
                }
            )
        return {
            "model": d.model,
            "replicas": d.replicas,
            "min_memory_gb": d.min_memory_gb,
            "size_bytes": d.size_bytes,
            "created_at": d.created_at,
            "nodes": nodes,
        }

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), self.tick)
            except TimeoutError:
                pass
            self.wake.clear()
            try:
                self.reconcile()
            except Exception:
                log.exception("event=reconcile_failed")

    def reconcile(self) -> None:
        """One pass: update replica states, drop lost ones, place missing ones, start pulls."""
        self._track_offline()
        eligible = [
            n
            for n in self.registry.online()
            if n.runtime_kind == "ollama"
            and n.runtime_up
            and n.id not in self.registry.disconnected
        ]
        for d in list(self.deployments.values()):
            changed = self._refresh(d)
            changed |= self._place(d, eligible)
            for r in d.nodes.values():
                node = self.registry.nodes.get(r.agent_id)
                if r.state == PENDING and node is not None and node.status == ONLINE:
                    self._start_pull(d, r, node)
                    changed = True
            if changed:
                self.store.save(d.row())

    def _track_offline(self) -> None:
        now = self.clock()
        for node_id, node in self.registry.nodes.items():
            if node.status == OFFLINE:
                self.offline_since.setdefault(node_id, now)
            else:
                self.offline_since.pop(node_id, None)
        for node_id in list(self.offline_since):
            if node_id not in self.registry.nodes:
                del self.offline_since[node_id]

    def _refresh(self, d: Deployment) -> bool:
        changed = False
        now = self.clock()
        for agent_id, r in list(d.nodes.items()):
            node = self.registry.nodes.get(agent_id)
            gone_at = self.offline_since.get(agent_id)
            if node is None or (
                gone_at is not None and now - gone_at > self.heartbeat_timeout and r.state != FAILED
            ):
                why = "node removed" if node is None else "node offline too long"
                log.warning("event=replica_lost model=%s node=%s reason=%r", d.model, agent_id, why)
                del d.nodes[agent_id]
                changed = True
                continue
            pull = self.pulls.active.get((agent_id, d.model))
            if pull is not None:
                if r.state != PULLING:
                    r.state, r.error = PULLING, None
                    changed = True
                r.progress = pull.progress
            elif r.state in (PENDING, PULLING, READY) and has_model(node.models, d.model):
                if r.state != READY:
                    r.state, r.progress, r.error = READY, 100.0, None
                    changed = True
            elif r.state in (READY, PULLING) and node.status == ONLINE:
                r.state, r.progress = PENDING, None  # gone from the node: pull it again
                changed = True
        return changed

    def _place(self, d: Deployment, eligible: list[Node]) -> bool:
        free = [n for n in eligible if n.id not in d.nodes]
        if d.replicas == "all":
            chosen = rank_nodes(free, d.model, d.need_bytes())
        else:
            live = sum(1 for r in d.nodes.values() if r.state != FAILED)
            missing = int(d.replicas) - live
            if missing <= 0:
                return False
            chosen = rank_nodes(free, d.model, d.need_bytes())[:missing]
        for node in chosen:
            ready = has_model(node.models, d.model)
            d.nodes[node.id] = Replica(node.id, READY if ready else PENDING)
            log.info("event=replica_placed model=%s node=%s ready=%s", d.model, node.id, ready)
        return bool(chosen)

    def _start_pull(self, d: Deployment, r: Replica, node: Node) -> None:
        pull = self.pulls.pull(node, d.model)
        r.state, r.error, r.progress = PULLING, None, pull.progress

    def _pull_finished(self, node: Node, pull: NodePull) -> None:
        d = self.deployments.get(pull.model)
        r = d.nodes.get(node.id) if d is not None else None
        if d is None or r is None:
            return
        if pull.state == READY:
            r.state, r.progress, r.error = READY, 100.0, None
        else:
            r.state, r.progress, r.error = FAILED, None, pull.error
        self.store.save(d.row())
        self.wake.set()  # a failed replica is placed again elsewhere


async def show_on_node(pool: UpstreamPool, node: Node, model: str, timeout: float) -> Any:
    """The node's `/api/show` for `model`, or None."""
    body = orjson.dumps({"model": model})
    try:
        status, answer = await node_request(pool, node, "POST", "/api/show", body, timeout)
    except (ConnectionError, TimeoutError):
        return None
    if status != 200:
        return None
    try:
        return orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
