"""The access log: one `routercore.access` line per answered request, written in batches.

Format of the message: `METHOD PATH STATUS 12.3ms node=NODE peer=PEER` (`-` for an unknown
status or node), with ` aborted` appended when the response was cut.

A `logging` call per request cost about a quarter of the router's throughput (a LogRecord, the
safety filter, `strftime`, a locked write and flush, the log ring formatting it again). So the
loop only appends a tuple; every `FLUSH_SECONDS` (or `MAX_BATCH` lines) the batch goes to one
writer thread, which formats the lines itself and gives each handler of the logger all of them
at once: a stream handler with the router's own format gets one write, the log ring one extend,
and any other handler (a file, pytest's caplog) the ordinary LogRecords, so nothing is lost
or changed. Lines keep the time their request ended; they appear at most FLUSH_SECONDS late.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from routercore.logring import FORMAT, LogRing
from routercore.logsafe import SafeLogFilter, escape_controls, is_plain, mask_secrets

_log = logging.getLogger("routercore.access")

FLUSH_SECONDS = 0.05
MAX_BATCH = 512

# (ended at, method, path, status, duration ms, node, peer, aborted)
Entry = tuple[float, str, str, int, float, str, str, bool]


# (method, path, node, peer) whose lines are plain (logsafe.is_plain) whatever the status and
# duration between them: the same few recur on every line, so the line is checked for
# control characters and secrets once per combination instead of once per request. Cleared
# when full, since clients choose paths.
_PLAIN: set[tuple[str, str, str, str]] = set()
_PLAIN_MAX = 4096


def message(entry: Entry) -> str:
    """The access line's message text, made safe like every other log record's."""
    _, method, path, status, ms, node, peer, aborted = entry
    text = (
        f"{method} {path} {status or '-'} {ms:.1f}ms node={node or '-'} peer={peer}"
        f"{' aborted' if aborted else ''}"
    )
    fields = (method, path, node, peer)
    if fields in _PLAIN:
        return text
    # The rest of the line (digits, `-`, `.`, `ms node=`, ` peer=`, ` aborted`) starts no
    # secret, and its parts are joined by spaces or `=`: plain fields make a plain line.
    if is_plain(f"{method} {path} {node} {peer}"):
        if len(_PLAIN) >= _PLAIN_MAX:
            _PLAIN.clear()
        _PLAIN.add(fields)
        return text
    return mask_secrets(escape_controls(text))


class AccessLog:
    """Collects the access lines of one server on its loop; `enabled=False` keeps none."""

    __slots__ = ("_pending", "_timer", "_writer", "enabled")

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._pending: list[Entry] = []
        self._timer: asyncio.TimerHandle | None = None
        self._writer: _Writer | None = None

    def record(
        self,
        method: str,
        path: str,
        status: int,
        started: float | None,
        *,
        node: str,
        peer: str,
        aborted: bool = False,
    ) -> None:
        """`started`: `time.perf_counter()` when the request was read (None: answered at once,
        logged as 0.0 ms). The duration is taken here, after the `enabled` check."""
        if not self.enabled:
            return
        ms = 0.0 if started is None else (time.perf_counter() - started) * 1000.0
        pending = self._pending
        pending.append((time.time(), method, path, status, ms, node, peer, aborted))
        if len(pending) >= MAX_BATCH:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Hand what is pending to the writer thread (it writes soon, off the loop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        if self._writer is None:
            self._writer = _Writer()
        self._writer.put(batch)

    def close(self) -> None:
        """Flush and wait until every line is written (shutdown)."""
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _Writer:
    """One daemon thread writing batches in order; `close` waits for the last one."""

    def __init__(self) -> None:
        self._clock = _Clock()
        self._queue: queue.SimpleQueue[list[Entry] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
        self._thread.start()

    def put(self, batch: list[Entry]) -> None:
        self._queue.put(batch)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            try:
                write_batch(batch, self._clock)
            except Exception:  # a broken handler must not stop later lines
                logging.getLogger("routercore.http.access_log").exception(
                    "event=access_log_write_failed lines=%d", len(batch)
                )


def write_batch(batch: list[Entry], clock: _Clock) -> None:
    """Give every handler the access logger reaches the whole batch, in its cheapest form."""
    if not _log.isEnabledFor(logging.INFO):
        return
    lines: list[str] | None = None
    records: list[logging.LogRecord] | None = None
    for handler in _handlers():
        if handler.level > logging.INFO:
            continue
        if isinstance(handler, LogRing):
            lines = lines or _lines(batch, clock)
            handler.extend(lines)
        elif (stream_handler := _plain_stream(handler)) is not None:
            lines = lines or _lines(batch, clock)
            end = stream_handler.terminator
            with _locked(stream_handler):
                stream_handler.stream.write("".join(line + end for line in lines))
                stream_handler.flush()
        else:
            records = records or [_record(entry) for entry in batch]
            for record in records:
                handler.handle(record)


def _handlers() -> Iterator[logging.Handler]:
    """The handlers a record of the access logger reaches, as `Logger.callHandlers` walks."""
    logger: logging.Logger | None = _log
    while logger is not None:
        yield from logger.handlers
        logger = logger.parent if logger.propagate else None


def _plain_stream(handler: logging.Handler) -> logging.StreamHandler[Any] | None:
    """A stream handler printing the router's own format: its lines can be made here."""
    if type(handler) is not logging.StreamHandler:
        return None
    formatter = handler.formatter
    plain = (
        formatter is not None
        and formatter._fmt == FORMAT
        and formatter.datefmt is None
        and all(isinstance(f, SafeLogFilter) for f in handler.filters)
    )
    return handler if plain else None


@contextmanager
def _locked(handler: logging.Handler) -> Iterator[None]:
    handler.acquire()
    try:
        yield
    finally:
        handler.release()


class _Clock:
    """`asctime` as logging's default Formatter writes it, one strftime per second."""

    def __init__(self) -> None:
        self.second = -1
        self.text = ""


def _lines(batch: list[Entry], clock: _Clock) -> list[str]:
    out = []
    for entry in batch:
        ended = entry[0]
        second = int(ended)
        if second != clock.second:
            clock.second = second
            clock.text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        millis = int((ended - second) * 1000)
        out.append(f"{clock.text},{millis:03d} INFO routercore.access {message(entry)}")
    return out


def _record(entry: Entry) -> logging.LogRecord:
    record = _log.makeRecord(_log.name, logging.INFO, __file__, 0, message(entry), (), None)
    record.created = entry[0]
    record.msecs = int((entry[0] - int(entry[0])) * 1000)
    record.__dict__["_made_safe"] = True  # message() already masked and escaped it
    return record
