"""The batched access log writes what a `logging` call per request wrote: the same lines, to
every handler, masked, in order; only later (at most FLUSH_SECONDS) and off the loop."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routercore.http import access_log
from routercore.http.access_log import AccessLog
from routercore.logring import FORMAT, LogRing
from routercore.logsafe import SafeLogFilter, escape_controls, mask_secrets
from tests.support.http_server import make_runner
from tests.support.polling import eventually

ACCESS = logging.getLogger("routercore.access")


@pytest.fixture
def run() -> Any:
    return make_runner("uvloop")


class CountingStream(io.StringIO):
    """Counts writes, to see that a batch is one write."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def handlers() -> Iterator[tuple[logging.StreamHandler[CountingStream], LogRing]]:
    stream = logging.StreamHandler(CountingStream())
    stream.setFormatter(logging.Formatter(FORMAT))
    stream.addFilter(SafeLogFilter())
    ring = LogRing(100)
    ring.addFilter(SafeLogFilter())
    old_level, old_propagate = ACCESS.level, ACCESS.propagate
    ACCESS.setLevel(logging.INFO)
    ACCESS.propagate = False
    ACCESS.addHandler(stream)
    ACCESS.addHandler(ring)
    try:
        yield stream, ring
    finally:
        ACCESS.removeHandler(stream)
        ACCESS.removeHandler(ring)
        ACCESS.setLevel(old_level)
        ACCESS.propagate = old_propagate


def record_some(log: AccessLog, paths: list[str]) -> None:
    for i, path in enumerate(paths):
        log.record("GET", path, 200 + i, time.perf_counter(), node="n1", peer="10.0.0.9:4000")


def test_lines_are_what_logging_would_have_written(handlers, run) -> None:  # type: ignore[no-untyped-def]
    stream, ring = handlers

    async def main() -> None:
        log = AccessLog(True)
        record_some(log, ["/a", "/b", "/c"])
        await asyncio.to_thread(log.close)

    run(main())
    text = stream.stream.getvalue()
    lines = text.splitlines()
    assert stream.stream.writes == 1  # the whole batch at once
    assert [line.split(" INFO routercore.access ")[1].split()[:3] for line in lines] == [
        ["GET", "/a", "200"],
        ["GET", "/b", "201"],
        ["GET", "/c", "202"],
    ]
    # The prefix is logging's own asctime format for that moment.
    expected = logging.Formatter(FORMAT).format(
        logging.LogRecord("routercore.access", logging.INFO, "", 0, "x", (), None)
    )
    assert lines[0][:19] == expected[:19] or lines[0][:16] == expected[:16]
    assert lines[0][19] == "," and lines[0][20:23].isdigit()
    assert [line for _, line in ring.records] == lines


def test_secrets_in_a_path_are_masked(handlers, run) -> None:  # type: ignore[no-untyped-def]
    stream, ring = handlers
    secret = "adm_" + "s3cr3t" * 6

    async def main() -> None:
        log = AccessLog(True)
        record_some(log, [f"/api/dashboard/ws?token={secret}"])
        await asyncio.to_thread(log.close)

    run(main())
    assert secret not in stream.stream.getvalue()
    assert "token=***" in stream.stream.getvalue()
    assert all(secret not in line for _, line in ring.records)


def test_lines_arrive_without_a_close(handlers, run) -> None:  # type: ignore[no-untyped-def]
    stream, _ = handlers

    async def main() -> None:
        log = AccessLog(True)
        record_some(log, ["/soon"])
        await eventually(lambda: "/soon" in stream.stream.getvalue())
        log.close()

    run(main())


def test_a_full_batch_goes_at_once_and_order_is_kept(handlers, run) -> None:  # type: ignore[no-untyped-def]
    stream, _ = handlers
    paths = [f"/{i}" for i in range(access_log.MAX_BATCH * 2 + 7)]

    async def main() -> None:
        log = AccessLog(True)
        record_some(log, paths[: access_log.MAX_BATCH])
        # MAX_BATCH lines went to the writer without waiting for the timer.
        await eventually(lambda: stream.stream.getvalue().count("\n") == access_log.MAX_BATCH)
        record_some(log, paths[access_log.MAX_BATCH :])
        await asyncio.to_thread(log.close)

    run(main())
    written = [line.split()[5] for line in stream.stream.getvalue().splitlines()]
    assert written == paths


def test_other_handlers_get_ordinary_records(run, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="routercore.access")

    async def main() -> None:
        log = AccessLog(True)
        log.record("POST", "/v1/x", 0, None, node="", peer="p", aborted=True)
        await asyncio.to_thread(log.close)

    run(main())
    records = [r for r in caplog.records if r.name == "routercore.access"]
    assert [r.getMessage() for r in records] == ["POST /v1/x - 0.0ms node=- peer=p aborted"]
    assert records[0].levelno == logging.INFO


def test_a_failing_handler_does_not_stop_later_lines(handlers, run) -> None:  # type: ignore[no-untyped-def]
    stream, _ = handlers

    hit = threading.Event()

    class Broken(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            hit.set()
            raise OSError("disk full")

        def handleError(self, record: logging.LogRecord) -> None:
            raise OSError("disk full")

    broken = Broken()
    ACCESS.addHandler(broken)

    async def main() -> None:
        log = AccessLog(True)
        record_some(log, ["/first"])
        log.flush()
        await eventually(hit.is_set)
        ACCESS.removeHandler(broken)
        record_some(log, ["/second"])
        await asyncio.to_thread(log.close)

    try:
        run(main())
    finally:
        ACCESS.removeHandler(broken)
    assert "/second" in stream.stream.getvalue()


def test_switched_off_it_keeps_nothing(handlers, run) -> None:  # type: ignore[no-untyped-def]
    stream, ring = handlers

    async def main() -> None:
        log = AccessLog(False)
        record_some(log, ["/x"])
        await asyncio.to_thread(log.close)

    run(main())
    assert stream.stream.getvalue() == "" and not ring.records


# Fields made of pieces that start secrets, forge lines or change case, so lines that need
# masking or escaping are common; the cache of plain fields must never skip one.
_piece = st.sampled_from(
    ["/v1/chat", "bearer", "Basic ", "TOKEN=", "key", "sk-", "AbCdEf1234567890abcdefgh", "://",
     "u:p@", "\n", "\x1b", "\u2028", " ", "=", "-", "İ", "a", "10.0.0.9:4000"]
)  # fmt: skip
_field = st.lists(_piece, max_size=4).map("".join)


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "X\n"]),
    path=_field,
    status=st.sampled_from([0, 200, 502]),
    node=_field,
    peer=_field,
    aborted=st.booleans(),
)
def test_a_message_is_the_whole_line_masked_and_escaped(
    method: str, path: str, status: int, node: str, peer: str, aborted: bool
) -> None:
    entry = (0.0, method, path, status, 1.25, node, peer, aborted)
    text = (
        f"{method} {path} {status or '-'} 1.2ms node={node or '-'} peer={peer}"
        f"{' aborted' if aborted else ''}"
    )
    expected = mask_secrets(escape_controls(text))
    assert access_log.message(entry) == expected
    assert access_log.message(entry) == expected  # again, with its fields' verdict cached
