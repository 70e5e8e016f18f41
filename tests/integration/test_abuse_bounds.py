"""Exhaustion attacks on a real router over loopback sockets, each shown to be bounded.

Auth and routing decided from the head (nobody makes the router read a body it refuses), the
in-flight body memory cap, tiny chunks, the whole-body deadline, the per-address connection
cap, JSON bombs and the WebSocket ping flood. Assertions are on behaviour (what is answered,
before which byte, which connection is closed), never on wall-clock time.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any

import pytest

from tests.support.polling import wait_until
from tests.support.routers import http
from tests.support.websocket import frame, server_frames, upgrade_request

MODEL_BODY = b'{"model": "nobody-serves-this", "messages": []}'


class Raw:
    """A blocking loopback socket that reads one HTTP answer (Content-Length framed)."""

    def __init__(self, port: int, source: str = "127.0.0.1", rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((source, 0))
        self.sock.settimeout(15)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""

    def send(self, data: bytes) -> bool:
        """False once the router has closed or reset the connection."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def answered(self) -> bool:
        """Whether any answer byte arrived (without waiting)."""
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(65536)
            self.buf += data
            return True  # data, or b"" = closed
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            self.sock.setblocking(True)
            self.sock.settimeout(15)

    def answer(self) -> tuple[int, dict[str, str], Any]:
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(65536)
            assert data, f"closed without an answer: {self.buf!r}"
            self.buf += data
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            data = self.sock.recv(65536)
            assert data, "answer body cut"
            rest += data
        self.buf = rest[length:]
        body = json.loads(rest[:length]) if length else None
        return int(lines[0].split()[1]), headers, body

    def closed(self) -> bool:
        """True once the router closes (EOF or reset); what it sent meanwhile joins `buf`."""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def head(path: str, framing: str, extra: str = "", method: str = "POST") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"{framing}\r\n{extra}\r\n"
    ).encode()


def request_head(router: Any, *head_args: str, body: bytes = b"") -> Raw:
    """A new connection to `router` that has sent `head(*head_args)` and `body` so far."""
    c = Raw(router.port)
    c.send(head(*head_args) + body)
    return c


def held_body_bytes(router: Any) -> int:
    return int(router.call(lambda: router.service.server.state.body_bytes))


# -- 1. auth and routing from the head -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "method", "extra", "status"),
    [
        ("/v1/chat/completions", "POST", "", 401),
        ("/api/chat", "POST", "Authorization: Bearer wrong\r\n", 401),
        ("/api/health", "POST", "", 401),  # a heartbeat without any agent token
        ("/api/agents/register", "POST", "", 401),  # registration token set
        ("/no/such/endpoint", "POST", "", 404),
        ("/v1/chat/completions", "PUT", "", 405),
    ],
)
def test_refusals_are_answered_from_the_head_without_reading_the_body(
    router_factory: Any, path: str, method: str, extra: str, status: int
) -> None:
    router = router_factory(api_keys=("sk-right",), registration_token="reg-secret")
    for framing in ("Content-Length: 33554000", "Transfer-Encoding: chunked"):
        c = request_head(router, path, framing, extra, method)  # the body never comes
        got, headers, body = c.answer()
        assert got == status, body
        assert headers["connection"] == "close"
        assert "error" in body
        if path.startswith("/v1"):
            assert set(body["error"]) == {"message", "type", "code"}
        assert c.closed()
        c.close()
    assert held_body_bytes(router) == 0


def test_a_flood_of_tiny_chunks_without_credentials_costs_no_parsing(router_factory: Any) -> None:
    """The attack: 1-byte chunks, no key. The 401 comes from the head and the rest is dropped."""
    router = router_factory(api_keys=("sk-right",))
    c = request_head(router, "/v1/chat/completions", "Transfer-Encoding: chunked")
    assert c.answer()[0] == 401
    sent = 0
    while sent < 2000 and c.send(b"1\r\nA\r\n" * 1000):
        sent += 1
    assert c.closed()
    # The router never parsed a chunk: no body was ever counted.
    assert held_body_bytes(router) == 0


