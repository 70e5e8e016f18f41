"""The node record: what the router knows about one registered inference node."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from routercore.errors import ClientError
from routercore.validate import GPU_DEVICE, SYSTEM, check_object

ONLINE = "online"
OFFLINE = "offline"
UNREACHABLE = "unreachable"
STATUSES = (ONLINE, OFFLINE, UNREACHABLE)
RUNTIME_KINDS = ("ollama", "openai")


@dataclass
class NodeMetrics:
    """Last heartbeat's load figures (percentages 0-100, or None when unknown)."""

    cpu_usage: float | None = None
    memory_usage: float | None = None
    gpu_usage: float | None = None
    gpu_memory_usage: float | None = None
    active_requests: int = 0


@dataclass
class NodeStats:
    """Request counters the router keeps per node."""

    total_requests: int = 0
    failed_requests: int = 0
    total_latency_ms: float = 0.0

    @property
    def avg_latency_ms(self) -> float | None:
        done = self.total_requests
        return round(self.total_latency_ms / done, 2) if done else None


@dataclass
class Node:
    """One node. Times are RFC 3339 UTC strings; `token_hash` never leaves the router."""

    id: str
    machine_name: str
    ip_address: str
    runtime_port: int = 11434
    custom_name: str | None = None
    runtime_version: str | None = None
    # "ollama": speaks both APIs; "openai": only /v1 (llama.cpp, vLLM), so Ollama-API requests
    # are translated; None: unknown (treated as ollama, i.e. forwarded as they are).
    runtime_kind: str | None = None
    agent_version: str | None = None
    status: str = OFFLINE
    registered_at: str = ""
    last_seen: str | None = None
    online_since: str | None = None
    gpu_devices: list[dict[str, Any]] = field(default_factory=list)
    system: dict[str, Any] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    notes: str = ""
    enabled: bool = True
    max_concurrency: int | None = None
    runtime_up: bool = True
    token_hash: str = ""
    # The router's own view of the runtime (not persisted: every start trusts until it fails).
    reachable: bool = True
    unreachable_reason: str | None = None
    # The agent's relay (issue 19): when set, the router connects to ip_address:relay_port and
    # presents `relay_token` as a bearer token instead of reaching the runtime directly.
    relay_port: int | None = None
    relay_token: str = ""
    metrics: NodeMetrics = field(default_factory=NodeMetrics)
    stats: NodeStats = field(default_factory=NodeStats)
    # Set when the stored record was damaged and repaired at load (shown, never persisted);
    # the node's next registration replaces the record and clears it.
    problem: str | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.ip_address}]" if ":" in self.ip_address else self.ip_address
        return f"http://{host}:{self.runtime_port}"

    @property
    def upstream_port(self) -> int:
        """The port the router connects to: the agent's relay, else the runtime itself."""
        return self.relay_port or self.runtime_port

    @property
    def relay_auth(self) -> tuple[bytes, bytes] | None:
        """The header that opens the relay (None when the node is not relayed)."""
        if not self.relay_port:
            return None
        return (b"authorization", b"Bearer " + self.relay_token.encode("ascii"))

    def to_public(self, health: dict[str, Any] | None = None) -> dict[str, Any]:
        """The CONTRACT shape of `GET /api/agents` (no token hash, no relay token), plus
        `health` when given: whether the node is in rotation and, if not, why and when it is
        checked again."""
        out = dataclasses.asdict(self)
        del out["token_hash"], out["relay_token"], out["reachable"], out["unreachable_reason"]
        if health is not None:
            out["health"] = health
        out["stats"] = {
            "total_requests": self.stats.total_requests,
            "failed_requests": self.stats.failed_requests,
            "avg_latency_ms": self.stats.avg_latency_ms,
        }
        return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def _object_ok(value: Any, name: str, spec: dict[str, tuple[str, int]]) -> bool:
    try:
        check_object(value, name, spec)
    except ClientError:
        return False
    return True


_TEXT_FIELDS = ("custom_name", "runtime_version", "agent_version", "registered_at", "last_seen")


def repair(node: Node) -> list[str]:
    """Make a node read from the database safe for everyone who reads it (dashboard, balancer,
    proxy, metrics): each field of the wrong type or shape is reset to its default. Returns
    the fields that were reset; the registry shows them as the node's `problem`."""
    bad: list[str] = []

    def reset(name: str, default: Any) -> None:
        setattr(node, name, default)
        bad.append(name)

    for name in ("machine_name", "ip_address", "notes", "token_hash"):
        if not isinstance(getattr(node, name), str):
            reset(name, str(getattr(node, name)) if name in ("machine_name", "ip_address") else "")
    if not _is_int(node.runtime_port) or not 0 < node.runtime_port < 65536:
        reset("runtime_port", 0)
        node.enabled = False  # nowhere to send requests
    for name in _TEXT_FIELDS:
        value = getattr(node, name)
        if value is not None and not isinstance(value, str):
            reset(name, "" if name == "registered_at" else None)
    if not isinstance(node.gpu_devices, list) or not all(
        _object_ok(d, "gpu_devices", GPU_DEVICE) for d in node.gpu_devices
    ):
        reset("gpu_devices", [])
    if not _object_ok(node.system, "system", SYSTEM):
        reset("system", {})
    for name in ("models", "tags"):
        value = getattr(node, name)
        if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
            reset(name, [])
    mc = node.max_concurrency
    if mc is not None and (not _is_int(mc) or not 0 <= mc <= 1 << 20):
        reset("max_concurrency", None)
    st = node.stats
    if not (
        _is_int(st.total_requests)
        and _is_int(st.failed_requests)
        and _is_number(st.total_latency_ms)
    ):
        reset("stats", NodeStats())
    node.enabled, node.runtime_up = bool(node.enabled), bool(node.runtime_up)
    return bad
