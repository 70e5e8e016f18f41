"""Sans-IO server side of one HTTP/1.1 connection (pure-Python twin of ext/wire.pyx, which
builds routercore._wire; routercore/http/wire.py picks one): a fast path for the common
request shape, h11 for everything else.

Nearly every request a router sees looks alike: HTTP/1.1, one Host header, a Content-Length
body or none, and no Expect, Transfer-Encoding, Upgrade or Connection options. For those,
`parse_simple_head` reads the head with bytes methods and two regexes, and responses are
framed from a few joined pieces: a fraction of h11's per-event cost, which profiling showed to
be the largest part of the router's CPU time per proxied request.

Anything outside that shape, or anything doubtful, goes to h11 unchanged: a fresh
`h11.Connection` takes over the connection's buffered bytes for the rest of its life. h11 stays
the judge of what is invalid and words the errors; the fast path only accepts requests h11
accepts, with the same meaning (`tests/unit/test_wire.py` compares the two on generated
input). Errors use h11's exception types so the server treats both paths alike.
"""

from __future__ import annotations

import re

import h11

from routercore.sentinel import END, Sentinel

IMPLEMENTATION = "python"

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
# The same grammar as h11's _abnf (request line, header field), restricted to HTTP/1.1.
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/1\.1")
_FIELD_VALUE = rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?"
_HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + _FIELD_VALUE + rb")[ \t]*")
_FIELD_NAME = re.compile(_TOKEN)
_FIELD_VALUE_RE = re.compile(_FIELD_VALUE)
_TOKEN_START = frozenset(
    b"-!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
# Request headers whose presence changes framing or connection handling: h11 decides those.
_SPECIAL = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"expect", b"upgrade", b"connection"}
)
_MAX_LENGTH_DIGITS = 18
_FRAMING_FIELDS = (b"content-length:", b"transfer-encoding:")


class Head:
    """A request head (names lower-case, values as sent without surrounding whitespace)."""

    __slots__ = ("content_length", "headers", "http_version", "method", "target")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        http_version: bytes,
        headers: list[tuple[bytes, bytes]],
        content_length: int | None,
    ) -> None:
        self.method = method
        self.target = target
        self.http_version = http_version
        self.headers = headers
        self.content_length = content_length


NEED_DATA = Sentinel("NEED_DATA")  # no complete event in the buffer yet
PAUSED = Sentinel("PAUSED")  # the request is complete; nothing more is read until the answer
CLOSED = Sentinel("CLOSED")  # the client closed the connection between requests
NOT_SIMPLE = Sentinel("NOT_SIMPLE")  # parse_simple_head: outside the fast path's shape
# END (routercore.sentinel): the request body is complete.

Event = Head | bytes | bytearray | Sentinel


def parse_simple_head(buf: bytes, max_head: int) -> tuple[Head, int] | Sentinel:
    """The head at the start of `buf` and its length, NEED_DATA, or NOT_SIMPLE."""
    if buf[0] not in _TOKEN_START:
        return NOT_SIMPLE
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > max_head or buf.count(b"\n") != buf.count(b"\r\n"):
            return NOT_SIMPLE  # too long, or a bare LF that h11 may read as the head's end
        return NEED_DATA
    if end + 4 > max_head:
        return NOT_SIMPLE
    lines = buf[:end].split(b"\r\n")
    request_line = _REQUEST_LINE.fullmatch(lines[0])
    if request_line is None:
        return NOT_SIMPLE
    method = request_line[1]
    if method == b"HEAD" or method == b"CONNECT":
        return NOT_SIMPLE  # bodiless answers and tunnels: h11's framing rules
    headers = []
    hosts = 0
    length: int | None = None
    match = _HEADER_LINE.fullmatch
    for i in range(1, len(lines)):
        field = match(lines[i])
        if field is None:
            return NOT_SIMPLE
        name = field[1].lower()
        value = field[2]
        if name in _SPECIAL:
            if name == b"host":
                hosts += 1
            elif name == b"content-length":
                if length is not None or not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                    return NOT_SIMPLE
                length = int(value)
            elif name != b"connection" or value.lower() != b"keep-alive":
                return NOT_SIMPLE
        headers.append((name, value))
    if hosts != 1:
        return NOT_SIMPLE
    return Head(method, request_line[2], b"1.1", headers, length), end + 4


_FRAMING_OR_CONNECTION = frozenset({b"content-length", b"transfer-encoding", b"connection"})
# Response fields already validated, with their lower-case name and their line: most answers
# repeat the same few fields (server, content-type, x-router-node, ...).
_FIELD_LINES: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}
_FIELD_LINES_MAX = 4096