def test_authorized_request_with_a_body_is_still_served(router_factory: Any) -> None:
    router = router_factory(api_keys=("sk-right",))
    for framing in (f"Content-Length: {len(MODEL_BODY)}", "Transfer-Encoding: chunked"):
        c = Raw(router.port)
        payload = MODEL_BODY
        if framing.startswith("Transfer"):
            payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(MODEL_BODY), MODEL_BODY)
        c.send(head("/v1/chat/completions", framing, "Authorization: Bearer sk-right\r\n"))
        c.send(payload)
        status, headers, body = c.answer()
        assert status == 404 and body["error"]["code"] == "model_not_found"
        assert headers.get("connection") != "close"  # keep-alive as before
        c.close()


def test_tiny_chunks_past_the_allowance_get_400_before_the_body_ends(router_factory: Any) -> None:
    router = router_factory(body_timeout=60.0)
    c = request_head(router, "/api/chat", "Transfer-Encoding: chunked")
    c.send(b"1\r\n \r\n" * 1100)  # 1100 one-byte chunks, and no last chunk
    status, _, body = c.answer()
    assert status == 400 and "chunks" in body["error"]
    assert c.closed()
    wait_until(lambda: held_body_bytes(router) == 0, message="body released")
    # Ordinary chunk sizes are read whole.
    c = request_head(router, "/api/chat", "Transfer-Encoding: chunked")
    pieces = [MODEL_BODY[:20], MODEL_BODY[20:]]
    c.send(b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n")
    assert c.answer()[0] == 404
    c.close()


def test_body_memory_cap_turns_new_bodies_away_with_503(router_factory: Any) -> None:
    router = router_factory(max_inflight_body_bytes=1_000_000, max_body_bytes=1_000_000)
    holder = request_head(router, "/api/chat", "Content-Length: 900000")
    holder.send(b" " * 700_000)  # held, one read at a time, until the body is complete
    wait_until(lambda: held_body_bytes(router) == 700_000, message="700 KB held")
    # Declared too much for what is left: refused at the head.
    late = request_head(router, "/api/chat", "Content-Length: 400000")
    status, headers, body = late.answer()
    assert status == 503 and headers["retry-after"] == "1", body
    assert late.closed()
    # Chunked (no declared size): refused once what it sent crosses the cap.
    chunky = request_head(router, "/api/chat", "Transfer-Encoding: chunked")
    chunky.send(b"%x\r\n%s\r\n" % (350_000, b" " * 350_000))
    assert chunky.answer()[0] == 503
    assert held_body_bytes(router) == 700_000
    # The holder is not hurt: it finishes and is answered; then there is room again.
    holder.send(b" " * 199_988 + MODEL_BODY[:12])
    assert holder.answer()[0] == 400  # not JSON, but read and handled
    wait_until(lambda: held_body_bytes(router) == 0, message="memory released")
    again = request_head(router, "/api/chat", f"Content-Length: {len(MODEL_BODY)}", body=MODEL_BODY)
    assert again.answer()[0] == 404
    again.close()


# -- 2. slow bodies --------------------------------------------------------------------------------


def test_a_trickled_body_is_cut_at_the_whole_body_deadline(router_factory: Any) -> None:
    """One byte every 0.2 s keeps every read under body_timeout; the deadline still ends it."""
    router = router_factory(body_timeout=30.0, body_deadline=1.0)
    c = request_head(router, "/api/chat", "Content-Length: 200")
    sent = 0
    while not c.answered() and sent < 200:
        c.send(b" ")
        sent += 1
        time.sleep(0.2)
    assert sent < 200, "the whole body was accepted at one byte per 0.2 s"
    status, _, body = c.answer()
    assert status == 408 and "body" in body["error"]
    assert c.closed()


def test_connections_per_address_are_capped_and_other_addresses_are_served(
    router_factory: Any,
) -> None:
    router = router_factory(max_connections_per_address=5, body_timeout=30.0)
    trickling = []
    for _ in range(5):
        c = request_head(router, "/api/chat", "Content-Length: 100", body=b"{")
        trickling.append(c)
    over = Raw(router.port)
    status, headers, _ = over.answer()
    assert status == 503 and headers["retry-after"] == "1"
    assert over.closed()
    # Another address still gets in while the first one is at its cap.
    other = Raw(router.port, source="127.0.0.2")
    other.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert other.answer()[0] == 200
    other.close()
    # A slot freed is a slot usable again.
    trickling.pop().close()

    def healthz_from_first_address() -> bool:
        c = Raw(router.port)
        c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        try:
            return c.answer()[0] == 200
        except (AssertionError, OSError):
            return False
        finally:
            c.close()

    wait_until(healthz_from_first_address, message="a free slot for 127.0.0.1")
    for c in trickling:
        c.close()


# -- 4. JSON bombs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "payload", "what"),
    [
        ("/api/chat", b'{"model": "m", "messages": [' + b"[]," * 400_000 + b"[]]}", "arrays"),
        ("/v1/chat/completions", b'{"model": "m", "x": [' + b"{}," * 400_000 + b"{}]}", "arrays"),
        ("/api/generate", b'{"model": "m", "x": [' + b"0," * 1_200_000 + b"0]}", "values"),
        ("/v1/embeddings", b'{"model": "m", "input": [' + b'"",' * 1_200_000 + b'""]}', "values"),
    ],
)
def test_json_bombs_get_400_in_the_apis_format(
    router: Any, path: str, payload: bytes, what: str
) -> None:
    status, _, body = http("POST", router.url + path, raw=payload)
    assert status == 400, body
    if path.startswith("/v1"):
        assert body["error"]["code"] == "json_too_complex"
        assert what in body["error"]["message"]
    else:
        assert what in body["error"]
    assert http("GET", router.url + "/healthz")[0] == 200


