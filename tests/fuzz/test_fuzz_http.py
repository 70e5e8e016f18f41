"""Fuzz the real router (every route) with random and malformed HTTP over raw sockets.

Each case is one connection: random request lines, headers, framings, bodies, unicode, huge
numbers and path traversal strings. Every case must get a well-formed HTTP answer (status below
600, a JSON `error` body for errors), no ERROR may be logged, and `GET /healthz` must still
answer afterwards. `FUZZ_EXAMPLES` sets the number of cases (see tests/fuzz/README.md).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.logs import ErrorLog

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
# long runs (FUZZ_EXAMPLES=20000) must not hit the suite's default 120 s per-test timeout
TIMEOUT = max(120, EXAMPLES // 5)
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ROUTER_LIMITS = {
    "header_timeout": 0.1,
    "body_timeout": 0.1,
    "idle_timeout": 5.0,
    "max_header_bytes": 8192,
    "max_body_bytes": 64 * 1024,
    "body_deadline": 0.5,
    "max_inflight_body_bytes": 1024 * 1024,
    "max_connections_per_address": 64,
}

# -- a strict response reader ----------------------------------------------------------------

STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) [\x20-\x7e]*")
HEADER_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\x20-\x7e\x80-\xff\t]*?)[ \t]*")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Wire:
    """A blocking socket with a read buffer."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.eof = False

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            pass  # the server may answer and close before taking everything

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def read_until(self, marker: bytes) -> bytes | None:
        while marker not in self.buf:
            if not self._fill():
                return None
        head, _, self.buf = self.buf.partition(marker)
        return head

    def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise AssertionError(f"connection closed after {len(self.buf)} of {n} bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_answer(self, method: bytes) -> Answer | None:
        """One response, checked for well-formedness; None when closed before any byte."""
        head = self.read_until(b"\r\n\r\n")
        if head is None:
            assert self.buf == b"", f"truncated response head: {self.buf[:300]!r}"
            return None
        lines = head.split(b"\r\n")
        m = STATUS_LINE.fullmatch(lines[0])
        assert m, f"bad status line {lines[0]!r}"
        status = int(m.group(1))
        assert 100 <= status < 600, status
        headers: dict[str, str] = {}
        for line in lines[1:]:
            hm = HEADER_LINE.fullmatch(line)
            assert hm, f"bad header line {line!r}"
            headers[hm.group(1).decode().lower()] = hm.group(2).decode("latin-1")
        if method == b"HEAD" or status in (204, 304) or status < 200:
            body = b""
        elif "content-length" in headers:
            body = self.read_exactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line = self.read_until(b"\r\n")
                assert size_line is not None, "chunked body cut"
                size = int(size_line.split(b";")[0], 16)
                data = self.read_exactly(size + 2)
                assert data.endswith(b"\r\n")
                body += data[:-2]
                if size == 0:
                    break
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        return Answer(status, headers, body)

    def close(self) -> None:
        self.sock.close()


def check_error_body(answer: Answer) -> None:
    """Errors are JSON: {"error": "..."} or, under /v1, {"error": {message, type, code}}."""
    assert answer.headers.get("content-type", "").startswith("application/json"), answer
    body = json.loads(answer.body)
    assert isinstance(body, dict) and "error" in body, body
    err = body["error"]
    if isinstance(err, dict):
        assert set(err) >= {"message", "type", "code"}, err
        assert isinstance(err["message"], str) and isinstance(err["type"], str)
    else:
        assert isinstance(err, str) and err, body
    assert b"Traceback" not in answer.body


def healthz(port: int) -> None:
    w = Wire(port)
    try:
        w.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = w.read_answer(b"GET")
        assert answer is not None and answer.status == 200, answer
        assert json.loads(answer.body) == {"status": "ok"}
    finally:
        w.close()


def describe(records: list[logging.LogRecord]) -> list[str]:
    return [f"{r.name}: {r.getMessage()} {r.exc_text or ''}" for r in records]


# -- strategies ----------------------------------------------------------------------------------

PATHS = [
    "/healthz", "/api/agents", "/api/agents/register", "/api/health", "/api/agents/x",
    "/api/agents/x/disconnect", "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
    "/v1/models", "/v1/models/llama3", "/api/chat", "/api/generate", "/api/embed",
    "/api/embeddings", "/api/tags", "/api/ps", "/api/version", "/api/show", "/metrics",
    "/dashboard", "/ws/dashboard", "/api/dashboard/overview", "/api/dashboard/request-history",
    "/api/dashboard/requests/1", "/api/dashboard/nodes/1", "/", "/v1", "/v1/",
]  # fmt: skip
TRAVERSAL = [
    "/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/static/..%2f..%2fetc/passwd",
    "/dashboard/../../routercore/config.py", "//etc//passwd", "/api/agents/../../../",
    "/..;/..;/", "/%00", "/%c0%ae%c0%ae/", "/api/agents/%2e%2e%2f%2e%2e", "/\\..\\..\\",
    "/dashboard.js/../../../../etc/shadow", "/api/dashboard/requests/../../../etc",
]  # fmt: skip
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "CONNECT"]
HEADER_NAMES = [
    "Content-Type", "Accept", "Authorization", "Connection", "Expect", "Upgrade", "Cookie",
    "Sec-WebSocket-Key", "Sec-WebSocket-Version", "X-Request-Id", "Transfer-Encoding",
    "Content-Length", "Host", "User-Agent", "Range", "If-None-Match", "Origin",
    "Access-Control-Request-Method",
]  # fmt: skip
HEADER_VALUES = [
    "application/json", "close", "keep-alive", "upgrade", "Upgrade", "websocket",
    "100-continue", "chunked", "gzip", "chunked, gzip", "identity", "Bearer x",
    "Bearer test-admin-token", "13", "dGhlIHNhbXBsZSBub25jZQ==", "-1", "0", "1e9",
    "99999999999999999999999999999999", "0x10", " 5", "5 ", "bytes=0-", "*",
    "http://evil.example", "http://fuzz", "null", "https://fuzz:443", "POST",
]  # fmt: skip

