"""The node's side of an HTTP/1.1 exchange, sans-IO: bytes in, events out (a `ResponseHead`,
body pieces, `END`). No sockets and no event loop here; `upstream.py` drives it over a pooled
connection, `tests/unit/test_upstream_oracle.py` holds it against h11. This is the pure-Python
twin of ext/response_parser.pyx (routercore._response_parser) and its reference;
routercore/http/response_parser.py picks one. ResponseHead and ProtocolError are shared.

The parser does only what relaying needs (status, headers, framing); bodies are handed on as
the bytes objects the socket produced whenever framing allows it, never re-parsed or copied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from routercore.sentinel import END, Sentinel

__all__ = [
    "END",
    "HOP_BY_HOP",
    "IMPLEMENTATION",
    "MAX_HEAD_BYTES",
    "Event",
    "ProtocolError",
    "ResponseHead",
    "ResponseParser",
]

IMPLEMENTATION = "python"
MAX_HEAD_BYTES = 64 * 1024
# A field name is a token (RFC 9110); no byte of a head may be a control character other than
# HTAB and the CRLF pairs that end its lines. A node breaking either rule gets a 502 answered
# for it: relaying the field would make the client-side writer refuse the head and drop the
# client connection without an answer.
_FIELD_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_CONTROL_BYTE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # CR and LF: counted
_GOOD_NAMES: set[bytes] = set()  # field names already checked (nodes repeat a few)
_GOOD_NAMES_MAX = 4096
_HTTP1_VERSION_RE = re.compile(rb"HTTP/1\.[0-9]")
_STATUS_CODE_RE = re.compile(rb"[0-9]{3}")
_CHUNK_SIZE_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")

# Fields about one connection only (RFC 9110 7.6.1): a relay drops them both ways.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)


@dataclass(slots=True)
class ResponseHead:
    """Status line and headers of a node's response (names lower-case, as sent otherwise)."""

    status_code: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    content_length: int | None
    chunked: bool
    keep_alive: bool
    # Field names the node's `Connection` lists: hop-by-hop too (RFC 9110 7.6.1).
    connection_options: frozenset[bytes] = frozenset()


Event = ResponseHead | bytes | Sentinel  # END (routercore.sentinel): the response is complete

# Parser states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _UNTIL_EOF, _DONE = range(8)


class ProtocolError(Exception):
    """The bytes from the node are not a valid HTTP/1.1 response."""


class BadStatusLine(ProtocolError):
    """Not even the status line is HTTP/1.x: whatever answered does not speak HTTP (a health
    probe tells this apart from an HTTP answer with a malformed head, which counts as up)."""


