"""The attacks of issue 20 against a real router process on loopback, measured.

    python loadtests/attacks.py TREE ATTACK [LLM_ROUTER_X=value ...]

TREE is put first on PYTHONPATH (the code to measure: this checkout, or an exported older
commit); ATTACK is one of chunks, bigbodies, slowbody, peraddr, jsonbomb, wsping, logs, origin.
Prints one JSON line: the attack's outcome, the router's CPU seconds and peak RSS over it, and
the worst `GET /healthz` latency seen meanwhile (polled every 50 ms from 127.0.0.2). Every
attack is bounded in bytes and time (at most ~20 s, ~400 MiB) and only touches loopback.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from routercore.testing.processes import Child, free_port, router_cmd, wait_router

PY = sys.executable
TICK = os.sysconf("SC_CLK_TCK")


class Router:
    def __init__(self, tree: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log = os.path.join(tempfile.gettempdir(), f"llm-router-attack-{self.port}.log")
        e = {**os.environ, "PYTHONPATH": tree, "LLM_ROUTER_ADMIN_TOKEN": "adm", **env}
        child = Child(
            router_cmd(self.port, ":memory:"),
            Path(self.log),
            env=e,
            cwd=tempfile.gettempdir(),
            append=False,
        )
        child.start()
        wait_router(child, self.port, timeout=15)
        assert child.proc is not None
        self.proc = child.proc

    def status(self) -> dict[str, float]:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            kv = dict(line.split(":", 1) for line in fh)
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return {
            "rss_mib": int(kv["VmRSS"].split()[0]) / 1024,
            "hwm_mib": int(kv["VmHWM"].split()[0]) / 1024,
            "cpu_s": (int(f[11]) + int(f[12])) / TICK,
        }

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


def healthz(port: int, timeout: float = 30) -> tuple[int, float]:
    t = time.perf_counter()
    # from another loopback address, so a per-address cap on the attacker does not hit it
    s = socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=("127.0.0.2", 0)
    )
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    return int(data.split(b" ", 2)[1]), time.perf_counter() - t


class Prober(threading.Thread):
    """GET /healthz every 50 ms; keeps the worst latency."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.worst, self.stop_ = port, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop_.is_set():
            try:
                self.worst = max(self.worst, healthz(self.port)[1])
            except OSError:
                self.worst = max(self.worst, 30.0)
            time.sleep(0.05)

    def done(self) -> float:
        self.stop_.set()
        self.join(40)
        return round(self.worst * 1000, 1)


def read_status(s: socket.socket, timeout: float = 60) -> str:
    s.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            d = s.recv(65536)
            if not d:
                break
            data += d
    except OSError as exc:
        return f"error {exc!r}"
    return data.split(b"\r\n", 1)[0].decode("latin-1") or "closed without answer"


def attack_chunks(r: Router) -> dict[str, object]:
    """1-byte chunks, no credentials, to a keyed /v1 API."""
    s = socket.create_connection(("127.0.0.1", r.port))
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    block = b"1\r\nA\r\n" * 65536  # 384 KiB of wire per block
    sent = 0
    for _ in range(30):  # ~11 MiB of wire, 1.9 M chunks
        try:
            s.sendall(block)
        except OSError:
            break
        sent += len(block)
    try:
        s.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    return {"wire_mib": round(sent / 2**20, 1), "answer": read_status(s)}


def attack_bigbodies(r: Router) -> dict[str, object]:
    """8 unauthenticated 32 MiB - 1 KiB bodies at once to a keyed API; hold the sockets."""
    n, size = int(os.environ.get("ATTACK_N", "8")), 32 * 2**20 - 1024
    socks, answers = [], []
    payload = b"x" * size

    def one() -> None:
        s = socket.create_connection(("127.0.0.1", r.port))
        socks.append(s)
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
        )
        try:
            s.sendall(payload[:-1])  # hold the body one byte short for a moment
            time.sleep(2)
            s.sendall(payload[-1:])
        except OSError:
            pass
        answers.append(read_status(s))

    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return {"bodies": n, "answers": sorted(set(answers))}


def attack_slowbody(r: Router) -> dict[str, object]:
    """One byte per second of a 100-byte body; how long does the router keep it (<= 20 s)?"""
    s = socket.create_connection(("127.0.0.1", r.port))
    s.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    t0 = time.monotonic()
    s.settimeout(0.01)
    ans = "still open at 20 s"
    while time.monotonic() - t0 < 20:
        try:
            s.sendall(b"{")
        except OSError:
            ans = "closed"
            break
        try:
            d = s.recv(4096)
            ans = d.split(b"\r\n", 1)[0].decode() if d else "closed"
            break
        except TimeoutError:
            pass
        time.sleep(1)
    return {"held_s": round(time.monotonic() - t0, 1), "answer": ans}


