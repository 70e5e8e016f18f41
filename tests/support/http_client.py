"""A raw HTTP/1.1 client for server tests: send bytes as given, parse replies strictly.

Shared by tests/unit/test_http_server.py, test_http_limits.py and test_websocket.py (and any
test that must see exactly what the server puts on the wire). Waiting in async tests:
`tests.support.polling.eventually`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    version: str = "HTTP/1.1"
    header_list: list[tuple[str, str]] = field(default_factory=list)

    def json(self) -> Any:
        return orjson.loads(self.body)


class Client:
    """A raw HTTP/1.1 client over asyncio streams: send bytes, parse replies strictly."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, **kwargs: Any) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, **kwargs)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(
        self,
        method: str = "GET",
        path: str = "/",
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        await self.send(build(method, path, body, headers))
        return await self.reply(method)

    def answer_started(self) -> bool:
        """Bytes from the server wait unread (the stream API has no public peek)."""
        return bool(getattr(self.reader, "_buffer", b""))

    async def reply(self, method: str = "GET", timeout: float = 5.0) -> Reply:
        return await asyncio.wait_for(read_reply(self.reader, method), timeout)

    async def closed(self, timeout: float = 5.0) -> bool:
        """True once the server has closed: EOF or a reset, with no more bytes before it."""

        async def drain() -> bytes:
            extra = b""
            try:
                while chunk := await self.reader.read(65536):
                    extra += chunk
            except ConnectionError:
                pass
            return extra

        extra = await asyncio.wait_for(drain(), timeout)
        assert extra == b"", f"unexpected bytes before close: {extra[:200]!r}"
        return True

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.transport.abort()


def build(
    method: str = "GET", path: str = "/", body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    hdrs = dict(headers or {})
    if body and "Content-Length" not in hdrs and "Transfer-Encoding" not in hdrs:
        hdrs["Content-Length"] = str(len(body))
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_reply(reader: asyncio.StreamReader, method: str = "GET") -> Reply:
    """Parse one response (status line, headers, framed body); fails on anything malformed."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].decode("latin-1").split("\r\n")
    version, status_text, *_ = lines[0].split(" ", 2)
    assert version in ("HTTP/1.1", "HTTP/1.0"), lines[0]
    assert len(status_text) == 3 and status_text.isdigit(), lines[0]
    status = int(status_text)
    header_list: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        assert sep and name and name.strip() == name, f"bad header line {line!r}"
        header_list.append((name.lower(), value.strip()))
    headers = dict(header_list)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            assert chunk.endswith(b"\r\n")
            body += chunk[:-2]
            if size == 0:
                break
    else:
        body = await reader.read()
    return Reply(status, headers, body, version, header_list)
