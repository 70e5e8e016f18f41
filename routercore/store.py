"""Persistence through APSW: schema migrations, one batching writer thread, off-loop reads.

The event loop only ever enqueues: every write method turns its arguments into bound SQL
parameters at once (a copy) and puts them on a `queue.SimpleQueue`. A single writer thread
commits them in batches and survives busy/locked/full/IO errors by keeping the batch and
retrying with backoff. A caller that must not answer before its change is on disk (a
registration) awaits `committed()`, a marker queued behind it. Dashboard reads run on a
dedicated reader thread with its own connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import apsw
import orjson

from routercore.deployment_store import SCHEMA as DEPLOYMENTS_SCHEMA
from routercore.node import Node, NodeMetrics, NodeStats

log = logging.getLogger("routercore.store")

T = TypeVar("T")
Op = tuple[str, tuple[Any, ...]]

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


# The writer thread often shares a core with the event loop (one core per router process in
# the benchmark, small machines in life). A waking event loop would wait behind a long batch for
# the rest of the writer's time slice (~1 ms), so the writer offers the CPU every few rows.
_YIELD_EVERY = 32
_yield_cpu: Callable[[], None] = getattr(os, "sched_yield", lambda: None)

_SQL_NODE = _upsert_sql("nodes", NODE_COLUMNS, "id")
_SQL_REQUEST = _upsert_sql("requests", REQUEST_COLUMNS, "id")
_SQL_API_KEY = _upsert_sql("api_keys", API_KEY_COLUMNS, "id")
_SQL_META = _upsert_sql("meta", ("key", "value"), "key")
_SQL_SAMPLE = (
    f"INSERT INTO health_samples ({', '.join(SAMPLE_COLUMNS)}) VALUES ({', '.join('?' * 7)})"
)
_SQL_DELETE_SAMPLES = "DELETE FROM health_samples WHERE node_id = ?"
_SQL_DELETE_NODE = "DELETE FROM nodes WHERE id = ?"
# Keep the newest N rows: delete the (N+1)-th newest and everything older, by insertion order.
# Two scalar subqueries: SQLite answers a lone min() or max() of the key from the B-tree, but
# "SELECT min(seq), max(seq)" scans the whole table (ms at 100,000 rows, on every trim).
_SQL_SEQ_RANGE = {
    t: f"SELECT (SELECT min(seq) FROM {t}), (SELECT max(seq) FROM {t})"
    for t in ("requests", "health_samples")
}
_SQL_TRIM = {t: f"DELETE FROM {t} WHERE seq <= ?" for t in ("requests", "health_samples")}
_TRIM_CHUNK = 512

# Errors that say "the database cannot take this write right now", not "this write is bad".
_TRANSIENT = (
    apsw.BusyError, apsw.LockedError, apsw.FullError, apsw.IOError, apsw.CantOpenError,
    apsw.ReadOnlyError, apsw.ProtocolError, apsw.NoMemError,
)  # fmt: skip
_STOP = object()


class _LoopMarker:
    """Queued behind writes like the flush Event: resolves an asyncio future once they are
    committed (the writer calls `set` from its thread)."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        self.loop = loop
        self.future = future

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # a waiter that timed out has cancelled it
        future.set_result(None)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _err(e: BaseException) -> str:
    code = getattr(e, "extendedresult", None)
    return f"error={type(e).__name__} code={code} detail={str(e)[:200]!r}"


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


