"""The node record: what the router knows about one registered inference node."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

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
    runtime_kind: str | None = None  # "ollama" (both APIs) or "openai" (only /v1); None: unknown
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
    metrics: NodeMetrics = field(default_factory=NodeMetrics)
    stats: NodeStats = field(default_factory=NodeStats)

    @property
    def base_url(self) -> str:
        host = f"[{self.ip_address}]" if ":" in self.ip_address else self.ip_address
        return f"http://{host}:{self.runtime_port}"

    def to_public(self, health: dict[str, Any] | None = None) -> dict[str, Any]:
        """The CONTRACT shape of `GET /api/agents` (no token hash), plus `health` when given:
        whether the node is in rotation and, if not, why and when it is checked again."""
        out = dataclasses.asdict(self)
        del out["token_hash"], out["reachable"], out["unreachable_reason"]
        if health is not None:
            out["health"] = health
        out["stats"] = {
            "total_requests": self.stats.total_requests,
            "failed_requests": self.stats.failed_requests,
            "avg_latency_ms": self.stats.avg_latency_ms,
        }
        return out
