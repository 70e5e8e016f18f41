# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled upstream response parser (routercore._response_parser); twin:
routercore/_response_parser_py.py, the reference it must match event for event and error for
error (tests/unit/test_upstream_oracle.py holds both against h11 and against each other).

What changes is how: the head is checked and split by one scan over the bytes buffer (the
twin's control-byte regex, CR/LF counts, split() and token regex as byte tests), chunk sizes
are read in C, and the parser is a C type. ResponseHead and ProtocolError are the twin's
objects (END routercore.sentinel's), so callers see one set of types whichever parser runs.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memchr

from routercore.sentinel import END
from routercore._response_parser_py import (
    _FIELD_NAME,
    MAX_HEAD_BYTES,
    BadStatusLine,
    ProtocolError,
    ResponseHead,
)

IMPLEMENTATION = "cython"

cdef Py_ssize_t _MAX_HEAD = MAX_HEAD_BYTES
cdef bint _TOKEN[256]
cdef bint _CONTROL[256]  # the twin's _CONTROL_BYTE class
cdef int _c
for _c in range(256):
    _TOKEN[_c] = _FIELD_NAME.fullmatch(bytes([_c])) is not None
    _CONTROL[_c] = _c <= 0x08 or _c == 0x0B or _c == 0x0C or 0x0E <= _c <= 0x1F or _c == 0x7F

cdef enum:
    _HEAD = 0
    _LENGTH = 1
    _CHUNK_SIZE = 2
    _CHUNK_DATA = 3
    _CHUNK_CRLF = 4
    _TRAILERS = 5
    _UNTIL_EOF = 6
    _DONE = 7

cdef frozenset _NO_OPTIONS = frozenset()


cdef Py_ssize_t _find(const unsigned char *p, Py_ssize_t n, bint double) noexcept:
    """Index of the first CRLF (or CRLFCRLF when `double`) in p[:n], or -1."""
    cdef Py_ssize_t i = 0, need = 4 if double else 2
    cdef const unsigned char *hit
    while i + need <= n:
        hit = <const unsigned char *>memchr(p + i, 0x0D, n - i - need + 1)
        if hit == NULL:
            return -1
        i = hit - p
        if p[i + 1] == 0x0A and (not double or (p[i + 2] == 0x0D and p[i + 3] == 0x0A)):
            return i
        i += 1
    return -1


cdef inline bint _space(unsigned char c) noexcept:
    """bytes.strip()'s whitespace (a head holds no other control bytes by then)."""
    return c == 0x20 or c == 0x09 or c == 0x0A or c == 0x0D or c == 0x0B or c == 0x0C


cdef class ResponseParser:
    """Sans-IO: `feed(bytes)` returns the events it completed (head, body pieces, END)."""

    cdef public int state
    cdef public bint head_request
    cdef public bint reusable
    cdef bytes _buf
    cdef object _left  # a Python int: lengths have no upper bound in the twin either

    def __init__(self, *, head_request=False):
        self.state = _HEAD
        self._buf = b""
        self._left = 0
        self.head_request = head_request
        self.reusable = False  # set at END: keep-alive and no stray bytes

    def feed(self, bytes data):
        cdef list out = []
        cdef Py_ssize_t n, i, end, k
        cdef bint ok
        cdef const unsigned char *p
        cdef unsigned long long size
        cdef unsigned char c
        if PyBytes_GET_SIZE(self._buf):
            data = self._buf + data
            self._buf = b""
        while PyBytes_GET_SIZE(data):
            n = PyBytes_GET_SIZE(data)
            p = <const unsigned char *>PyBytes_AS_STRING(data)
            if self.state == _LENGTH or self.state == _CHUNK_DATA:
                # Body bytes counted by a length: handed on as the socket produced them.
                left = self._left
                if n <= left:
                    out.append(data)
                    left = left - n
                    data = b""
                else:
                    out.append(data[:left])
                    data = data[left:]
                    left = 0
                self._left = left
                if left == 0:
                    if self.state == _LENGTH:
                        self._end(out)
                    else:
                        self.state = _CHUNK_CRLF
            elif self.state == _CHUNK_CRLF:
                if n < 2:
                    break
                if p[0] != 0x0D or p[1] != 0x0A:
                    raise ProtocolError("missing CRLF after a chunk")
                data = data[2:]
                self.state = _CHUNK_SIZE
            elif self.state == _CHUNK_SIZE:
                i = _find(p, n, False)
                if i < 0:
                    if n > 1024:
                        raise ProtocolError("chunk size line too long")
                    break
                # 1*16 HEXDIG, then optional BWS ";" extensions (RFC 9112 7.1).
                end = 0
                while end < i and p[end] != 0x3B:
                    end += 1
                while end > 0 and (p[end - 1] == 0x20 or p[end - 1] == 0x09):
                    end -= 1
                size = 0
                ok = 0 < end <= 16
                if ok:
                    for k in range(end):
                        c = p[k]
                        if 0x30 <= c <= 0x39:
                            size = size * 16 + (c - 0x30)
                        elif 0x41 <= (c & 0xDF) <= 0x46:
                            size = size * 16 + ((c & 0xDF) - 0x37)
                        else:
                            ok = False
                            break
                if not ok:
                    raise ProtocolError(f"bad chunk size {data[:min(end, 20)]!r}")
                data = data[i + 2 :]
                if size == 0:
                    self.state = _TRAILERS
                else:
                    self._left = size
                    self.state = _CHUNK_DATA
            elif self.state == _TRAILERS:
                i = _find(p, n, False)
                if i < 0:
                    if n > _MAX_HEAD:
                        raise ProtocolError("trailers too long")
                    break
                data = data[i + 2 :]
                if i == 0:
                    self._end(out)
            elif self.state == _UNTIL_EOF:
                out.append(data)
                data = b""
            elif self.state == _HEAD:
                i = _find(p, n, True)
                if i < 0:
                    if n > _MAX_HEAD:
                        raise ProtocolError("response head too long")
                    break
                self._head(data, i, out)
                data = data[i + 4 :]
            else:  # _DONE: bytes after a complete response
                self.reusable = False
                data = b""
        if PyBytes_GET_SIZE(data):
            self._buf = data
        return out

    def feed_eof(self):
        """The node closed: ends a read-until-close body, else it is an error unless done."""
        cdef list out
        if self.state == _UNTIL_EOF:
            out = []
            self._end(out)
            self.reusable = False
            return out
        if self.state != _DONE:
            raise ProtocolError("node closed the connection mid-response")
        return []

    @property
    def done(self):
        return self.state == _DONE

    cdef _end(self, list out):
        self.state = _DONE
        out.append(END)

    cdef _head(self, bytes data, Py_ssize_t n, list out):
        """The head in data[:n] (without its blank line), as the twin's _head reads it."""
        cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
        cdef Py_ssize_t i, k, line_end, sp1, sp2, start, colon, vs, ve
        cdef int status
        cdef bint chunked = False, keep_alive
        cdef unsigned char c
        cdef char *lower
        # Status line first (version SP code [SP reason], split at the first two spaces):
        # whether the peer speaks HTTP at all (BadStatusLine), before the rest of its head.
        line_end = _find(p, n, False)
        if line_end < 0:
            line_end = n
        sp1 = sp2 = -1
        for i in range(line_end):
            if p[i] == 0x20:
                if sp1 < 0:
                    sp1 = i
                else:
                    sp2 = i
                    break
        if (
            sp1 != 8
            or p[0] != 0x48 or p[1] != 0x54 or p[2] != 0x54 or p[3] != 0x50
            or p[4] != 0x2F or p[5] != 0x31 or p[6] != 0x2E or not 0x30 <= p[7] <= 0x39
        ):
            raise BadStatusLine(f"bad status line {data[:min(line_end, 40)]!r}")
        start = sp1 + 1
        i = sp2 if sp2 >= 0 else line_end
        if i - start != 3 or not (
            0x30 <= p[start] <= 0x39 and 0x30 <= p[start + 1] <= 0x39 and 0x30 <= p[start + 2] <= 0x39
        ):
            raise BadStatusLine(f"bad status code {data[start:min(i, start + 10)]!r}")
        status = (p[start] - 0x30) * 100 + (p[start + 1] - 0x30) * 10 + (p[start + 2] - 0x30)
        if status < 100:
            raise BadStatusLine(f"bad status code {status}")
        for i in range(n):
            c = p[i]
            if _CONTROL[c]:
                raise ProtocolError(f"control character {data[i:i + 1]!r} in the response head")
            if (c == 0x0D and (i + 1 == n or p[i + 1] != 0x0A)) or (
                c == 0x0A and (i == 0 or p[i - 1] != 0x0D)
            ):
                for k in range(i + 1, n):
                    if _CONTROL[p[k]]:
                        raise ProtocolError(
                            f"control character {data[k:k + 1]!r} in the response head"
                        )
                raise ProtocolError("bare CR or LF in the response head")
        reason = data[sp2 + 1 : line_end] if sp2 >= 0 else b""
        headers = []
        length = None
        keep_alive = p[7] == 0x31
        options = _NO_OPTIONS
        i = line_end + 2
        while i < n + 2 and line_end < n:
            start = i
            line_end = _find(p + start, n - start, False)
            line_end = n if line_end < 0 else start + line_end
            colon = start
            while colon < line_end and p[colon] != 0x3A:
                colon += 1
            if colon == line_end or colon == start:
                raise ProtocolError(f"bad header line {data[start:min(line_end, start + 40)]!r}")
            for k in range(start, colon):
                if not _TOKEN[p[k]]:
                    raise ProtocolError(
                        f"bad header line {data[start:min(line_end, start + 40)]!r}"
                    )
            name = PyBytes_FromStringAndSize(NULL, colon - start)
            lower = PyBytes_AS_STRING(name)
            for k in range(colon - start):
                c = p[start + k]
                lower[k] = c + 0x20 if 0x41 <= c <= 0x5A else c
            vs, ve = colon + 1, line_end
            while vs < ve and _space(p[vs]):
                vs += 1
            while ve > vs and _space(p[ve - 1]):
                ve -= 1
            value = PyBytes_FromStringAndSize(<const char *>p + vs, ve - vs)
            headers.append((name, value))
            if name == b"content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise ProtocolError("bad or conflicting content-length")
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.lower().rpartition(b",")[2].strip() == b"chunked"
                if not chunked:
                    raise ProtocolError(f"unsupported transfer-encoding {value[:20]!r}")
            elif name == b"connection":
                tokens = {t.strip() for t in value.lower().split(b",")}
                options = options | tokens
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
            i = line_end + 2
        if 100 <= status < 200:
            if status == 101:
                raise ProtocolError("node switched protocols")
            return  # informational: the real head follows
        if chunked:
            length = None
        out.append(ResponseHead(status, reason, headers, length, chunked, keep_alive, options))
        self.reusable = keep_alive
        if self.head_request or status == 204 or status == 304 or length == 0:
            self._end(out)
        elif chunked:
            self.state = _CHUNK_SIZE
        elif length is not None:
            self._left = length
            self.state = _LENGTH
        else:
            self.reusable = False
            self.state = _UNTIL_EOF
