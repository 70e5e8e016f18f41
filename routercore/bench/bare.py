"""Servers the benchmark measures against, each replaying the fake node's recorded reply.

- `--reply`: the ceiling for one Python process, a bare uvloop + h11 server. It parses each
  request with h11 and answers with h11, replaying the status, headers and body that the fake
  node sent for the benchmark's request.
- `--reply --replay`: the node for the throughput and latency sections, as cheap as Python gets
  (finds each request's end, writes the recorded bytes), so that the node sharing the load
  generator's core is never what limits the router.
- neither: a streaming node whose events carry their send time (`--stamp-*`); with
  `--stamp-barrier N` each stream waits after its first event until N requests have arrived,
  so that N streams are certainly open at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import h11


class BareProtocol(asyncio.Protocol):
    """Answers every complete request on the connection with the same reply."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.conn = h11.Connection(h11.SERVER)
        self.status = status
        self.headers = headers
        self.body = body
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        conn.receive_data(data)
        assert self.transport is not None
        for _request in _requests(conn, self.transport):
            out = conn.send(h11.Response(status_code=self.status, headers=self.headers))
            out += conn.send(h11.Data(data=self.body))
            out += conn.send(h11.EndOfMessage())
            self.transport.write(out)
            conn.start_next_cycle()


def _requests(conn: h11.Connection, transport: asyncio.Transport) -> Iterator[None]:
    """Once per complete request among what `conn` has received; a malformed request or the
    peer's close closes the transport."""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            transport.close()
            return
        if event is h11.NEED_DATA or event is h11.PAUSED:
            return
        if isinstance(event, h11.EndOfMessage):
            yield
        elif isinstance(event, h11.ConnectionClosed):
            transport.close()
            return


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]+)", re.IGNORECASE)


class ReplayProtocol(asyncio.Protocol):
    """Answers each complete request (head plus Content-Length body) with the same bytes."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.buf = b""
        self.body_left = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        answers = 0
        while True:
            if self.body_left:
                if len(buf) < self.body_left:
                    self.body_left -= len(buf)
                    buf = b""
                    break
                buf = buf[self.body_left :]
                self.body_left = 0
                answers += 1
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            length = _CONTENT_LENGTH.search(buf, 0, end + 2)
            buf = buf[end + 4 :]
            if length is not None and int(length[1]):
                self.body_left = int(length[1])
            else:
                answers += 1
        self.buf = buf
        if answers and self.transport is not None:
            self.transport.write(self.reply * answers)


class Barrier:
    """Holds streams after their first event until `count` requests have arrived (or `timeout`
    passed: the streams then go on, and the client sees fewer open at once)."""

    def __init__(self, count: int, timeout: float = 180.0) -> None:
        self.left = count
        self.timeout = timeout
        self.reached = asyncio.Event()

    def arrived(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.reached.set()

    async def wait(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.reached.wait(), self.timeout)


class StampProtocol(asyncio.Protocol):
    """A streaming upstream whose SSE events carry their send time (`data: {"t": ...}`).

    perf_counter is CLOCK_MONOTONIC on Linux, so a client on the same machine can compute each
    chunk's one-way delay directly and through the router.
    """

    def __init__(self, chunks: int, delay: float, barrier: Barrier | None = None) -> None:
        self.conn = h11.Connection(h11.SERVER)
        self.chunks = chunks
        self.delay = delay
        self.barrier = barrier
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        assert self.transport is not None
        for _request in _requests(self.conn, self.transport):
            if self.barrier is not None:
                self.barrier.arrived()
            self.task = asyncio.get_running_loop().create_task(self._stream())
            return

    async def _stream(self) -> None:
        conn, transport = self.conn, self.transport
        assert transport is not None
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        head = conn.send(h11.Response(status_code=200, headers=headers))
        for i in range(self.chunks):
            if i == 1 and self.barrier is not None:
                await self.barrier.wait()
            elif i:
                await asyncio.sleep(self.delay)
            # An OpenAI chat chunk whose content is its send time too: the router's Ollama
            # translation carries it into the NDJSON line (clients.py reads both).
            t = time.perf_counter()
            event = (
                b'data: {"t": %.9f, "object": "chat.completion.chunk", "choices": '
                b'[{"index": 0, "delta": {"content": "%.9f"}, "finish_reason": null}]}\n\n' % (t, t)
            )
            transport.write(head + conn.send(h11.Data(data=event)))
            head = b""
        transport.write(
            conn.send(h11.Data(data=b"data: [DONE]\n\n")) + conn.send(h11.EndOfMessage())
        )
        conn.start_next_cycle()
        self.task = None


def reply_bytes(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The recorded reply as one HTTP/1.1 message (with its own Content-Length)."""
    lines = [b"HTTP/1.1 %d OK" % status]
    lines += [k + b": " + v for k, v in headers if k != b"content-length"]
    lines.append(b"content-length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def load_reply(path: Path) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The reply file: {"status", "headers": [[name, value], ...], "body"} (latin-1 strings)."""
    data = json.loads(path.read_text())
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in data["headers"]]
    return int(data["status"]), headers, data["body"].encode("latin-1")


async def serve(
    port: int,
    reply: Path | None,
    replay: bool,
    stamp_chunks: int,
    stamp_delay: float,
    stamp_barrier: int = 0,
) -> None:
    loop = asyncio.get_running_loop()
    factory: Callable[[], asyncio.Protocol]
    if reply is not None and replay:
        data = reply_bytes(*load_reply(reply))
        factory = lambda: ReplayProtocol(data)  # noqa: E731
    elif reply is not None:
        status, headers, body = load_reply(reply)
        factory = lambda: BareProtocol(status, headers, body)  # noqa: E731
    else:
        barrier = Barrier(stamp_barrier) if stamp_barrier else None
        factory = lambda: StampProtocol(stamp_chunks, stamp_delay, barrier)  # noqa: E731
    server = await loop.create_server(factory, "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reply", type=Path, help="answer every request with this reply")
    parser.add_argument("--replay", action="store_true", help="with --reply: no h11, raw bytes")
    parser.add_argument("--stamp-chunks", type=int, default=20, help="without --reply: stream")
    parser.add_argument("--stamp-delay", type=float, default=0.005)
    parser.add_argument("--stamp-barrier", type=int, default=0, help="hold streams until N came")
    args = parser.parse_args()
    import uvloop

    uvloop.run(
        serve(
            args.port,
            args.reply,
            args.replay,
            args.stamp_chunks,
            args.stamp_delay,
            args.stamp_barrier,
        )
    )


if __name__ == "__main__":
    main()
