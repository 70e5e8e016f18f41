"""An upstream's HTTP error answer, passed through to the client as a reverse proxy would:
its status, its rate-limit fields and its body (bounded), for a provider with the key masked,
for the Ollama API in Ollama's error shape when the upstream spoke OpenAI's."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from routercore.http.messages import ResponseStream
from routercore.http.response_parser import ResponseHead
from routercore.http.upstream import UpstreamConnection
from routercore.translate import openai_error_to_ollama

PASSED_ERROR_HEADERS = (
    b"retry-after",
    b"x-ratelimit-reset-requests",
    b"x-ratelimit-reset-tokens",
)
MAX_ERROR_BODY = 64 * 1024
_READ_FOR = 10.0  # seconds an error body may take to arrive


async def pass_error_answer(
    conn: UpstreamConnection,
    head: ResponseHead,
    stream: ResponseStream,
    node_header: tuple[bytes, bytes],
    deadline: float,
    *,
    to_ollama: bool,
    scrub: Callable[[bytes], bytes] = lambda data: data,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Read the error body (at most MAX_ERROR_BODY), answer it, close the connection."""
    body = b""
    end = min(time.perf_counter() + _READ_FOR, deadline)
    while len(body) < MAX_ERROR_BODY:
        piece = await conn.read_body(max(0.1, end - time.perf_counter()))
        if piece is None:
            break
        body += piece
    body = scrub(body[:MAX_ERROR_BODY])
    headers = [node_header, *extra]
    headers += [(k, v) for k, v in head.headers if k in PASSED_ERROR_HEADERS]
    if to_ollama:
        body = openai_error_to_ollama(head.status_code, body)
        headers.append((b"content-type", b"application/json; charset=utf-8"))
    else:
        headers += [(k, v) for k, v in head.headers if k == b"content-type"]
    headers.append((b"content-length", b"%d" % len(body)))
    await stream.start(head.status_code, headers)
    await stream.write(body)
    await stream.end()
    conn.close()
