"""The writer thread: the only SQLite writer, fed by a queue the event loop never waits on.

It commits queued writes in batches and survives busy/locked/full/IO errors by keeping the
batch and retrying with backoff; a write that is bad in itself is dropped alone. A queued item
is one row, or a list of rows of one statement handed over at once (the proxy's history rows:
one queue item and one `executemany` per batch instead of Python work per row). Caps and
counters count rows. Over the backlog cap it sheds the oldest samples first, and every few
batches it trims the history to its retention limits. `Store` inherits this; the state it
uses is set in `Store.__init__`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import apsw

from routercore.store.rows import _SQL_REQUEST, _SQL_REQUEST_INSERT, _SQL_SAMPLE
from routercore.store.schema import MIGRATIONS, _transaction, connect, migrate

# One logger for the whole package: operators and tests filter on this name.
log = logging.getLogger("routercore.store.writer")

# (statement, one row's parameters) or (statement, a list of rows' parameters).
Op = tuple[str, Any]

# The writer thread often shares a core with the event loop (one core per router process in
# the benchmark, small machines in life). A waking event loop would wait behind a long batch for
# the rest of the writer's time slice (~1 ms), so the writer offers the CPU every few rows.
_YIELD_EVERY = 32
_yield_cpu: Callable[[], None] = getattr(os, "sched_yield", lambda: None)

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


def _rows_in(item: Any) -> int:
    """How many rows a queued item writes: a list's length, one, or none for a marker."""
    if not isinstance(item, tuple):
        return 0
    params = item[1]
    return len(params) if params.__class__ is list else 1


def _runs(batch: list[Op]) -> Iterator[tuple[str, list[Any]]]:
    """The batch as (statement, rows) pieces of at most `_YIELD_EVERY` rows, in order:
    consecutive single rows of one statement go together, a list of rows is cut up."""
    i, n = 0, len(batch)
    while i < n:
        sql, params = batch[i]
        if params.__class__ is list:
            i += 1
            for k in range(0, len(params), _YIELD_EVERY):
                yield sql, params[k : k + _YIELD_EVERY]
            continue
        j = i + 1
        while j < n and j - i < _YIELD_EVERY and batch[j][0] is sql:
            if batch[j][1].__class__ is list:
                break
            j += 1
        yield sql, [p for _, p in batch[i:j]]
        i = j


def _is_request(sql: str) -> bool:
    return sql is _SQL_REQUEST or sql is _SQL_REQUEST_INSERT


def _is_sample(sql: str) -> bool:
    return sql is _SQL_SAMPLE


def _err(e: BaseException) -> str:
    code = getattr(e, "extendedresult", None)
    return f"error={type(e).__name__} code={code} detail={str(e)[:200]!r}"


class StoreWriter:
    """The queue, the writer thread and its counters (a base of `Store`)."""

    path: str
    busy_timeout_ms: int
    batch_max: int
    history_max_rows: int
    samples_max_rows: int
    backlog_max: int
    trim_every: int
    retry_min_s: float
    retry_max_s: float
    _on_connect: Callable[[apsw.Connection], None] | None
    _queue: queue.SimpleQueue[Any]
    _pending: collections.deque[Any]
    _pending_rows: int  # rows in `_pending` (writer thread only; read racily by `backlog`)
    _stop: threading.Event
    _writer: threading.Thread | None
    _shared: apsw.Connection | None
    _shared_lock: threading.Lock
    written: int
    dropped: int
    write_errors: int
    batches: int
    trimmed: int

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

    def _connect(self) -> apsw.Connection:
        conn = connect(self.path, self.busy_timeout_ms)
        if self._on_connect is not None:
            self._on_connect(conn)
        return conn

    def _guard(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext() if self._shared is None else self._shared_lock

    # ---- counters -----------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Rows not yet committed (approximate: read without locks from any thread; a queued
        list counts as one until the writer takes it)."""
        return self._queue.qsize() + self._pending_rows

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
            rows = 0
            try:
                if not self._pending:
                    self._take(self._queue.get())
                self._drain()
                self._shed()
                while self._pending and not isinstance(self._pending[0], tuple):
                    marker = self._pending.popleft()
                    if marker is _STOP:
                        return
                    marker.set()
                for item in self._pending:  # up to about batch_max rows, at least one item
                    if not isinstance(item, tuple) or rows >= self.batch_max:
                        break
                    batch.append(item)
                    rows += _rows_in(item)
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
            self._pending_rows -= rows
            self.written += rows - bad
            self.dropped += bad
            self.batches += 1
            if failures:
                log.info("store write recovered failures=%d backlog=%d", failures, self.backlog)
            delay, failures, isolate = 0.0, 0, False
            if self.batches % self.trim_every == 0:
                self._trim(conn)

    def _take(self, item: Any) -> None:
        self._pending.append(item)
        self._pending_rows += _rows_in(item)

    def _drain(self) -> None:
        """Move what is queued into the pending deque (bounded per pass, in rows and items)."""
        limit = self.backlog_max + self.batch_max
        for _ in range(limit):
            if self._pending_rows > limit:
                return
            try:
                self._take(self._queue.get_nowait())
            except queue.Empty:
                return

    def _shed(self) -> None:
        """Over the backlog cap: drop the oldest samples first, request history last."""
        excess = self._pending_rows - self.backlog_max  # rows: markers are not shed
        if excess <= 0:
            return
        counts = {}
        for name, kind in (("samples", _is_sample), ("requests", _is_request)):
            n = 0
            kept: collections.deque[Any] = collections.deque()
            for item in self._pending:
                if n >= excess or not isinstance(item, tuple) or not kind(item[0]):
                    kept.append(item)
                    continue
                sql, params = item
                if params.__class__ is list:  # the oldest rows of a list go first
                    cut = min(len(params), excess - n)
                    n += cut
                    if cut < len(params):
                        kept.append((sql, params[cut:]))
                else:
                    n += 1
            self._pending = kept
            self._pending_rows -= n
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
        """Write `batch` in one transaction; return how many rows were dropped as invalid."""
        bad = 0
        with _transaction(conn):
            if not isolate:
                for k, (sql, rows) in enumerate(_runs(batch)):
                    if k:
                        _yield_cpu()
                    conn.executemany(sql, rows)
                return 0
            for sql, params in batch:  # row by row: a bad row is dropped, not its neighbours
                for row in params if params.__class__ is list else (params,):
                    conn.execute("SAVEPOINT item")
                    try:
                        conn.execute(sql, row)
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
