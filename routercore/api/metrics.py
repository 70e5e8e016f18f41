"""`GET /metrics`: the live stats, node table and balancer in Prometheus text format 0.0.4.

Rendered from in-memory state only (no store reads), so a scrape never waits on SQLite.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from routercore import __version__
from routercore.api.host import MetricsHost
from routercore.balancer import IMPLEMENTATION
from routercore.http.messages import Request, Response
from routercore.node import STATUSES
from routercore.stats import BUCKETS, METRIC_LABEL_MAX, Histogram

if TYPE_CHECKING:
    from routercore.app import App

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "llm_router_"

# name, type, help: the list docs/dashboard.md documents.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("build_info", "gauge", "Router version and balancer implementation (always 1)."),
    ("start_time_seconds", "gauge", "Unix time the router started."),
    ("requests_total", "counter", "Proxied requests by endpoint, model, node and HTTP status."),
    (
        "request_outcomes_total",
        "counter",
        "Proxied requests by outcome (ok, error, cancelled, rejected).",
    ),
    ("request_duration_seconds", "histogram", "Proxied request duration by endpoint and model."),
    (
        "time_to_first_byte_seconds",
        "histogram",
        "Time to the first body byte from the node, by endpoint and model.",
    ),
    (
        "tokens_total",
        "counter",
        "Tokens counted from final chunks, by model and kind (prompt, completion).",
    ),
    (
        "unknown_model_requests_total",
        "counter",
        'Proxied requests naming a model no node or provider lists (labelled model="other").',
    ),
    ("requests_in_flight", "gauge", "Proxied requests being served now."),
    ("queue_length", "gauge", "Requests waiting for a free node."),
    ("nodes", "gauge", "Registered nodes by status."),
    ("node_status", "gauge", "1 for the node's current status, 0 for the others."),
    ("node_enabled", "gauge", "1 when the node is enabled by the admin."),
    ("node_in_flight", "gauge", "Requests the router has in flight on the node."),
    ("node_cpu_usage_percent", "gauge", "Node CPU usage from its last heartbeat."),
    ("node_memory_usage_percent", "gauge", "Node memory usage from its last heartbeat."),
    ("node_gpu_usage_percent", "gauge", "Node GPU usage from its last heartbeat (when known)."),
    ("node_requests_total", "counter", "Requests the node served (since registration load)."),
    ("node_failed_requests_total", "counter", "Requests that failed on the node."),
    ("balancer_picks_total", "counter", "Times the balancer chose each node."),
    (
        "affinity_picks_total",
        "counter",
        "Picks made for a prompt with prefix boundaries, by node and result (hit: the node "
        "held the prompt's longest known prefix).",
    ),
    ("affinity_hit_rate", "gauge", "Share of prefix picks that were affinity hits, overall."),
    ("node_affinity_hit_rate", "gauge", "Share of the node's prefix picks that were hits."),
    ("store_backlog", "gauge", "Store writes queued but not yet committed."),
    ("store_dropped_total", "counter", "Store writes dropped (backlog cap or invalid)."),
)


def escape_label(value: str) -> str:
    """Label values escape backslash, double quote and newline (text format 0.0.4)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def labels(pairs: Mapping[str, str]) -> str:
    """Values longer than METRIC_LABEL_MAX characters are cut: a scrape stays small whatever
    a node or a client named."""
    if not pairs:
        return ""
    return (
        "{"
        + ",".join(f'{k}="{escape_label(v[:METRIC_LABEL_MAX])}"' for k, v in pairs.items())
        + "}"
    )