def _field_line(field: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    """Validate one response field as h11 does; remember it with its output line."""
    name, value = field
    if _FIELD_NAME.fullmatch(name) is None:
        raise h11.LocalProtocolError(f"Illegal header name {name!r}")
    if _FIELD_VALUE_RE.fullmatch(value) is None:
        raise h11.LocalProtocolError(f"Illegal header value {value!r}")
    entry = (name.lower(), b"%s: %s\r\n" % (name, value))
    if len(_FIELD_LINES) >= _FIELD_LINES_MAX:
        _FIELD_LINES.clear()
    _FIELD_LINES[(bytes(name), bytes(value))] = entry
    return entry


# The h11 side of a wire, shared with the compiled one (ext/wire.pyx): none of it is hot.


def new_h11(max_header_bytes: int) -> h11.Connection:
    return h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_bytes)


def h11_event(conn: h11.Connection, head: type[Head]) -> Event:
    """h11's next event as a wire event; requests become `head` (the caller's Head class)."""
    event = conn.next_event()
    kind = type(event)
    if kind is h11.Data:
        return event.data  # type: ignore[union-attr]
    if kind is h11.Request:
        return head(
            event.method,  # type: ignore[union-attr]
            event.target,  # type: ignore[union-attr]
            event.http_version,  # type: ignore[union-attr]
            list(event.headers),  # type: ignore[union-attr]
            None,
        )
    if kind is h11.EndOfMessage:
        return END
    if kind is h11.ConnectionClosed:
        return CLOSED
    if event is h11.PAUSED:
        return PAUSED
    return NEED_DATA


def h11_can_start(conn: h11.Connection) -> bool:
    return conn.our_state in (h11.IDLE, h11.SEND_RESPONSE)


def h11_next_cycle(conn: h11.Connection) -> bool:
    """Start h11's next cycle; False: the connection must be closed."""
    if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
        return False
    try:
        conn.start_next_cycle()
    except h11.LocalProtocolError:
        return False
    return True


# Fast-path progress through one request/response cycle.
_IDLE, _BODY, _DONE = 0, 1, 2
# Response framings.
_LENGTH, _CHUNKED, _UNTIL_CLOSE = 0, 1, 2


