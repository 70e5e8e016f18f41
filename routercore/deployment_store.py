"""The deployments table: each deployment's desired state and its replicas, one row per model.

Kept apart from routercore.store (which runs the schema steps and the writer thread): this
module owns the table's shape and its rows; the store only moves them.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

# Schema step 3 (routercore.store.MIGRATIONS runs it once).
SCHEMA = """
CREATE TABLE deployments (
    model TEXT PRIMARY KEY, replicas TEXT NOT NULL, min_memory_gb REAL, size_bytes INTEGER,
    created_at TEXT NOT NULL, nodes TEXT NOT NULL DEFAULT '{}'
);
"""
_COLUMNS = ("model", "replicas", "min_memory_gb", "size_bytes", "created_at", "nodes")
_UPSERT = (
    f"INSERT INTO deployments ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT(model) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "model")
)
_DELETE = "DELETE FROM deployments WHERE model = ?"
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM deployments ORDER BY created_at, model"


class SQLStore(Protocol):
    """The part of routercore.store.Store used here."""

    def enqueue(self, sql: str, params: tuple[Any, ...]) -> None: ...
    def read_all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...


class DeploymentStore:
    """Rows as plain dicts: {model, replicas (int or "all"), min_memory_gb, size_bytes,
    created_at, nodes: {agent_id: {state, error}}}."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store

    def save(self, row: dict[str, Any]) -> None:
        self.store.enqueue(
            _UPSERT,
            (
                row["model"],
                str(row["replicas"]),
                row.get("min_memory_gb"),
                row.get("size_bytes"),
                row["created_at"],
                orjson.dumps(row.get("nodes") or {}).decode(),
            ),
        )

    def delete(self, model: str) -> None:
        self.store.enqueue(_DELETE, (model,))

    def load(self) -> list[dict[str, Any]]:
        out = []
        for values in self.store.read_all(_SELECT):
            row = dict(zip(_COLUMNS, values, strict=True))
            replicas = row["replicas"]
            row["replicas"] = replicas if replicas == "all" else int(replicas)
            row["nodes"] = orjson.loads(row["nodes"])
            out.append(row)
        return out
