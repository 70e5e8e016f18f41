"""History records for the store's tests: one request as the API records it, a count read
straight from the file (another connection, as an operator would), and a lock held on it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw

from routercore.store import REQUEST_COLUMNS, Store

FAST = {"busy_timeout_ms": 20, "retry_min_s": 0.01, "retry_max_s": 0.05}


def count(path: Path, table: str) -> int:
    conn = apsw.Connection(str(path))
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
    finally:
        conn.close()


def req(i: int, **kw: Any) -> dict[str, Any]:
    rec = {
        "id": f"00000000-0000-4000-8000-{i:012d}",
        "ts": f"2026-01-01T00:00:{i // 100:02d}.{i % 100:02d}0000Z",
        "node_id": "n1",
        "model": "llama3",
        "endpoint": "/v1/chat/completions",
        "method": "POST",
        "status_code": 200,
        "outcome": "ok",
        "duration_ms": 12.5,
        "ttfb_ms": 3.25,
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "stream": True,
        "client": "127.0.0.1",
        "error": None,
        "affinity_hit": None,
    }
    rec.update(kw)
    return rec


def request_row(i: int, **kw: Any) -> tuple[Any, ...]:
    """`req(i)` as the proxy's accounting hands it over: a tuple in REQUEST_COLUMNS order,
    the flags as 0/1."""
    rec = req(i, **kw)
    for flag in ("stream", "affinity_hit"):
        if rec[flag] is not None:
            rec[flag] = int(bool(rec[flag]))
    return tuple(rec[c] for c in REQUEST_COLUMNS)


def add_samples(store: Store, count: int) -> None:
    """`count` health samples of node n1, a second apart, `active_requests` numbering them."""
    for i in range(count):
        store.add_health_sample("n1", f"2026-01-01T00:00:{i:02d}Z", None, None, None, None, i)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Another connection holds the database's write lock: the writer fails busy and retries."""
    locker = apsw.Connection(str(path))
    locker.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        locker.execute("COMMIT")
        locker.close()
