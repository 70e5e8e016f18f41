"""The `Store` itself: opening and closing, the enqueue methods the router calls on the
event loop, and the reads, which run on a dedicated reader thread with its own connection.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import apsw

from routercore.node import Node
from routercore.store.rows import (
    _SQL_API_KEY,
    _SQL_DELETE_NODE,
    _SQL_DELETE_SAMPLES,
    _SQL_META,
    _SQL_NODE,
    _SQL_REQUEST,
    _SQL_REQUEST_INSERT,
    _SQL_SAMPLE,
    API_KEY_COLUMNS,
    NODE_COLUMNS,
    REQUEST_COLUMNS,
    SAMPLE_COLUMNS,
    _node_row,
    _request_dict,
    _row_node,
)
from routercore.store.schema import MIGRATIONS, migrate
from routercore.store.writer import _STOP, StoreWriter
from routercore.timestamps import MICROS, now_rfc3339

# One logger for the whole package: operators and tests filter on this name.
log = logging.getLogger("routercore.store.database")

T = TypeVar("T")


class Store(StoreWriter):
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
        self._pending_rows = 0
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
        row[1] = row[1] or now_rfc3339(MICROS)
        for flag in (12, 15):  # stream, affinity_hit
            if row[flag] is not None:
                row[flag] = int(bool(row[flag]))
        self._queue.put((_SQL_REQUEST, tuple(row)))

    def add_request_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """The proxy's hot path: finished requests' rows, each complete in REQUEST_COLUMNS
        order (stream, affinity_hit as 0/1) with a freshly generated id, as ONE queue item.

        The list is the store's from here on (the caller must not change it): the writer binds
        it with one `executemany`, without Python work per row on either side.
        """
        if rows:
            self._queue.put((_SQL_REQUEST_INSERT, rows))

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