def test_large_bodies_within_the_bounds_are_still_routed(router: Any) -> None:
    """A long prompt full of commas and brackets is one string, not a million values."""
    prompt = "a, [b], {c}, " * 200_000  # 2.6 MB, 600k commas inside one string
    payload = {"model": "nobody-serves-this", "messages": [{"role": "user", "content": prompt}]}
    status, _, body = http("POST", router.url + "/api/chat", payload)
    assert status == 404 and "nobody-serves-this" in body["error"]
    tokens = {"model": "nobody-serves-this", "input": [list(range(500)) for _ in range(200)]}
    assert http("POST", router.url + "/v1/embeddings", tokens)[0] == 404


def test_a_32_mib_json_bomb_does_not_balloon_the_router(router_process: Any) -> None:
    """The reported attack on a router process: 32 MiB of empty lists grew it by ~1 GiB."""
    proc = router_process()

    def peak_rss_mib() -> float:
        assert proc.proc is not None
        with open(f"/proc/{proc.proc.pid}/status") as fh:
            line = next(x for x in fh if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    before = peak_rss_mib()
    n = (32 * 1024 * 1024 - 100) // 3
    bomb = b'{"model": "m", "messages": [' + b"[]," * n + b"[]]}"
    status, _, body = http("POST", proc.url + "/api/chat", raw=bomb, timeout=60)
    assert status == 400 and "arrays" in body["error"]
    # The body itself is held a few times over (read buffer, request, string-free copy), but
    # nothing like the 11 million lists it describes.
    assert peak_rss_mib() - before < 256
    assert http("GET", proc.url + "/healthz")[0] == 200


# -- 5. WebSocket ping flood -----------------------------------------------------------------------


def ws_connect(port: int, rcvbuf: int | None = None) -> Raw:
    c = Raw(port, rcvbuf=rcvbuf)
    c.send(upgrade_request("t"))
    while b"\r\n\r\n" not in c.buf:
        c.buf += c.sock.recv(65536)
    assert c.buf.startswith(b"HTTP/1.1 101")
    c.buf = c.buf.partition(b"\r\n\r\n")[2]
    return c


def ping(payload: bytes = b"p" * 125) -> bytes:
    return frame(0x9, payload)


def test_a_ping_flood_is_closed_with_1008(router: Any) -> None:
    c = ws_connect(router.port)
    # 60 pings in one write, so the router reads them all before it closes (closing with
    # unread input would reset the connection): the burst allowance is 50.
    c.send(ping() * 60)
    assert c.closed()
    got = server_frames(c.buf)
    pongs = [p for op, p in got if op == 0xA]
    closes = [p for op, p in got if op == 0x8]
    assert 50 <= len(pongs) < 60
    assert closes and struct.unpack(">H", closes[0][:2])[0] == 1008
    assert http("GET", router.url + "/healthz")[0] == 200


def test_pings_within_the_rate_are_answered(router: Any) -> None:
    c = ws_connect(router.port)
    c.send(ping(b"hello"))

    def pong() -> bool:
        c.buf += c.sock.recv(65536)
        return any(op == 0xA and p == b"hello" for op, p in server_frames(c.buf))

    wait_until(pong, message="pong")
    c.close()