class Store:
    """The router's SQLite database; see the module docstring for the threading model."""

    def __init__(
        self,
        path: str,
        *,
        busy_timeout_ms: int = 5000,
        batch_max: int = 500,
        history_max_rows: int = 100_000,
        samples_max_rows: int = 200_000,
        backlog_max: int = 100_000,
        trim_every: int = 20,
        retry_min_s: float = 0.05,
        retry_max_s: float = 5.0,
        on_connect: Callable[[apsw.Connection], None] | None = None,
    ) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.batch_max = max(1, batch_max)
        self.history_max_rows = history_max_rows
        self.samples_max_rows = samples_max_rows
        self.backlog_max = backlog_max
        self.trim_every = max(1, trim_every)  # batches between retention passes
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self._on_connect = on_connect
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending: collections.deque[Any] = collections.deque()  # writer thread only
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._reader_pool: ThreadPoolExecutor | None = None
        self._reader_conn: apsw.Connection | None = None  # reader thread only
        # ":memory:" is private to one connection, so writer and reader share it under a lock.
        self._shared: apsw.Connection | None = None
        self._shared_lock = threading.Lock()
        self._closed = False
        self.written = 0
        self.dropped = 0
        self.write_errors = 0
        self.batches = 0
        self.trimmed = 0

    # ---- life cycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Create the file and schema, then start the writer; raises if the DB is unusable."""
        if self.path == ":memory:":
            self._shared = self._connect()
            migrate(self._shared, MIGRATIONS)
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        ready: Future[None] = Future()
        self._writer = threading.Thread(
            target=self._writer_main, args=(ready,), name="store-writer", daemon=True
        )
        self._writer.start()
        ready.result()  # re-raises a failed connect or migration
        self._reader_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-reader")
        log.info("store opened path=%s schema=%d", self.path, len(MIGRATIONS))

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until everything enqueued so far is committed; False on timeout."""
        if self._writer is None or not self._writer.is_alive():
            return False
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    async def committed(self, timeout: float) -> bool:
        """Wait (without blocking the loop) until everything enqueued so far is committed;
        False on timeout or without a running writer.

        For the rare writes an answer promises are done (a registration, an API key): the
        answer must not get ahead of the commit, or a crash right after it loses the change.
        """
        if self._writer is None or not self._writer.is_alive():
            return False
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put(_LoopMarker(loop, future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Flush (best effort within `timeout`), stop the writer, close every connection."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        if self._writer is not None:
            if not self.flush(timeout):
                log.warning("store close flush timed out backlog=%d", self.backlog)
            self._stop.set()
            self._queue.put(_STOP)
            self._writer.join(max(0.1, deadline - time.monotonic()))
            if self._writer.is_alive():
                log.warning("store writer did not stop timeout=%.1f", timeout)
        if self._reader_pool is not None:
            self._reader_pool.submit(self._close_reader).result()
            self._reader_pool.shutdown(wait=True)
        if self._shared is not None and not (self._writer and self._writer.is_alive()):
            self._shared.close()
        log.info(
            "store closed path=%s written=%d dropped=%d", self.path, self.written, self.dropped
        )

    def _connect(self) -> apsw.Connection:
        conn = connect(self.path, self.busy_timeout_ms)
        if self._on_connect is not None:
            self._on_connect(conn)
        return conn

    def _guard(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext() if self._shared is None else self._shared_lock

    # ---- enqueue (non-blocking, safe on the event loop) -------------------------------------

    def save_node(self, node: Node) -> None:
        self._queue.put((_SQL_NODE, _node_row(node)))

    def delete_node(self, node_id: str) -> None:
        self._queue.put((_SQL_DELETE_SAMPLES, (node_id,)))
        self._queue.put((_SQL_DELETE_NODE, (node_id,)))

    def add_health_sample(
        self,
        node_id: str,
        ts: str,
        cpu: float | None,
        memory: float | None,
        gpu: float | None,
        gpu_memory: float | None,
        active_requests: int,
    ) -> None:
        self._queue.put((_SQL_SAMPLE, (node_id, ts, cpu, memory, gpu, gpu_memory, active_requests)))

    def add_request(self, record: dict[str, Any]) -> None:
        """Record one finished request; a missing id or ts is generated, unknown keys ignored."""
        row = [record.get(c) for c in REQUEST_COLUMNS]
        row[0] = row[0] or str(uuid.uuid4())
        row[1] = row[1] or _now()
        for flag in (12, 15):  # stream, affinity_hit
            if row[flag] is not None:
                row[flag] = int(bool(row[flag]))
        self._queue.put((_SQL_REQUEST, tuple(row)))

    def add_request_row(self, row: tuple[Any, ...]) -> None:
        """The proxy's hot path: one complete row in REQUEST_COLUMNS order (stream as 0/1)."""
        self._queue.put((_SQL_REQUEST, row))

    def set_meta(self, key: str, value: str) -> None:
        self._queue.put((_SQL_META, (key, value)))

    def save_api_key(self, record: dict[str, Any]) -> None:
        """Upsert an API key row (keys = API_KEY_COLUMNS); never pass the plain key."""
        self._queue.put((_SQL_API_KEY, tuple(record.get(c) for c in API_KEY_COLUMNS)))

    def enqueue(self, sql: str, params: tuple[Any, ...]) -> None:
        """A write for a table another module owns (routercore.deployment_store)."""
        self._queue.put((sql, params))

    # ---- sync reads (start-up, tests) ---------------------------------------------------------

    def read_all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._read(lambda c: [tuple(r) for r in c.execute(sql, params)]).result()

    def load_nodes(self) -> list[Node]:
        sql = f"SELECT {', '.join(NODE_COLUMNS)} FROM nodes ORDER BY registered_at, id"
        return self._read(lambda c: [_row_node(r) for r in c.execute(sql)]).result()

    def get_meta(self, key: str) -> str | None:
        def run(c: apsw.Connection) -> str | None:
            row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])

        return self._read(run).result()

    def load_api_keys(self) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(API_KEY_COLUMNS)} FROM api_keys ORDER BY created_at, id"
        return self._read(
            lambda c: [dict(zip(API_KEY_COLUMNS, r, strict=True)) for r in c.execute(sql)]
        ).result()

    def integrity_check(self) -> str:
        def run(c: apsw.Connection) -> str:
            return "; ".join(str(r[0]) for r in c.execute("PRAGMA integrity_check"))

        return self._read(run).result()

    # ---- async reads (dashboard/API; never on the loop thread) --------------------------------

    async def query_requests(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        node_id: str | None = None,
        model: str | None = None,
        outcome: str | None = None,
        status_code: int | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Newest first, plus the total count of rows matching the filters."""
        clauses: list[str] = []
        params: list[Any] = []
        filters = (("node_id", node_id), ("model", model), ("outcome", outcome))
        for col, val in (*filters, ("status_code", status_code)):
            if val is not None:
                clauses.append(f"{col} = ?")
                params.append(val)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT {', '.join(REQUEST_COLUMNS)} FROM requests{where} "
            "ORDER BY ts DESC, seq DESC LIMIT ? OFFSET ?"
        )

        def run(c: apsw.Connection) -> tuple[list[dict[str, Any]], int]:
            c.execute("BEGIN")  # one snapshot for the page and its count
            try:
                page = [
                    _request_dict(r)
                    for r in c.execute(sql, (*params, max(0, limit), max(0, offset)))
                ]
                total = c.execute(f"SELECT count(*) FROM requests{where}", params).fetchone()
            finally:
                c.execute("COMMIT")
            return page, int(total[0]) if total else 0

        return await asyncio.wrap_future(self._read(run))

    async def node_samples(
        self, node_id: str, since: str | None = None, limit: int = 720
    ) -> list[dict[str, Any]]:
        """The newest `limit` samples of a node (at or after `since`), oldest first for charts."""
        sql = (
            f"SELECT {', '.join(SAMPLE_COLUMNS)} FROM health_samples "
            "WHERE node_id = ? AND ts >= ? ORDER BY ts DESC, seq DESC LIMIT ?"
        )
        args = (node_id, since or "", max(0, limit))

        def run(c: apsw.Connection) -> list[dict[str, Any]]:
            rows = [dict(zip(SAMPLE_COLUMNS, r, strict=True)) for r in c.execute(sql, args)]
            rows.reverse()
            return rows

        return await asyncio.wrap_future(self._read(run))

    async def request_by_id(self, request_id: str) -> dict[str, Any] | None:
        sql = f"SELECT {', '.join(REQUEST_COLUMNS)} FROM requests WHERE id = ?"

        def run(c: apsw.Connection) -> dict[str, Any] | None:
            row = c.execute(sql, (request_id,)).fetchone()
            return None if row is None else _request_dict(row)

        return await asyncio.wrap_future(self._read(run))

    def _read(self, fn: Callable[[apsw.Connection], T]) -> Future[T]:
        if self._reader_pool is None:
            raise RuntimeError("store is not open")

        def run() -> T:
            if self._shared is not None:
                with self._shared_lock:
                    return fn(self._shared)
            if self._reader_conn is None:  # created in, and only used by, the reader thread
                self._reader_conn = self._connect()
                self._reader_conn.pragma("query_only", 1)
            return fn(self._reader_conn)

        return self._reader_pool.submit(run)

    def _close_reader(self) -> None:
        if self._reader_conn is not None:
            self._reader_conn.close()
            self._reader_conn = None

    # ---- counters -----------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Items not yet committed (approximate: read without locks from any thread)."""
        return self._queue.qsize() + len(self._pending)

    @property
    def stats(self) -> dict[str, int]:
        names = ("written", "dropped", "write_errors", "backlog", "batches", "trimmed")
        return {name: getattr(self, name) for name in names}

    # ---- writer thread ------------------------------------------------------------------------

    def _writer_main(self, ready: Future[None]) -> None:
        try:
            if self._shared is not None:
                conn = self._shared
            else:
                conn = self._connect()
                migrate(conn, MIGRATIONS)
        except BaseException as e:
            ready.set_exception(e)
            return
        ready.set_result(None)
        try:
            self._write_loop(conn)
        finally:
            if self._pending or not self._queue.empty():
                log.error("store writer stopped with unwritten backlog=%d", self.backlog)
            if self._shared is None:
                conn.close()

    def _write_loop(self, conn: apsw.Connection) -> None:
        delay = 0.0
        failures = 0
        isolate = False  # after a non-transient error: write item by item, drop the bad ones
        while True:
            batch: list[Op] = []
            try:
                if not self._pending:
                    self._pending.append(self._queue.get())
                self._drain()
                self._shed()
                while self._pending and not isinstance(self._pending[0], tuple):
                    marker = self._pending.popleft()
                    if marker is _STOP:
                        return
                    marker.set()
                for item in self._pending:
                    if not isinstance(item, tuple) or len(batch) >= self.batch_max:
                        break
                    batch.append(item)
                if not batch:
                    continue
                with self._guard():
                    bad = self._commit(conn, batch, isolate)
            except Exception as e:
                self.write_errors += 1
                if not isinstance(e, _TRANSIENT) and not isolate:
                    log.warning("store batch rejected, retrying item by item %s", _err(e))
                    isolate = True
                    continue
                failures += 1
                delay = min(max(delay * 2, self.retry_min_s), self.retry_max_s)
                log.warning(
                    "store write failed %s batch=%d backlog=%d failures=%d retry_in=%.2fs",
                    _err(e), len(batch), self.backlog, failures, delay,
                )  # fmt: skip
                if self._stop.is_set():
                    return
                self._stop.wait(delay)
                continue
            for _ in batch:
                self._pending.popleft()
            self.written += len(batch) - bad
            self.dropped += bad
            self.batches += 1
            if failures:
                log.info("store write recovered failures=%d backlog=%d", failures, self.backlog)
            delay, failures, isolate = 0.0, 0, False
            if self.batches % self.trim_every == 0:
                self._trim(conn)

    def _drain(self) -> None:
        """Move what is queued into the pending deque (bounded per pass)."""
        for _ in range(self.backlog_max + self.batch_max):
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def _shed(self) -> None:
        """Over the backlog cap: drop the oldest samples first, request history last."""
        if len(self._pending) <= self.backlog_max:
            return
        excess = sum(isinstance(i, tuple) for i in self._pending) - self.backlog_max  # not markers
        if excess <= 0:
            return
        counts = {}
        for name, sql in (("samples", _SQL_SAMPLE), ("requests", _SQL_REQUEST)):
            n = 0
            kept: collections.deque[Any] = collections.deque()
            for item in self._pending:
                if n < excess and isinstance(item, tuple) and item[0] is sql:
                    n += 1
                else:
                    kept.append(item)
            self._pending = kept
            counts[name] = n
            excess -= n
            if excess <= 0:
                break
        self.dropped += sum(counts.values())
        log.warning(
            "store backlog over cap, dropped oldest backlog_max=%d dropped_samples=%d "
            "dropped_requests=%d",
            self.backlog_max, counts.get("samples", 0), counts.get("requests", 0),
        )  # fmt: skip

    def _trim_table(self, conn: apsw.Connection, table: str, keep: int) -> int:
        """Delete the rows older than the newest `keep` sequence numbers.

        In transactions of a few hundred rows with the CPU offered in between: one DELETE of
        thousands of rows held the event loop's core for milliseconds. Sequence numbers only
        have gaps where a node's samples were deleted, so `max(seq) - keep` is the exact cutoff
        for requests and at most keeps fewer samples for a while after a node was removed.
        """
        with self._guard():
            row = conn.execute(_SQL_SEQ_RANGE[table]).fetchone()
        low, high = row if row is not None else (None, None)
        if low is None or high is None:
            return 0
        cutoff = high - keep
        removed = 0
        while low <= cutoff:
            upto = min(cutoff, low + _TRIM_CHUNK - 1)
            with self._guard(), _transaction(conn):
                conn.execute(_SQL_TRIM[table], (upto,))
                removed += conn.changes()
            low = upto + 1
            _yield_cpu()
        return removed

    def _commit(self, conn: apsw.Connection, batch: list[Op], isolate: bool) -> int:
        """Write `batch` in one transaction; return how many items were dropped as invalid."""
        bad = 0
        with _transaction(conn):
            if not isolate:
                i = 0
                while i < len(batch):  # runs of the same statement go through executemany
                    j = i
                    while j < len(batch) and batch[j][0] is batch[i][0] and j - i < _YIELD_EVERY:
                        j += 1
                    conn.executemany(batch[i][0], [p for _, p in batch[i:j]])
                    i = j
                    if i < len(batch):
                        _yield_cpu()
                return 0
            for sql, params in batch:
                conn.execute("SAVEPOINT item")
                try:
                    conn.execute(sql, params)
                except Exception as e:
                    if isinstance(e, _TRANSIENT):
                        raise
                    conn.execute("ROLLBACK TO item")
                    bad += 1
                    log.warning("store dropped invalid item sql=%r %s", sql[:40], _err(e))
                conn.execute("RELEASE item")
        return bad

    def _trim(self, conn: apsw.Connection) -> None:
        """Retention: keep the newest N requests and samples; a failure waits for next time."""
        try:
            removed = self._trim_table(conn, "requests", self.history_max_rows)
            removed += self._trim_table(conn, "health_samples", self.samples_max_rows)
            self.trimmed += removed
            if removed:
                log.debug("store trimmed rows=%d", removed)
        except apsw.Error as e:
            self.write_errors += 1
            log.warning("store retention failed %s", _err(e))
