# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled server-side HTTP/1.1 wire (routercore._wire); twin: routercore/_wire_py.py.

The twin documents the design (a fast path for plain requests, h11 for everything else) and is
the reference: this module must accept, refuse and frame exactly as it does. What changes is
how: the request head is scanned byte by byte over the bytes object's buffer with lookup tables
instead of split() and two regexes, ServerWire is a C type whose per-event methods are C code,
and chunk framing writes into one preallocated bytes object. The h11 fallback, the markers and
the response-field validation (a cache miss, rare) are the twin's own objects.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memchr, memcmp, memcpy

import h11

from routercore.sentinel import END
from routercore._wire_py import (
    _FIELD_LINES,
    _FRAMING_OR_CONNECTION,
    _MAX_LENGTH_DIGITS,
    _TOKEN_START,
    CLOSED,
    NEED_DATA,
    NOT_SIMPLE,
    PAUSED,
    _field_line,
    h11_can_start,
    h11_event,
    h11_next_cycle,
    new_h11,
)

IMPLEMENTATION = "cython"

# Byte classes of the twin's regexes: a token character, and a character a field value may not
# hold at all (\x00 and the whitespace of a bytes regex's \s other than space and tab).
cdef bint _TOKEN[256]
cdef bint _VALUE_BAD[256]
cdef int _c
for _c in range(256):
    _TOKEN[_c] = _c in _TOKEN_START
    _VALUE_BAD[_c] = _c in (0x00, 0x0A, 0x0B, 0x0C, 0x0D)

cdef bytes _HTTP11 = b"1.1"
cdef Py_ssize_t _MAX_DIGITS = _MAX_LENGTH_DIGITS
cdef const char *_HEX = b"0123456789abcdef"

# Fast-path progress through one request/response cycle, and response framings (as the twin's).
cdef enum:
    _IDLE = 0
    _BODY = 1
    _DONE = 2
cdef enum:
    _LENGTH = 0
    _CHUNKED = 1
    _UNTIL_CLOSE = 2


cdef class Head:
    """A request head (names lower-case, values as sent without surrounding whitespace)."""

    cdef public object method, target, http_version, headers, content_length

    def __init__(self, method, target, http_version, headers, content_length):
        self.method = method
        self.target = target
        self.http_version = http_version
        self.headers = headers
        self.content_length = content_length


cdef inline bint _is(const unsigned char *p, Py_ssize_t n, const char *word, Py_ssize_t size):
    """p[:n] equals the lower-case `word`, ignoring ASCII case in p."""
    cdef Py_ssize_t i
    cdef unsigned char c
    if n != size:
        return False
    for i in range(n):
        c = p[i]
        if 0x41 <= c <= 0x5A:
            c += 0x20
        if c != <unsigned char>word[i]:
            return False
    return True


cdef Py_ssize_t _head_end(const unsigned char *p, Py_ssize_t n):
    """Index of the first CRLFCRLF in p[:n], or -1."""
    cdef Py_ssize_t i = 0
    cdef const unsigned char *hit
    while i + 3 < n:
        hit = <const unsigned char *>memchr(p + i, 0x0D, n - 3 - i)
        if hit == NULL:
            return -1
        i = hit - p
        if p[i + 1] == 0x0A and p[i + 2] == 0x0D and p[i + 3] == 0x0A:
            return i
        i += 1
    return -1


cdef bint _bare_lf(const unsigned char *p, Py_ssize_t n):
    """Some LF in p[:n] is not preceded by CR (h11 may read it as a line end)."""
    cdef Py_ssize_t i
    for i in range(n):
        if p[i] == 0x0A and (i == 0 or p[i - 1] != 0x0D):
            return True
    return False