class ResponseParser:
    """Sans-IO: `feed(bytes)` returns the events it completed (head, body pieces, END)."""

    __slots__ = ("_buf", "_left", "head_request", "reusable", "state")

    def __init__(self, *, head_request: bool = False) -> None:
        self.state = _HEAD
        self._buf = b""
        self._left = 0
        self.head_request = head_request
        self.reusable = False  # set at END: keep-alive and no stray bytes

    def feed(self, data: bytes) -> list[Event]:
        out: list[Event] = []
        if self._buf:
            data = self._buf + data
            self._buf = b""
        while data:
            state = self.state
            if state in (_LENGTH, _CHUNK_DATA):
                # Body bytes counted by a length: handed on as the socket produced them.
                left = self._left
                if len(data) <= left:
                    out.append(data)
                    left -= len(data)
                    data = b""
                else:
                    out.append(data[:left])
                    data = data[left:]
                    left = 0
                self._left = left
                if left == 0:
                    if state == _LENGTH:
                        self._end(out)
                    else:
                        self.state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                if len(data) < 2:
                    break
                if data[:2] != b"\r\n":
                    raise ProtocolError("missing CRLF after a chunk")
                data = data[2:]
                self.state = _CHUNK_SIZE
            elif state == _CHUNK_SIZE:
                i = _find(data, b"\r\n", 1024, "chunk size line")
                if i < 0:
                    break
                # chunk-size = 1*HEXDIG, then optional BWS ";" extensions (RFC 9112 7.1); int()
                # alone would also take signs, "_", "0x" and surrounding spaces.
                size_text = data[:i].split(b";", 1)[0].rstrip(b" \t")
                if not _CHUNK_SIZE_RE.fullmatch(size_text):
                    raise ProtocolError(f"bad chunk size {size_text[:20]!r}")
                size = int(size_text, 16)
                data = data[i + 2 :]
                if size == 0:
                    self.state = _TRAILERS
                else:
                    self._left = size
                    self.state = _CHUNK_DATA
            elif state == _TRAILERS:
                i = _find(data, b"\r\n", MAX_HEAD_BYTES, "trailers")
                if i < 0:
                    break
                line, data = data[:i], data[i + 2 :]
                if not line:
                    self._end(out)
            elif state == _UNTIL_EOF:
                out.append(data)
                data = b""
            elif state == _HEAD:
                i = _find(data, b"\r\n\r\n", MAX_HEAD_BYTES, "response head")
                if i < 0:
                    break
                head, data = data[:i], data[i + 4 :]
                self._head(head, out)
            else:  # _DONE: bytes after a complete response
                self.reusable = False
                data = b""
        if data:
            self._buf = data
        return out

    def feed_eof(self) -> list[Event]:
        """The node closed: ends a read-until-close body, else it is an error unless done."""
        if self.state == _UNTIL_EOF:
            out: list[Event] = []
            self._end(out)
            self.reusable = False
            return out
        if self.state != _DONE:
            raise ProtocolError("node closed the connection mid-response")
        return []

    @property
    def done(self) -> bool:
        return self.state == _DONE

    def _end(self, out: list[Event]) -> None:
        self.state = _DONE
        out.append(END)

    def _head(self, head: bytes, out: list[Event]) -> None:
        # The status line first: whether the peer speaks HTTP at all (BadStatusLine) before
        # what is wrong with the rest of its head.
        i = head.find(b"\r\n")
        status_line = head if i < 0 else head[:i]
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not _HTTP1_VERSION_RE.fullmatch(parts[0]):
            raise BadStatusLine(f"bad status line {status_line[:40]!r}")
        if not _STATUS_CODE_RE.fullmatch(parts[1]):
            raise BadStatusLine(f"bad status code {parts[1][:10]!r}")
        status = int(parts[1])
        if status < 100:
            raise BadStatusLine(f"bad status code {status}")
        bad = _CONTROL_BYTE.search(head)
        if bad is not None:
            raise ProtocolError(f"control character {bad[0]!r} in the response head")
        crlf = head.count(b"\r\n")
        if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
            raise ProtocolError("bare CR or LF in the response head")
        lines = head.split(b"\r\n")
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = False
        keep_alive = parts[0] == b"HTTP/1.1"
        options: frozenset[bytes] = frozenset()
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or (name not in _GOOD_NAMES and not _good_name(name)):
                raise ProtocolError(f"bad header line {line[:40]!r}")
            name = name.lower()
            value = value.strip()
            headers.append((name, value))
            if name == b"content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise ProtocolError("bad or conflicting content-length")
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
                if not chunked:
                    raise ProtocolError(f"unsupported transfer-encoding {value[:20]!r}")
            elif name == b"connection":
                tokens = {t.strip() for t in value.lower().split(b",")}
                options |= tokens
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
        if 100 <= status < 200:
            if status == 101:
                raise ProtocolError("node switched protocols")
            return  # informational: the real head follows
        if chunked:
            length = None
        out.append(ResponseHead(status, parts[2] if len(parts) > 2 else b"", headers, length,
                                chunked, keep_alive, options))  # fmt: skip
        self.reusable = keep_alive
        if self.head_request or status in (204, 304) or length == 0:
            self._end(out)
        elif chunked:
            self.state = _CHUNK_SIZE
        elif length is not None:
            self._left = length
            self.state = _LENGTH
        else:
            self.reusable = False
            self.state = _UNTIL_EOF


def _find(data: bytes, end: bytes, limit: int, what: str) -> int:
    """Where `end` starts in `data`, or -1 while it has not arrived yet; a ProtocolError once
    more than `limit` bytes wait for it (a node may not make the router buffer without end)."""
    i = data.find(end)
    if i < 0 and len(data) > limit:
        raise ProtocolError(f"{what} too long")
    return i


def _good_name(name: bytes) -> bool:
    if _FIELD_NAME.fullmatch(name) is None:
        return False
    if len(_GOOD_NAMES) >= _GOOD_NAMES_MAX:
        _GOOD_NAMES.clear()
    _GOOD_NAMES.add(name)
    return True
