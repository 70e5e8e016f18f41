"""The schema: its migration steps, and how every connection of ours is opened.

Apart from the rows and the writer because an existing database depends on this list alone:
steps are only ever appended, never edited or reordered, and `migrate` runs the missing ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import apsw

from routercore.deployment_store import SCHEMA as DEPLOYMENTS_SCHEMA

# Each step runs once, in order; a database at user_version N gets steps N+1.. only.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY, machine_name TEXT NOT NULL, ip_address TEXT NOT NULL,
        runtime_port INTEGER NOT NULL, custom_name TEXT, runtime_version TEXT, agent_version TEXT,
        status TEXT NOT NULL, registered_at TEXT NOT NULL, last_seen TEXT, online_since TEXT,
        gpu_devices TEXT NOT NULL DEFAULT '[]', system TEXT NOT NULL DEFAULT '{}',
        models TEXT NOT NULL DEFAULT '[]', tags TEXT NOT NULL DEFAULT '[]',
        notes TEXT NOT NULL DEFAULT '', enabled INTEGER NOT NULL DEFAULT 1,
        max_concurrency INTEGER, runtime_up INTEGER NOT NULL DEFAULT 1,
        token_hash TEXT NOT NULL DEFAULT '',
        cpu_usage REAL, memory_usage REAL, gpu_usage REAL, gpu_memory_usage REAL,
        active_requests INTEGER NOT NULL DEFAULT 0, total_requests INTEGER NOT NULL DEFAULT 0,
        failed_requests INTEGER NOT NULL DEFAULT 0, total_latency_ms REAL NOT NULL DEFAULT 0
    );
    CREATE TABLE health_samples (
        seq INTEGER PRIMARY KEY, node_id TEXT NOT NULL, ts TEXT NOT NULL,
        cpu REAL, memory REAL, gpu REAL, gpu_memory REAL,
        active_requests INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX health_samples_node_ts ON health_samples(node_id, ts);
    CREATE TABLE requests (
        seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, ts TEXT NOT NULL,
        node_id TEXT, model TEXT, endpoint TEXT, method TEXT, status_code INTEGER, outcome TEXT,
        duration_ms REAL, ttfb_ms REAL, prompt_tokens INTEGER, completion_tokens INTEGER,
        stream INTEGER, client TEXT, error TEXT
    );
    CREATE INDEX requests_ts ON requests(ts);
    CREATE INDEX requests_node_ts ON requests(node_id, ts);
    CREATE INDEX requests_model_ts ON requests(model, ts);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL, last_used_at TEXT,
        revoked_at TEXT
    );
    """,
    # The agent's relay (issue 19); the token is kept as given: the router presents it.
    """
    ALTER TABLE nodes ADD COLUMN relay_port INTEGER;
    ALTER TABLE nodes ADD COLUMN relay_token TEXT NOT NULL DEFAULT '';
    """,
    "ALTER TABLE nodes ADD COLUMN runtime_kind TEXT;",
    DEPLOYMENTS_SCHEMA,
    # Whether the balancer picked the node for holding the prompt's prefix (NULL: no prefix).
    "ALTER TABLE requests ADD COLUMN affinity_hit INTEGER;",
)


def connect(path: str, busy_timeout_ms: int = 5000) -> apsw.Connection:
    """Open a connection with the pragmas every connection of ours needs."""
    conn = apsw.Connection(path)
    conn.set_busy_timeout(busy_timeout_ms)
    if path != ":memory:":
        conn.pragma("journal_mode", "wal")
    conn.pragma("synchronous", "normal")
    return conn


@contextlib.contextmanager
def _transaction(conn: apsw.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE takes the write lock up front, so the busy timeout covers the wait."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(apsw.Error):
                conn.execute("ROLLBACK")
        raise


def migrate(conn: apsw.Connection, steps: Sequence[str] = MIGRATIONS) -> int:
    """Apply the steps newer than `user_version` in one transaction; return the new version."""
    with _transaction(conn):
        version = int(conn.pragma("user_version"))
        if version > len(steps):
            raise RuntimeError(f"database schema v{version} is newer than this code")
        for number, sql in enumerate(steps[version:], start=version + 1):
            conn.execute(sql)
            conn.pragma("user_version", number)
    return len(steps)