class Exposition:
    """Collects families in order; each gets its HELP and TYPE line once."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.meta = {name: (kind, text) for name, kind, text in METRICS}

    def family(self, name: str) -> None:
        kind, text = self.meta[name]
        self.lines.append(f"# HELP {PREFIX}{name} {text}")
        self.lines.append(f"# TYPE {PREFIX}{name} {kind}")

    def sample(self, name: str, value: float, pairs: Mapping[str, str] | None = None) -> None:
        self.lines.append(f"{PREFIX}{name}{labels(pairs or {})} {format_value(value)}")

    def histogram(self, name: str, series: Iterable[tuple[Mapping[str, str], Histogram]]) -> None:
        self.family(name)
        for pairs, hist in series:
            cumulative = 0
            for bound, count in zip((*BUCKETS, math.inf), hist.counts, strict=True):
                cumulative += count
                le = "+Inf" if math.isinf(bound) else repr(float(bound))
                self.sample(f"{name}_bucket", cumulative, {**pairs, "le": le})
            self.sample(f"{name}_sum", hist.sum, pairs)
            self.sample(f"{name}_count", hist.count, pairs)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def affinity_totals(per_node: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
    """(hits, prefix picks) over every node the balancer knows."""
    return sum(h for h, _ in per_node.values()), sum(p for _, p in per_node.values())


def render(svc: MetricsHost) -> str:
    """The whole exposition for one scrape."""
    stats, registry, out = svc.stats, svc.registry, Exposition()
    out.family("build_info")
    out.sample("build_info", 1, {"version": __version__, "balancer": IMPLEMENTATION})
    out.family("start_time_seconds")
    out.sample("start_time_seconds", stats.started)

    out.family("requests_total")
    for (endpoint, model, node, status), count in sorted(stats.requests.items()):
        out.sample(
            "requests_total",
            count,
            {"endpoint": endpoint, "model": model, "node": node, "status": status},
        )
    out.family("request_outcomes_total")
    for outcome in ("ok", "error", "cancelled", "rejected"):
        out.sample("request_outcomes_total", stats.outcomes.get(outcome, 0), {"outcome": outcome})
    out.histogram(
        "request_duration_seconds",
        (({"endpoint": e, "model": m}, h) for (e, m), h in sorted(stats.latency.items())),
    )
    out.histogram(
        "time_to_first_byte_seconds",
        (({"endpoint": e, "model": m}, h) for (e, m), h in sorted(stats.ttfb.items())),
    )
    out.family("tokens_total")
    for (model, kind), count in sorted(stats.tokens.items()):
        out.sample("tokens_total", count, {"model": model, "kind": kind})
    out.family("unknown_model_requests_total")
    out.sample("unknown_model_requests_total", stats.unknown_model_requests)
    out.family("requests_in_flight")
    out.sample("requests_in_flight", stats.in_flight)
    out.family("queue_length")
    out.sample("queue_length", len(svc.proxy.waiters))

    nodes = sorted(registry.nodes.values(), key=lambda n: n.id)
    out.family("nodes")
    for status in STATUSES:
        out.sample("nodes", sum(1 for n in nodes if n.status == status), {"status": status})
    per_node = (
        ("node_status", None),
        ("node_enabled", lambda n: int(n.enabled)),
        ("node_in_flight", lambda n: svc.balancer.in_flight(n.id)),
        ("node_cpu_usage_percent", lambda n: n.metrics.cpu_usage),
        ("node_memory_usage_percent", lambda n: n.metrics.memory_usage),
        ("node_gpu_usage_percent", lambda n: n.metrics.gpu_usage),
        ("node_requests_total", lambda n: n.stats.total_requests),
        ("node_failed_requests_total", lambda n: n.stats.failed_requests),
    )
    for name, value_of in per_node:
        out.family(name)
        for n in nodes:
            ident = {"node": n.id, "name": n.custom_name or n.machine_name}
            if value_of is None:
                for status in STATUSES:
                    out.sample(name, int(n.status == status), {**ident, "status": status})
                continue
            value = value_of(n)
            if value is not None:
                out.sample(name, value, ident)
    out.family("balancer_picks_total")
    for node_id, picks in sorted(svc.balancer.picks().items()):
        out.sample("balancer_picks_total", picks, {"node": node_id})
    affinity = svc.balancer.affinity_stats()
    out.family("affinity_picks_total")
    for node_id, (hits, picks) in sorted(affinity.items()):
        out.sample("affinity_picks_total", hits, {"node": node_id, "result": "hit"})
        out.sample("affinity_picks_total", picks - hits, {"node": node_id, "result": "miss"})
    hits, picks = affinity_totals(affinity)
    out.family("affinity_hit_rate")
    out.sample("affinity_hit_rate", hits / picks if picks else 0.0)
    out.family("node_affinity_hit_rate")
    for node_id, (hits, picks) in sorted(affinity.items()):
        if picks:
            out.sample("node_affinity_hit_rate", hits / picks, {"node": node_id})
    out.family("store_backlog")
    out.sample("store_backlog", svc.store.backlog)
    out.family("store_dropped_total")
    out.sample("store_dropped_total", svc.store.dropped)
    return out.text()


class MetricsAPI:
    def __init__(self, svc: MetricsHost) -> None:
        self.svc = svc

    def install(self, app: App) -> None:
        app.add("GET", "/metrics", self.metrics, auth="read")

    async def metrics(self, request: Request) -> Response:
        return Response(
            200, render(self.svc).encode(), [("cache-control", "no-store")], CONTENT_TYPE
        )
