"""Load-generating clients on raw asyncio sockets, run as pinned child processes.

`paced`: open-loop requests at a fixed mean rate with Poisson arrivals (independent clients)
over a pool of keep-alive connections; latency from send to the last byte of the response. It
runs on the stock loop with a select() selector, whose timeouts have microsecond resolution:
uvloop's and epoll's timers have 1 ms, which would send each millisecond's requests as one
burst and measure that burst's queueing instead of the server.

`streams`: streamed requests one after another (a few at a time); time to first body byte
and, for a stamping upstream, per-chunk one-way delay. `hold`: opens N streams, reports when
all are flowing, keeps reading until told to stop (stdin closes). `many`: opens N streams at
once and reads each to its end.

Each prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import selectors
import sys
import time
from collections import deque
from typing import Any

import orjson

_now = time.perf_counter  # CLOCK_MONOTONIC on Linux: comparable across processes


def build_request(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Conn(asyncio.Protocol):
    """One keep-alive connection; `request()` resolves when a whole response has arrived."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need = -1  # total bytes of head + body once known; -2: chunked
        self.done: asyncio.Future[None] | None = None
        self.lost = False
        self.on_data: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("closed"))

    def data_received(self, data: bytes) -> None:
        if self.on_data is not None:
            self.on_data(data)
        buf = self.buf
        buf += data
        if self.need == -1:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            i = head.find(b"content-length:")
            if i >= 0:
                j = head.find(b"\r\n", i)
                self.need = end + 4 + int(head[i + 15 : j if j > 0 else None])
            else:
                self.need = -2
        if (self.need >= 0 and len(buf) >= self.need) or (
            self.need == -2 and buf.endswith(b"0\r\n\r\n")
        ):
            self.buf = bytearray()
            self.need = -1
            if self.done is not None and not self.done.done():
                self.done.set_result(None)

    async def request(self, data: bytes) -> None:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        await self.done


async def _connect(host: str, port: int) -> _Conn:
    _, proto = await asyncio.get_running_loop().create_connection(_Conn, host, port)
    return proto


class _PacedConn(asyncio.Protocol):
    """A keep-alive connection driven by callbacks only (no task or future per request)."""

    def __init__(self, gen: _Paced) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.need = -1
        self.sent_at = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.gen.pool.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        gen = self.gen
        if self.busy:
            gen.errors += 1
        elif self in gen.pool:
            gen.pool.remove(self)
        gen.reconnect()

    def send(self, req: bytes, now: float) -> None:
        assert self.transport is not None
        self.busy = True
        self.sent_at = now
        self.transport.write(req)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if self.need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            head = buf[:end].lower()
            i = head.find(b"content-length:")
            if i < 0:
                raise RuntimeError("paced client needs content-length responses")
            j = head.find(b"\r\n", i)
            self.need = end + 4 + int(head[i + 15 : j if j > 0 else None])
        if len(buf) < self.need:
            self.buf = buf
            return
        self.buf = b""
        self.need = -1
        self.busy = False
        self.gen.done(self)


class _Paced:
    """Open-loop generator state: idle connections, results."""

    def __init__(self, host: str, port: int, measure_from: float) -> None:
        self.host = host
        self.port = port
        self.measure_from = measure_from
        self.pool: deque[_PacedConn] = deque()
        self.lat: list[int] = []
        self.errors = 0
        self.closing = False
        self.tasks: set[asyncio.Task[Any]] = set()

    def done(self, conn: _PacedConn) -> None:
        now = _now()
        if conn.sent_at >= self.measure_from:
            self.lat.append(int((now - conn.sent_at) * 1e6))
        self.pool.append(conn)

    def reconnect(self) -> None:
        if not self.closing:
            loop = asyncio.get_running_loop()
            task = loop.create_task(
                loop.create_connection(lambda: _PacedConn(self), self.host, self.port)
            )
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)


async def paced(
    host: str,
    port: int,
    path: str,
    body: bytes,
    rate: float,
    duration: float,
    conns: int,
    warmup: float,
    seed: int = 0,
) -> dict[str, Any]:
    """Send `rate` req/s for `duration` s; latencies (µs, send to last byte) after `warmup`.

    Requests leave on schedule (exponential gaps from `seed`, so every target gets the same
    arrival times) whether or not earlier ones finished (open loop); when all connections are
    busy the request is counted as skipped rather than queued.
    """
    req = build_request(host, port, path, body)
    loop = asyncio.get_running_loop()
    t0 = _now()
    gen = _Paced(host, port, t0 + warmup)
    for _ in range(conns):
        await loop.create_connection(lambda: _PacedConn(gen), host, port)
    t0 = _now()
    gen.measure_from = t0 + warmup
    end = t0 + warmup + duration
    gap = random.Random(seed).expovariate
    late = 0
    pool = gen.pool
    due = t0 + gap(rate)
    while True:
        now = _now()
        if now >= end:
            break
        while due <= now:
            if pool:
                pool.popleft().send(req, now)
            else:
                late += 1
            due += gap(rate)
        await asyncio.sleep(due - _now())
    deadline = _now() + 10
    while len(pool) < conns and _now() < deadline:  # let the last responses arrive
        await asyncio.sleep(0.01)
    gen.closing = True
    for conn in list(pool):
        if conn.transport is not None:
            conn.transport.close()
    return {"latencies_us": gen.lat, "errors": gen.errors, "skipped": late, "duration": duration}