def parse_simple_head(bytes buf, Py_ssize_t max_head):
    """The head at the start of `buf` and its length, NEED_DATA, or NOT_SIMPLE."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t end, i, start, name_end, value_start, value_end, k
    cdef Py_ssize_t hosts = 0
    cdef long long length = -1
    cdef unsigned char c
    cdef bytes name
    cdef char *lower
    cdef Head head
    if n == 0:
        raise IndexError("index out of range")
    if not _TOKEN[p[0]]:
        return NOT_SIMPLE
    end = _head_end(p, n)
    if end < 0:
        if n > max_head or _bare_lf(p, n):
            return NOT_SIMPLE  # too long, or a bare LF that h11 may read as the head's end
        return NEED_DATA
    if end + 4 > max_head:
        return NOT_SIMPLE
    # Request line: token SP [\x21-\x7e]+ SP "HTTP/1.1" CRLF.
    i = 0
    while _TOKEN[p[i]]:
        i += 1
    if p[i] != 0x20:
        return NOT_SIMPLE
    method = PyBytes_FromStringAndSize(<const char *>p, i)
    i += 1
    start = i
    while 0x21 <= p[i] <= 0x7E:
        i += 1
    if i == start or p[i] != 0x20:
        return NOT_SIMPLE
    target = PyBytes_FromStringAndSize(<const char *>p + start, i - start)
    i += 1
    if i + 10 > end + 2 or memcmp(p + i, b"HTTP/1.1\r\n", 10) != 0:
        return NOT_SIMPLE
    i += 10
    if method == b"HEAD" or method == b"CONNECT":
        return NOT_SIMPLE  # bodiless answers and tunnels: h11's framing rules
    headers = []
    # Header lines: token ":" [ \t]* value [ \t]* CRLF, up to the empty line at `end`.
    while i < end:
        start = i
        while _TOKEN[p[i]]:
            i += 1
        if i == start or p[i] != 0x3A:
            return NOT_SIMPLE
        name_end = i
        i += 1
        while p[i] == 0x20 or p[i] == 0x09:
            i += 1
        value_start = value_end = i
        while True:
            c = p[i]
            if c == 0x0D:
                if p[i + 1] != 0x0A:
                    return NOT_SIMPLE
                break
            if _VALUE_BAD[c]:
                return NOT_SIMPLE
            i += 1
            if c != 0x20 and c != 0x09:
                value_end = i
        name = PyBytes_FromStringAndSize(NULL, name_end - start)
        lower = PyBytes_AS_STRING(name)
        for k in range(name_end - start):
            c = p[start + k]
            lower[k] = c + 0x20 if 0x41 <= c <= 0x5A else c
        value = PyBytes_FromStringAndSize(<const char *>p + value_start, value_end - value_start)
        if _is(<const unsigned char *>lower, name_end - start, b"host", 4):
            hosts += 1
        elif _is(<const unsigned char *>lower, name_end - start, b"content-length", 14):
            if length >= 0 or value_end == value_start:
                return NOT_SIMPLE
            if value_end - value_start > _MAX_DIGITS:
                return NOT_SIMPLE
            length = 0
            for k in range(value_start, value_end):
                c = p[k]
                if not 0x30 <= c <= 0x39:
                    return NOT_SIMPLE
                length = length * 10 + (c - 0x30)
        elif _is(<const unsigned char *>lower, name_end - start, b"connection", 10):
            if not _is(p + value_start, value_end - value_start, b"keep-alive", 10):
                return NOT_SIMPLE
        elif (
            _is(<const unsigned char *>lower, name_end - start, b"transfer-encoding", 17)
            or _is(<const unsigned char *>lower, name_end - start, b"expect", 6)
            or _is(<const unsigned char *>lower, name_end - start, b"upgrade", 7)
        ):
            return NOT_SIMPLE
        headers.append((name, value))
        i += 2
    if hosts != 1:
        return NOT_SIMPLE
    head = Head.__new__(Head)
    head.method = method
    head.target = target
    head.http_version = _HTTP11
    head.headers = headers
    head.content_length = None if length < 0 else length
    return head, end + 4


cdef bytes _chunk(object data):
    """One chunk: hex size CRLF data CRLF (b"" for empty data, which would end the body)."""
    cdef Py_ssize_t size, digits, i, k
    cdef char *out
    cdef bytes framed
    if type(data) is not bytes:
        return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
    size = PyBytes_GET_SIZE(data)
    if size == 0:
        return b""
    digits = 0
    i = size
    while i:
        digits += 1
        i >>= 4
    framed = PyBytes_FromStringAndSize(NULL, digits + size + 4)
    out = PyBytes_AS_STRING(framed)
    i = size
    for k in range(digits - 1, -1, -1):
        out[k] = _HEX[i & 15]
        i >>= 4
    out[digits] = 13
    out[digits + 1] = 10
    memcpy(out + digits + 2, PyBytes_AS_STRING(data), size)
    out[digits + 2 + size] = 13
    out[digits + 3 + size] = 10
    return framed


cdef class ServerWire:
    """One connection's HTTP/1.1 state: feed bytes in, take events out, get bytes to send."""

    cdef public object max_header_bytes
    cdef object _h11
    cdef bytes _buf
    cdef bint _eof, _seen_request, _keep_alive, _error
    cdef int _reading, _sending, _framing
    cdef Py_ssize_t _body_left
    cdef long long _send_left

    def __init__(self, max_header_bytes, *, fast=True):
        self.max_header_bytes = max_header_bytes
        self._h11 = None if fast else new_h11(max_header_bytes)
        self._buf = b""
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
    def fast(self):
        """Still on the fast path (no request on this connection needed h11 so far)."""
        return self._h11 is None

    # -- input -------------------------------------------------------------------------------

    def receive_data(self, data):
        """Bytes from the client; b"" is the end of its stream."""
        if self._h11 is not None:
            self._h11.receive_data(data)
            return
        if self._eof:
            raise RuntimeError("received data after the end of the stream")
        if not data:
            self._eof = True
            return
        if type(data) is not bytes:
            data = bytes(data)
        if self._buf:
            self._buf += data
        else:
            self._buf = data

    def next_event(self):
        """The next request event; raises h11.RemoteProtocolError on invalid input."""
        cdef Py_ssize_t left, size
        cdef bytes buf
        cdef Head head
        if self._h11 is not None:
            return self._h11_event()
        if self._reading == _BODY:
            left = self._body_left
            if left == 0:
                self._reading = _DONE
                return END
            buf = self._buf
            size = PyBytes_GET_SIZE(buf)
            if size == 0:
                if self._eof:
                    raise h11.RemoteProtocolError(
                        "peer closed connection without sending complete message body"
                    )
                return NEED_DATA
            if size <= left:
                self._buf = b""
                self._body_left = left - size
                return buf
            self._buf = buf[left:]
            self._body_left = 0
            return buf[:left]
        if self._reading == _DONE:
            return PAUSED
        buf = self._buf
        if PyBytes_GET_SIZE(buf) == 0:
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
    def waiting_for_100_continue(self):
        return self._h11 is not None and self._h11.they_are_waiting_for_100_continue

    @property
    def buffered(self):
        """Bytes received and not yet taken as events (pipelined requests)."""
        if self._h11 is not None:
            return len(self._h11.trailing_data[0])
        return len(self._buf)

    def trailing_data(self):
        if self._h11 is not None:
            return bytes(self._h11.trailing_data[0])
        return bytes(self._buf)

    # -- output ------------------------------------------------------------------------------

    @property
    def can_start_response(self):
        """No response head went out in this cycle (an error answer can still be sent)."""
        if self._h11 is not None:
            return h11_can_start(self._h11)
        return self._sending == _IDLE and not self._error

    def send_continue(self):
        """The `100 Continue` interim answer (only h11 reads requests that expect one)."""
        if self._h11 is None:
            return b""
        return self._h11.send(h11.InformationalResponse(status_code=100, headers=[])) or b""

    def send_head(self, status, headers, reason):
        """Status line and headers; adds the framing header a body of unknown size needs."""
        if self._h11 is not None:
            event = h11.Response(status_code=status, headers=headers, reason=reason)
            return self._h11.send(event) or b""
        if self._error or self._sending != _IDLE:
            raise h11.LocalProtocolError("a response head was already sent")
        return self._head_bytes(status, headers, reason)

    def send_data(self, data):
        cdef Py_ssize_t size
        if self._h11 is not None:
            return self._h11.send(h11.Data(data=data)) or b""
        if self._sending != _BODY:
            raise h11.LocalProtocolError("no response body is being sent")
        if self._framing == _LENGTH:
            size = len(data)
            if size > self._send_left:
                self._error = True
                self._sending = _DONE
                raise h11.LocalProtocolError("Too much data for declared Content-Length")
            self._send_left -= size
            return data
        if self._framing == _CHUNKED:
            return _chunk(data)
        return data

    def send_end(self):
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

    def start_next_cycle(self):
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

    cdef _switch_to_h11(self):
        """Hand the connection to h11 at the start of a cycle, buffered bytes included."""
        conn = new_h11(self.max_header_bytes)
        if self._buf:
            conn.receive_data(self._buf)
        if self._eof:
            conn.receive_data(b"")
        self._buf = b""
        self._h11 = conn

    cdef _h11_event(self):
        return h11_event(self._h11, Head)

    cdef bytes _head_bytes(self, status, headers, reason):
        """The twin's _head_bytes (h11's rules for a response head) with its flags in C.

        The twin finds framing and `connection` lines again by prefix; here their positions
        and presence are noted while the fields go by. An invalid head raises before any state
        changes, as in the twin.
        """
        cdef bint chunked = False, connection = False, keep_alive = self._keep_alive
        cdef int framing = _LENGTH
        cdef long long send_left = 0
        cdef dict known = _FIELD_LINES
        cdef list lines, framing_lines = None
        cdef bytes length = None
        if not 200 <= status < 1000:
            raise h11.LocalProtocolError(f"Response status_code should be in [200, 1000): {status}")
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        for field in headers:
            entry = known.get(field)
            if entry is None:
                entry = _field_line(field)
            lower, line = entry
            if lower in _FRAMING_OR_CONNECTION:
                value = field[1]
                if lower == b"connection":
                    connection = True
                    if b"close" in value.lower():
                        keep_alive = False
                else:
                    if lower == b"content-length":
                        if not value.isdigit():
                            raise h11.LocalProtocolError("bad Content-Length")
                        if length is not None:
                            if value != length:
                                raise h11.LocalProtocolError("conflicting Content-Length headers")
                            continue  # a repeat of the same length is sent once
                        length = bytes(value)
                    elif chunked or value.lower() != b"chunked":
                        raise h11.LocalProtocolError("Only Transfer-Encoding: chunked is supported")
                    else:
                        chunked = True
                    if framing_lines is None:
                        framing_lines = []
                    framing_lines.append(line)
            lines.append(line)
        if status != 204 and status != 304:
            if chunked or length is None:
                # One framing header, last (as h11 writes it): chunked wins over a length.
                if framing_lines is not None:
                    lines = [line for line in lines if line not in framing_lines]
                if self._seen_request:
                    framing = _CHUNKED
                    lines.append(b"transfer-encoding: chunked\r\n")
                else:
                    framing = _UNTIL_CLOSE  # no request read yet: end the body by closing
                    keep_alive = False
            else:
                send_left = int(length)
        if not keep_alive and not connection:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        self._framing = framing
        self._send_left = send_left
        self._keep_alive = keep_alive
        self._sending = _BODY
        return b"".join(lines)
