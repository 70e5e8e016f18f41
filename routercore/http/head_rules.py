"""What a request head alone decides, sans-IO: refuse it (431, 505, 400, 413) or read its body.

Beside the parser (wire.py) and as pure as it: a head and the limits in, a verdict out; no
socket, no clock, no logging. The connection (connection.py) logs the verdict and answers it.
These checks are the server's own; whether the *app* wants the body (route, origin,
credentials) is the `HeadCheck` it is given (state.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from routercore.http.wire import Head


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused before its handler: status and message for the client, the log
    line's event name and the fields that follow the peer in it. `server_full`: the server is
    short of room, not the client at fault: logged as a warning, answered with Retry-After."""

    status: int
    message: str
    event: str
    detail: str
    server_full: bool = False


# An accepted head: how its body is framed, (Content-Length or None, chunked). A plain tuple,
# not a class: it is built once per request, and a dataclass's __init__ costs ten times more.
BodyFraming = tuple[int | None, bool]


def judge_head(
    head: Head, *, max_header_bytes: int, max_body_bytes: int, fast_path: bool
) -> Refusal | BodyFraming:
    """The server's verdict on a complete head.

    `fast_path`: the wire's fast path read it, which only takes heads without
    Transfer-Encoding, so the header names need no second look.
    """
    # h11 bounds only an *incomplete* head; one that arrives whole in a single read can be
    # larger, so measure it here as well.
    if head_size(head) > max_header_bytes:
        return Refusal(
            431,
            "request head is larger than the server accepts",
            "bad_request",
            "status=431 reason='request head too large'",
        )
    if head.http_version not in (b"1.0", b"1.1"):
        version = head.http_version.decode("latin-1")
        return Refusal(
            505,
            "only HTTP/1.0 and HTTP/1.1 are supported",
            "bad_request",
            f"status=505 reason='HTTP version {version}'",
        )
    names = () if fast_path else {name for name, _ in head.headers}
    if b"transfer-encoding" in names and b"content-length" in names:
        # Both framings at once is how request smuggling starts (RFC 9112 6.3): refuse.
        return Refusal(
            400,
            "malformed HTTP request: both Content-Length and Transfer-Encoding",
            "bad_request",
            "status=400 reason='content-length with transfer-encoding'",
        )
    length = head.content_length
    if length is None:
        length = content_length(head.headers)
    if length is not None and length > max_body_bytes:
        return body_too_large(max_body_bytes)
    return length, b"transfer-encoding" in names


def body_too_large(max_body_bytes: int) -> Refusal:
    """413: announced by Content-Length, or a chunked body that grew past the limit."""
    return Refusal(
        413,
        f"request body exceeds the limit of {max_body_bytes} bytes",
        "body_too_large",
        f"limit={max_body_bytes}",
    )


def head_size(head: Head) -> int:
    """Bytes of the request line and header lines, as sent (give or take whitespace)."""
    size = len(head.method) + len(head.target) + len(b"  HTTP/1.1\r\n\r\n")
    for name, value in head.headers:
        size += len(name) + len(value) + 4
    return size


def content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