class ServerWire:
    """One connection's HTTP/1.1 state: feed bytes in, take events out, get bytes to send."""

    __slots__ = (
        "_body_left",
        "_buf",
        "_eof",
        "_error",
        "_framing",
        "_h11",
        "_keep_alive",
        "_reading",
        "_seen_request",
        "_send_left",
        "_sending",
        "max_header_bytes",
    )

    def __init__(self, max_header_bytes: int, *, fast: bool = True) -> None:
        self.max_header_bytes = max_header_bytes
        self._h11: h11.Connection | None = None if fast else new_h11(max_header_bytes)
        self._buf: bytes = b""
        self._eof = False
        self._reading = _IDLE
        self._body_left = 0
        self._seen_request = False
        self._sending = _IDLE
        self._framing = _LENGTH
        self._send_left = 0
        self._keep_alive = True
        self._error = False

    @property
    def fast(self) -> bool:
        """Still on the fast path (no request on this connection needed h11 so far)."""
        return self._h11 is None

    # -- input -------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; b"" is the end of its stream."""
        if self._h11 is not None:
            self._h11.receive_data(data)
            return
        if self._eof:
            raise RuntimeError("received data after the end of the stream")
        if not data:
            self._eof = True
        elif self._buf:
            self._buf += data
        else:
            self._buf = data

    def next_event(self) -> Event:
        """The next request event; raises h11.RemoteProtocolError on invalid input."""
        if self._h11 is not None:
            return self._h11_event()
        reading = self._reading
        if reading == _BODY:
            left = self._body_left
            if left == 0:
                self._reading = _DONE
                return END
            buf = self._buf
            if not buf:
                if self._eof:
                    raise h11.RemoteProtocolError(
                        "peer closed connection without sending complete message body"
                    )
                return NEED_DATA
            if len(buf) <= left:
                self._buf = b""
                self._body_left = left - len(buf)
                return buf
            self._buf = buf[left:]
            self._body_left = 0
            return buf[:left]
        if reading == _DONE:
            return PAUSED
        buf = self._buf
        if not buf:
            return CLOSED if self._eof else NEED_DATA
        parsed = parse_simple_head(buf, self.max_header_bytes)
        if parsed is NEED_DATA and not self._eof:
            return NEED_DATA
        if type(parsed) is not tuple:
            self._switch_to_h11()
            return self._h11_event()
        head, size = parsed
        self._buf = buf[size:]
        self._reading = _BODY
        self._seen_request = True
        self._body_left = head.content_length or 0
        return head

    @property
    def waiting_for_100_continue(self) -> bool:
        return self._h11 is not None and self._h11.they_are_waiting_for_100_continue

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken as events (pipelined requests)."""
        if self._h11 is not None:
            return len(self._h11.trailing_data[0])
        return len(self._buf)

    def trailing_data(self) -> bytes:
        if self._h11 is not None:
            return bytes(self._h11.trailing_data[0])
        return bytes(self._buf)

    # -- output ------------------------------------------------------------------------------

    @property
    def can_start_response(self) -> bool:
        """No response head went out in this cycle (an error answer can still be sent)."""
        if self._h11 is not None:
            return h11_can_start(self._h11)
        return self._sending == _IDLE and not self._error

    def send_continue(self) -> bytes:
        """The `100 Continue` interim answer (only h11 reads requests that expect one)."""
        if self._h11 is None:
            return b""
        return self._h11.send(h11.InformationalResponse(status_code=100, headers=[])) or b""

    def send_head(self, status: int, headers: list[tuple[bytes, bytes]], reason: bytes) -> bytes:
        """Status line and headers; adds the framing header a body of unknown size needs."""
        if self._h11 is not None:
            event = h11.Response(status_code=status, headers=headers, reason=reason)
            return self._h11.send(event) or b""
        if self._error or self._sending != _IDLE:
            raise h11.LocalProtocolError("a response head was already sent")
        return self._head_bytes(status, headers, reason)

    def send_data(self, data: bytes) -> bytes:
        if self._h11 is not None:
            return self._h11.send(h11.Data(data=data)) or b""
        if self._sending != _BODY:
            raise h11.LocalProtocolError("no response body is being sent")
        framing = self._framing
        if framing == _LENGTH:
            if len(data) > self._send_left:
                self._error = True
                self._sending = _DONE
                raise h11.LocalProtocolError("Too much data for declared Content-Length")
            self._send_left -= len(data)
            return data
        if framing == _CHUNKED:
            return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
        return data

    def send_end(self) -> bytes:
        if self._h11 is not None:
            return self._h11.send(h11.EndOfMessage()) or b""
        if self._sending != _BODY:
            raise h11.LocalProtocolError("no response body is being sent")
        self._sending = _DONE
        if self._framing == _LENGTH:
            if self._send_left:
                self._error = True
                raise h11.LocalProtocolError("Too little data for declared Content-Length")
            return b""
        if self._framing == _CHUNKED:
            return b"0\r\n\r\n"
        self._keep_alive = False
        return b""

    # -- cycles ------------------------------------------------------------------------------

    def start_next_cycle(self) -> bool:
        """Get ready for the next request on this connection; False: it must be closed."""
        if self._h11 is not None:
            return h11_next_cycle(self._h11)
        if self._error or not self._keep_alive or self._reading != _DONE:
            return False
        if self._sending != _DONE:
            return False
        self._reading = self._sending = _IDLE
        return True

    # -- internals ---------------------------------------------------------------------------

    def _switch_to_h11(self) -> None:
        """Hand the connection to h11 at the start of a cycle, buffered bytes included."""
        conn = new_h11(self.max_header_bytes)
        if self._buf:
            conn.receive_data(self._buf)
        if self._eof:
            conn.receive_data(b"")
        self._buf = b""
        self._h11 = conn

    def _h11_event(self) -> Event:
        assert self._h11 is not None
        return h11_event(self._h11, Head)

    def _head_bytes(self, status: int, headers: list[tuple[bytes, bytes]], reason: bytes) -> bytes:
        """h11's rules for a response head: validated fields, one framing, keep-alive.

        An invalid head raises before any state changes (as h11 validates the event before
        sending it), so the caller can still answer with an error instead.
        """
        if not 200 <= status < 1000:
            raise h11.LocalProtocolError(f"Response status_code should be in [200, 1000): {status}")
        out = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        length: bytes | None = None
        chunked = False
        keep_alive = self._keep_alive
        known = _FIELD_LINES
        for field in headers:
            entry = known.get(field)
            if entry is None:
                entry = _field_line(field)
            lower, line = entry
            if lower in _FRAMING_OR_CONNECTION:
                value = field[1]
                if lower == b"content-length":
                    if not value.isdigit():
                        raise h11.LocalProtocolError("bad Content-Length")
                    if length is not None:
                        if value != length:
                            raise h11.LocalProtocolError("conflicting Content-Length headers")
                        continue  # a repeat of the same length is sent once
                    length = value
                elif lower == b"transfer-encoding":
                    if chunked or value.lower() != b"chunked":
                        raise h11.LocalProtocolError("Only Transfer-Encoding: chunked is supported")
                    chunked = True
                elif b"close" in value.lower():
                    keep_alive = False
            out.append(line)
        send_left = 0
        if status == 204 or status == 304:
            framing = _LENGTH
        elif chunked or length is None:
            # One framing header, last (as h11 writes it): chunked wins over a length.
            out = [line for line in out if not line.lower().startswith(_FRAMING_FIELDS)]
            if self._seen_request:
                framing = _CHUNKED
                out.append(b"transfer-encoding: chunked\r\n")
            else:
                # No request read yet (an early error answer): the client's version is unknown,
                # so end the body by closing, as h11 does.
                framing = _UNTIL_CLOSE
                keep_alive = False
        else:
            framing, send_left = _LENGTH, int(length)
        if not keep_alive and not any(line.lower().startswith(b"connection:") for line in out[1:]):
            out.append(b"connection: close\r\n")
        out.append(b"\r\n")
        self._framing, self._send_left, self._keep_alive = framing, send_left, keep_alive
        self._sending = _BODY
        return b"".join(out)