def attack_peraddr(r: Router) -> dict[str, object]:
    """60 connections from 127.0.0.1 that each start a body and trickle."""
    socks, refused = [], 0
    for _ in range(60):
        s = socket.create_connection(("127.0.0.1", r.port))
        s.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        socks.append(s)
    time.sleep(0.5)
    for s in socks:
        s.settimeout(0.2)
        try:
            d = s.recv(4096)
            if d.startswith(b"HTTP/1.1 503"):
                refused += 1
        except TimeoutError:
            pass
    for s in socks:
        s.close()
    return {"connections": 60, "refused_503": refused}


def attack_jsonbomb(r: Router) -> dict[str, object]:
    """A 32 MiB body of empty lists to /api/chat."""
    n = (32 * 2**20 - 2048) // 3
    body = b'{"model":"m","messages":[' + b"[]," * n + b"[]]}"
    s = socket.create_connection(("127.0.0.1", r.port))
    s.sendall(
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    return {"body_mib": round(len(body) / 2**20, 1), "answer": read_status(s)}


def ws_frame(opcode: int, payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def attack_wsping(r: Router) -> dict[str, object]:
    """Ping flood on /ws/dashboard from a client that never reads, for 6 s."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", r.port))
    key = base64.b64encode(os.urandom(16))
    s.sendall(
        b"GET /ws/dashboard HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: "
        + key
        + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = s.recv(4096)
    frame = ws_frame(0x9, b"p" * 125) * 512
    s.settimeout(1)
    t0, sent, state = time.monotonic(), 0, "open"
    while time.monotonic() - t0 < 6:
        try:
            s.sendall(frame)
            sent += 512
        except TimeoutError:
            state = "router stopped reading"
            continue
        except OSError:
            state = "closed by router"
            break
    s.close()
    return {"handshake": head.split(b"\r\n", 1)[0].decode(), "pings_sent": sent, "state": state}


def attack_logs(r: Router) -> dict[str, object]:
    s = socket.create_connection(("127.0.0.1", r.port))
    s.sendall(b"GET /api/chat?token=SECRETQUERY\x01 HTTP/1.1\r\nHost: x\r\n\r\n")
    read_status(s)
    s = socket.create_connection(("127.0.0.1", r.port))
    s.sendall(
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer SECRETBEARER\x00\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    read_status(s)
    body = json.dumps(
        {"machine_name": "box\n2026-01-01 00:00:00 WARNING FORGED line", "models": ["m"]}
    ).encode()
    s = socket.create_connection(("127.0.0.1", r.port))
    s.sendall(
        b"POST /api/agents/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    reg = read_status(s)
    time.sleep(0.5)
    with open(r.log, "rb") as fh:
        log = fh.read()
    return {
        "register": reg,
        "secret_in_log": log.count(b"SECRETQUERY") + log.count(b"SECRETBEARER"),
        "forged_lines": sum(line.startswith(b"2026-01-01") for line in log.splitlines()),
    }


def attack_origin(r: Router) -> dict[str, object]:
    body = json.dumps({"machine_name": "evil", "models": ["m"]}).encode()
    out = {}
    for origin in (b"http://evil.example", None):
        s = socket.create_connection(("127.0.0.1", r.port))
        extra = b"Origin: " + origin + b"\r\n" if origin else b""
        s.sendall(
            b"POST /api/agents/register HTTP/1.1\r\nHost: x\r\nContent-Type: "
            b"application/json\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        out[str(origin)] = read_status(s)
    return out


def main() -> None:
    tree, attack = sys.argv[1], sys.argv[2]
    env = dict(a.split("=", 1) for a in sys.argv[3:])
    r = Router(tree, env)
    try:
        healthz(r.port)
        before = r.status()
        prober = Prober(r.port)
        prober.start()
        t0 = time.monotonic()
        result = globals()["attack_" + attack](r)
        wall = time.monotonic() - t0
        worst = prober.done()
        time.sleep(0.3)
        after = r.status()
        out = {
            "attack": attack,
            "tree": tree,
            **result,
            "wall_s": round(wall, 1),
            "router_cpu_s": round(after["cpu_s"] - before["cpu_s"], 2),
            "peak_rss_mib": round(after["hwm_mib"], 0),
            "rss_growth_mib": round(after["hwm_mib"] - before["rss_mib"], 0),
            "healthz_worst_ms": worst,
        }
        print(json.dumps(out))
    finally:
        r.stop()


if __name__ == "__main__":
    main()
