"""Row mapping: the columns of each table, the statements that write them, and the
conversions between rows and the router's objects (nodes, requests, samples, API keys).

Kept apart from the writer so the statements are plain constants both the enqueue side and
the writer's shedding (which recognises a statement by identity) share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from routercore.node import Node, NodeMetrics, NodeStats

NODE_COLUMNS = (
    "id", "machine_name", "ip_address", "runtime_port", "custom_name", "runtime_version",
    "agent_version", "status", "registered_at", "last_seen", "online_since", "gpu_devices",
    "system", "models", "tags", "notes", "enabled", "max_concurrency", "runtime_up",
    "token_hash", "cpu_usage", "memory_usage", "gpu_usage", "gpu_memory_usage",
    "active_requests", "total_requests", "failed_requests", "total_latency_ms",
    "relay_port", "relay_token", "runtime_kind",
)  # fmt: skip
REQUEST_COLUMNS = (
    "id", "ts", "node_id", "model", "endpoint", "method", "status_code", "outcome",
    "duration_ms", "ttfb_ms", "prompt_tokens", "completion_tokens", "stream", "client", "error",
    "affinity_hit",
)  # fmt: skip
METRIC_COLUMNS = ("cpu_usage", "memory_usage", "gpu_usage", "gpu_memory_usage", "active_requests")
SAMPLE_COLUMNS = ("node_id", "ts", "cpu", "memory", "gpu", "gpu_memory", "active_requests")
API_KEY_COLUMNS = ("id", "name", "key_hash", "prefix", "created_at", "last_used_at", "revoked_at")
OUTCOMES = ("ok", "error", "cancelled", "rejected")


def _upsert_sql(table: str, cols: Sequence[str], key: str) -> str:
    """Column names are our constants, never user input; values stay bound."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != key)
    marks = ", ".join("?" * len(cols))
    return (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks}) "
        f"ON CONFLICT({key}) DO UPDATE SET {updates}"
    )


_SQL_NODE = _upsert_sql("nodes", NODE_COLUMNS, "id")
_SQL_REQUEST = _upsert_sql("requests", REQUEST_COLUMNS, "id")
# The proxy's rows carry ids generated moments ago (`accounting.request_id`), so they are
# plainly inserted: the upsert's conflict clause cost ~0.5 µs per row in the writer. A
# duplicate id would fail its batch's INSERT and be dropped alone by the writer's isolation.
_SQL_REQUEST_INSERT = (
    f"INSERT INTO requests ({', '.join(REQUEST_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})"
)
_SQL_API_KEY = _upsert_sql("api_keys", API_KEY_COLUMNS, "id")
_SQL_META = _upsert_sql("meta", ("key", "value"), "key")
_SQL_SAMPLE = (
    f"INSERT INTO health_samples ({', '.join(SAMPLE_COLUMNS)}) VALUES ({', '.join('?' * 7)})"
)
_SQL_DELETE_SAMPLES = "DELETE FROM health_samples WHERE node_id = ?"
_SQL_DELETE_NODE = "DELETE FROM nodes WHERE id = ?"


def _node_row(node: Node) -> tuple[Any, ...]:
    m, s = node.metrics, node.stats
    return (
        node.id, node.machine_name, node.ip_address, node.runtime_port, node.custom_name,
        node.runtime_version, node.agent_version, node.status, node.registered_at,
        node.last_seen, node.online_since, orjson.dumps(node.gpu_devices).decode(),
        orjson.dumps(node.system).decode(), orjson.dumps(node.models).decode(),
        orjson.dumps(node.tags).decode(), node.notes, int(node.enabled), node.max_concurrency,
        int(node.runtime_up), node.token_hash, m.cpu_usage, m.memory_usage, m.gpu_usage,
        m.gpu_memory_usage, m.active_requests, s.total_requests, s.failed_requests,
        s.total_latency_ms, node.relay_port, node.relay_token, node.runtime_kind,
    )  # fmt: skip


_JSON_DEFAULTS: dict[str, Any] = {"gpu_devices": [], "system": {}, "models": [], "tags": []}


def _row_node(row: Sequence[Any]) -> Node:
    """A node from its row; a column that is not valid JSON (a damaged or hand-edited file)
    loads as its default and is named in `problem` instead of failing the router's start."""
    r = dict(zip(NODE_COLUMNS, row, strict=True))
    unreadable = []
    for col, default in _JSON_DEFAULTS.items():
        try:
            r[col] = orjson.loads(r[col])
        except (orjson.JSONDecodeError, TypeError):
            r[col] = type(default)()
            unreadable.append(col)
    metrics = NodeMetrics(*(r.pop(c) for c in METRIC_COLUMNS))
    stats = NodeStats(
        *(r.pop(c) for c in ("total_requests", "failed_requests", "total_latency_ms"))
    )
    r["enabled"], r["runtime_up"] = bool(r["enabled"]), bool(r["runtime_up"])
    node = Node(**r, metrics=metrics, stats=stats)
    if unreadable:
        node.problem = "unreadable stored fields: " + ", ".join(unreadable)
    return node


def _request_dict(row: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(REQUEST_COLUMNS, row, strict=True))
    out["stream"] = None if out["stream"] is None else bool(out["stream"])
    out["affinity_hit"] = None if out["affinity_hit"] is None else bool(out["affinity_hit"])
    return out