async def streams(
    host: str, port: int, path: str, body: bytes, count: int, parallel: int, stamped: bool
) -> dict[str, Any]:
    """`count` streamed requests, `parallel` at a time; TTFB and per-chunk delay (µs)."""
    req = build_request(host, port, path, body)
    ttfb: list[int] = []
    chunk_delay: list[int] = []
    sem = asyncio.Semaphore(parallel)

    async def one() -> None:
        async with sem:
            conn = await _connect(host, port)
            arrivals: list[tuple[float, bytes]] = []
            conn.on_data = lambda d: arrivals.append((_now(), d))
            start = _now()
            await conn.request(req)
            assert conn.transport is not None
            conn.transport.close()
        ttfb.append(int((arrivals[0][0] - start) * 1e6))
        if stamped:
            for at, data in arrivals[1:]:
                for stamp in _stamps(data):
                    chunk_delay.append(int((at - stamp) * 1e6))

    await asyncio.gather(*(one() for _ in range(count)))
    return {"ttfb_us": ttfb, "chunk_delay_us": chunk_delay}


def _stamps(data: bytes) -> list[float]:
    """Send times the stamping upstream put in its SSE events (`data: {"t": ...}`), or the same
    carried as content into Ollama NDJSON lines by the router's translation."""
    out = []
    for line in data.split(b"\n"):
        if line.startswith(b'data: {"t"'):
            out.append(float(orjson.loads(line[6:])["t"]))
        elif line.startswith(b'{"model"') and b'"done":false' in line:
            out.append(float(orjson.loads(line)["message"]["content"]))
    return out


async def hold(host: str, port: int, path: str, body: bytes, count: int) -> None:
    """Open `count` streams; print READY when each got its first chunk; close on stdin EOF."""
    req = build_request(host, port, path, body)
    loop = asyncio.get_running_loop()
    first: list[asyncio.Future[None]] = []
    conns: list[_Conn] = []
    chunks = 0

    def opened(fut: asyncio.Future[None]) -> Any:
        def on_data(_data: bytes) -> None:
            nonlocal chunks
            chunks += 1
            if not fut.done():
                fut.set_result(None)

        return on_data

    sem = asyncio.Semaphore(200)  # don't overrun the listen backlog while connecting

    async def open_one() -> None:
        async with sem:
            conn = await _connect(host, port)
        fut = loop.create_future()
        conn.on_data = opened(fut)
        assert conn.transport is not None
        conn.transport.write(req)
        conns.append(conn)
        first.append(fut)

    await asyncio.gather(*(open_one() for _ in range(count)))
    await asyncio.wait_for(asyncio.gather(*first), 120)
    print(json.dumps({"ready": len(conns)}), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    lost = sum(c.lost for c in conns)
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    print(json.dumps({"chunks": chunks, "lost": lost}), flush=True)


async def many(
    host: str, port: int, path: str, body: bytes, count: int, timeout: float, sources: int = 8
) -> dict[str, Any]:
    """Open `count` streams at once and read each to its end (`data: [DONE]`, last chunk).

    The connections come from `sources` loopback addresses (127.0.0.1, .2, ...): the router caps
    the connections of one address (2,500 by default) and the point is its total. Reports how
    many completed, the errors (with a few samples) and the most streams open at one moment.
    """
    req = build_request(host, port, path, body)
    loop = asyncio.get_running_loop()
    connecting = asyncio.Semaphore(200)  # don't overrun the listen backlog while connecting
    open_now = peak = complete = 0
    errors: list[str] = []

    async def one(i: int) -> None:
        nonlocal open_now, peak, complete
        try:
            async with connecting:
                _, conn = await loop.create_connection(
                    _Conn, host, port, local_addr=(f"127.0.0.{1 + i % sources}", 0)
                )
            got = bytearray()
            conn.on_data = got.extend
            open_now += 1
            peak = max(peak, open_now)
            try:
                await conn.request(req)
            finally:
                open_now -= 1
                assert conn.transport is not None
                conn.transport.close()
        except (OSError, ConnectionError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            return
        if got.startswith(b"HTTP/1.1 200 ") and b"data: [DONE]" in got:
            complete += 1
        else:
            errors.append(bytes(got[:200]).decode("latin-1"))

    t0 = _now()
    tasks = [loop.create_task(one(i)) for i in range(count)]
    _, unfinished = await asyncio.wait(tasks, timeout=timeout)
    for task in unfinished:
        task.cancel()
    return {
        "streams": count,
        "complete": complete,
        "errors": len(errors) + len(unfinished),
        "unfinished": len(unfinished),
        "error_samples": errors[:5],
        "peak_open": peak,
        "seconds": round(_now() - t0, 2),
    }


def _emit(result: dict[str, Any], path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(result, f)
    else:
        print(json.dumps(result), flush=True)


def _fine_timer_loop() -> asyncio.AbstractEventLoop:
    """The stock loop on select(): sleeps shorter than a millisecond are kept."""
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=("paced", "streams", "hold", "many"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--path", default="/v1/chat/completions")
    parser.add_argument("--body", required=True)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--stamped", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="paced: seed of the arrival times")
    parser.add_argument("--out", help="write the JSON result here instead of stdout")
    args = parser.parse_args(argv)
    import uvloop

    body = args.body.encode()
    if args.mode == "paced":
        with asyncio.Runner(loop_factory=_fine_timer_loop) as runner:
            out = runner.run(
                paced(
                    args.host,
                    args.port,
                    args.path,
                    body,
                    args.rate,
                    args.duration,
                    args.conns,
                    args.warmup,
                    args.seed,
                )
            )
        _emit(out, args.out)
    elif args.mode == "streams":
        out = uvloop.run(
            streams(args.host, args.port, args.path, body, args.count, args.parallel, args.stamped)
        )
        _emit(out, args.out)
    elif args.mode == "many":
        out = uvloop.run(many(args.host, args.port, args.path, body, args.count, args.duration))
        _emit(out, args.out)
    else:
        uvloop.run(hold(args.host, args.port, args.path, body, args.count))


if __name__ == "__main__":
    main()