text = st.text(max_size=40)
huge = st.integers(min_value=-(10**40), max_value=10**40).map(str)
path = st.one_of(
    st.sampled_from(PATHS),
    st.sampled_from(TRAVERSAL),
    st.builds(lambda p, q: p + "?" + q, st.sampled_from(PATHS), text),
    text.map(lambda t: "/" + t),
    st.just("/" + "a" * 9000),
    st.just("*"),
    st.just("http://example.com/healthz"),
)
header_value = st.one_of(st.sampled_from(HEADER_VALUES), text, huge)
header = st.tuples(st.one_of(st.sampled_from(HEADER_NAMES), text), header_value)
body = st.one_of(
    st.just(b""),
    st.binary(max_size=300),
    text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.just(b'{"model": "llama3", "messages": [], "stream": true}'),
    st.just(b'{"machine_name": "fuzz", "runtime_port": 1}'),
    st.integers(min_value=0, max_value=200_000).map(lambda n: b"b" * n),
)


def encode(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


@st.composite
def structured_request(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A request built from parts; framing honest, lying, chunked or missing."""
    method = draw(st.one_of(st.sampled_from(METHODS), text))
    target = draw(path)
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1 x"]))
    headers = draw(st.lists(header, max_size=6))
    if draw(st.booleans()):
        headers.insert(0, ("Host", "fuzz"))
    payload = draw(body)
    framing = draw(
        st.sampled_from(["length", "length", "chunked", "none", "lie", "bad-chunks", "tiny-chunks"])
    )
    if framing == "length":
        headers.append(("Content-Length", str(len(payload))))
    elif framing == "lie":
        headers.append(("Content-Length", draw(huge)))
    elif framing == "tiny-chunks":
        # around the allowance for 1-byte chunks (1024 + 1 per 512 bytes): answered or 400
        headers.append(("Transfer-Encoding", "chunked"))
        payload = b"1\r\nx\r\n" * draw(st.integers(900, 3000)) + b"0\r\n\r\n"
    elif framing in ("chunked", "bad-chunks"):
        headers.append(("Transfer-Encoding", "chunked"))
        if framing == "chunked":
            payload = (b"%x\r\n" % len(payload) + payload + b"\r\n" if payload else b"") + (
                b"0\r\n\r\n"
            )
        else:
            payload = draw(st.sampled_from([b"zz\r\n", b"ffffffffffffffffffff\r\n", b"5\r\nab"]))
    sep = draw(st.sampled_from(["\r\n", "\r\n", "\n", "\r"]))
    head = f"{method} {target} {version}" + sep
    head += "".join(f"{name}: {value}{sep}" for name, value in headers) + sep
    return encode(method), encode(head) + payload


SAFE_HEADERS = st.sampled_from(
    [
        ("Content-Type", "application/json"),
        ("Accept", "*/*"),
        ("Authorization", "Bearer test-admin-token"),
        ("Authorization", "Bearer wrong"),
        ("Authorization", "Basic Zm9vOmJhcg=="),
        ("Connection", "close"),
        ("Connection", "keep-alive"),
        ("Expect", "100-continue"),
        ("X-Request-Id", "fuzz"),
        ("User-Agent", "fuzz/1.0 \u00e9".encode().decode("latin-1")),
        ("Accept-Encoding", "gzip"),
        ("Upgrade", "websocket"),
        ("Origin", "http://fuzz"),  # the router's own origin (Host: fuzz)
        ("Origin", "http://evil.example"),
        ("Origin", "null"),
    ]
)
JSON_BODIES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
).map(lambda v: json.dumps(v).encode())


@st.composite
def valid_request(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A well-framed request that reaches the app: random route, query, headers and body."""
    method = draw(st.sampled_from(METHODS[:7]))
    target = draw(
        st.one_of(
            st.sampled_from(PATHS),
            st.sampled_from(TRAVERSAL),
            st.builds(lambda p, q: p + "?" + quote(q, safe="=&"), st.sampled_from(PATHS), text),
            text.map(lambda t: "/" + quote(t, safe="/")),
            st.builds(lambda t: "/api/agents/" + quote(t, safe=""), text),
        )
    )
    headers = [("Host", "fuzz"), *draw(st.lists(SAFE_HEADERS, max_size=4))]
    payload = draw(st.one_of(JSON_BODIES, body)) if method != "GET" else b""
    if draw(st.booleans()):
        headers.append(("Content-Length", str(len(payload))))
    else:
        headers.append(("Transfer-Encoding", "chunked"))
        step = draw(st.one_of(st.integers(1, 64), st.just(1)))
        pieces = [payload[i : i + step] for i in range(0, len(payload), step)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    head = f"{method} {target} HTTP/1.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    return method.encode(), head.encode("latin-1") + payload


raw_request = st.one_of(
    valid_request(),
    valid_request(),
    structured_request(),
    st.binary(min_size=1, max_size=500).map(lambda b: (b"", b)),
    st.lists(st.sampled_from([*METHODS, " ", "/", "\r\n", ":", "HTTP/1.1", "\x00", "é", "\t"])).map(
        lambda parts: (b"", encode("".join(parts)) + b"\r\n\r\n")
    ),
)


# -- the test ------------------------------------------------------------------------------------


def run_case(port: int, method: bytes, data: bytes) -> list[Answer]:
    """Send one case on a fresh connection; return the answers read before the server stopped."""
    w = Wire(port)
    answers: list[Answer] = []
    try:
        w.send(data)
        while True:
            answer = w.read_answer(method or b"GET")
            if answer is None:
                break
            answers.append(answer)
            if answer.status == 100:
                continue  # the final answer follows (the body was already sent)
            if answer.status >= 400 and method != b"HEAD":
                check_error_body(answer)
            # one final answer per case is enough; the connection may stay open (keep-alive)
            break
    finally:
        w.close()
    return answers


@pytest.mark.timeout(TIMEOUT)
@FUZZ_SETTINGS
@given(case=raw_request)
def test_fuzz_raw_http_against_the_router(
    case: tuple[bytes, bytes],
    fuzz_router: Any,
    error_log: ErrorLog,
    fuzz_counter: Callable[[], None],
) -> None:
    method, data = case
    fuzz_counter()
    answers = run_case(fuzz_router.port, method, data)
    assert answers, f"no answer at all for {data[:200]!r}"
    assert answers[-1].status != 100 or len(answers) == 1
    assert not error_log.records, describe(error_log.records)
    healthz(fuzz_router.port)


@pytest.fixture
def fuzz_router(router_factory: Callable[..., Any]) -> Any:
    return router_factory(**ROUTER_LIMITS)


@pytest.fixture
def fuzz_counter(request: pytest.FixtureRequest) -> Iterator[Callable[[], None]]:
    """Counts cases; the total shows in the terminal summary and in junit XML."""
    count = [0]

    def bump() -> None:
        count[0] += 1

    yield bump
    request.node.user_properties.append(("fuzz_cases", count[0]))
    print(f"\n{request.node.name}: {count[0]} fuzz cases")


def test_healthz_survives_a_burst_of_garbage_connections(
    fuzz_router: Any, error_log: ErrorLog
) -> None:
    """Many bad connections at once, left open or cut: the server keeps answering."""
    port = fuzz_router.port
    socks = []
    for i in range(50):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall([b"GET / HTTP/1.1\r\n", b"\x00\xff" * 10, b"POST /api/chat HTTP/1.1\r\n"][i % 3])
        socks.append(s)
    for s in socks[::2]:
        s.close()
    healthz(port)
    for s in socks[1::2]:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # reset
    healthz(port)
    assert not error_log.records, describe(error_log.records)
