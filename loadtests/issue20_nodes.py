"""Before/after figures for issue 20's node and data items (3, 6, 7, 8, 11, 12).

Starts `python -m routercore serve` from the source tree given by --src (an unchanged export of
an older commit, or this tree), attacks it on loopback with small bounded loads, and prints one
JSON object of figures per experiment. Router CPU and memory come from /proc.

    python loadtests/issue20_nodes.py --src /tmp/base SRC_LABEL [experiment ...]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import resource
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from routercore.testing.processes import free_port, router_cmd
from routercore.testing.raw_node import RawNode

ADMIN = "measure-admin"


def call(method: str, url: str, body: Any = None, timeout: float = 30.0) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    req.add_header("authorization", f"Bearer {ADMIN}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Router:
    def __init__(self, src: str, db: str, env: dict[str, str] | None = None) -> None:
        self.src, self.db, self.extra = src, db, env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = db + ".log"
        self.start()

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": self.src, "LLM_ROUTER_ADMIN_TOKEN": ADMIN, **self.extra}
        cmd = router_cmd(self.port, self.db)

        def limits() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
            resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # bounded: 3 GiB

        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=out, cwd=self.src, preexec_fn=limits
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if call("GET", self.url + "/healthz", timeout=1)[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("router did not start")

    def proc_status(self) -> dict[str, float]:
        out: dict[str, float] = {}
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = round(int(value.split()[0]) / 1024, 1)  # MiB
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        out["cpu_s"] = round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
        out["fds"] = len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        return out

    def healthz_ms(self) -> float:
        t = time.perf_counter()
        try:
            call("GET", self.url + "/healthz", timeout=30)
        except OSError:
            return -1.0
        return round((time.perf_counter() - t) * 1000, 1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def register(r: Router, port: int, name: str, **extra: Any) -> tuple[int, bytes]:
    body = {"machine_name": name, "runtime_port": port, "models": ["m"], **extra}
    return call("POST", r.url + "/api/agents/register", body)


def raw_exchange(port: int, request: bytes, timeout: float = 10.0) -> dict[str, Any]:
    """Send `request`, read until the router closes; report what the client saw."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(request)
    data, outcome = b"", "closed"
    try:
        while True:
            piece = s.recv(65536)
            if not piece:
                break
            data += piece
            if data.endswith(b"0\r\n\r\n") or (
                b"\r\n\r\n" in data and b"content-length: 0" in data
            ):
                outcome = "complete"
                break
    except ConnectionResetError:
        outcome = "reset"
    except TimeoutError:
        outcome = "timeout"
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    return {
        "status_line": lines[0].decode("latin-1") if lines and lines[0] else "(none)",
        "headers": [ln.decode("latin-1") for ln in lines[1:]],
        "body_bytes": len(body),
        "outcome": outcome,
    }


CHAT = (
    b"POST /api/chat HTTP/1.1\r\nHost: r\r\ncontent-type: application/json\r\n"
    b'content-length: 27\r\nconnection: close\r\n\r\n{"model":"m","stream":true}'
)

NODE_REPLIES = {
    "chunked_with_length": b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n"
    b"content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"
    b'14\r\n{"message":"hello"}\n\r\n0\r\n\r\n',
    "no_content_with_length": b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
    "lf_in_header": b"HTTP/1.1 200 OK\r\nx-a: one\ntwo\r\ncontent-length: 2\r\n\r\n{}",
    "nul_in_header": b"HTTP/1.1 200 OK\r\nx-a: one\x00two\r\ncontent-length: 2\r\n\r\n{}",
    "html_cookie_forged_node": b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\n"
    b"set-cookie: session=stolen; Path=/\r\nx-router-node: forged\r\n"
    b"content-length: 30\r\n\r\n<script>alert(origin)</script>",
}


def exp_framing(src: str, tmp: str) -> dict[str, Any]:
    """Items 11 and 12: what a client sees when a node sends odd framing or fields."""
    out: dict[str, Any] = {}
    for case, reply in NODE_REPLIES.items():
        node = RawNode(reply)
        r = Router(src, f"{tmp}/{case}.db")
        try:
            register(r, node.port, "raw")
            seen = raw_exchange(r.port, CHAT)
            keep = ("set-cookie", "x-router-node", "content-length", "transfer-encoding")
            keep += ("content-security-policy", "x-content-type-options", "x-a")
            seen["headers"] = [h for h in seen["headers"] if h.split(":")[0].lower() in keep]
            out[case] = seen
        finally:
            r.stop()
            node.close()
    return out


def scrape(r: Router) -> tuple[int, float]:
    t = time.perf_counter()
    _status, body = call("GET", r.url + "/metrics", timeout=120)
    return len(body), round(time.perf_counter() - t, 2)


def exp_cardinality(src: str, tmp: str) -> dict[str, Any]:
    """Item 3: 2,000 unknown model names, then 4 names of 1 MiB each."""
    r = Router(src, f"{tmp}/card.db")
    out: dict[str, Any] = {}
    try:
        base = r.proc_status()
        url = r.url + "/api/chat"
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: call("POST", url, {"model": f"no-such-model-{i:06d}"}),
                          range(2000)))  # fmt: skip
        out["after_2000_names"] = {"scrape_bytes": scrape(r)[0], **r.proc_status()}
        for i in range(4):
            call("POST", url, {"model": f"{i}" + "x" * (1 << 20)}, timeout=120)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(scrape, r)
            time.sleep(0.05)
            health = r.healthz_ms()  # while the scrape is being built
            size, secs = pending.result()
        out["after_4_huge_names"] = {
            "scrape_bytes": size,
            "scrape_s": secs,
            "healthz_ms_during_scrape": health,
            **r.proc_status(),
        }
        out["healthz_ms_after"] = r.healthz_ms()
        out["baseline"] = base
    finally:
        r.stop()
    db = sqlite3.connect(f"{tmp}/card.db")
    rows, chars = db.execute(
        "SELECT count(*), coalesce(sum(length(model)), 0) FROM requests"
    ).fetchone()
    out["history_rows"], out["history_model_chars"] = rows, chars
    return out


def exp_registration(src: str, tmp: str) -> dict[str, Any]:
    """Item 6: a 20 MB `system`, 4,096-model heartbeats, 3,000 registrations."""
    node = RawNode(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
    r = Router(src, f"{tmp}/reg.db")
    out: dict[str, Any] = {}
    try:
        base = r.proc_status()
        status, _ = register(r, node.port, "big", system={"blob": "x" * 20_000_000})
        listing = call("GET", r.url + "/api/agents")[1]
        out["system_20MB"] = {"status": status, "agents_bytes": len(listing), **r.proc_status()}
        status, body = register(r, node.port, "beater")
        agent = json.loads(body)
        for count in (1024, 4096):
            out[f"heartbeats_{count}_models_x30"] = heartbeats(r, agent, count)
        codes: dict[int, int] = {}
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for status, _ in pool.map(lambda i: register(r, node.port, f"n{i}"), range(3000)):
                codes[status] = codes.get(status, 0) + 1
        out["register_3000"] = {"statuses": codes, **r.proc_status()}
        out["baseline"] = base
    finally:
        r.stop()
        node.close()
    return out


def heartbeats(r: Router, agent: dict[str, Any], count: int) -> dict[str, Any]:
    """30 heartbeats listing `count` distinct models: the router's CPU seconds for them."""
    models = [f"model-{i:05d}" for i in range(count)]
    cpu0 = r.proc_status()["cpu_s"]
    statuses = set()
    for _ in range(30):
        req = urllib.request.Request(
            r.url + "/api/health",
            data=json.dumps({"agent_id": agent["agent_id"], "models": models}).encode(),
            method="POST",
        )
        req.add_header("authorization", f"Bearer {agent['agent_token']}")
        req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                statuses.add(resp.status)
        except urllib.error.HTTPError as exc:
            statuses.add(exc.code)
    return {
        "statuses": sorted(statuses),
        "router_cpu_s": round(r.proc_status()["cpu_s"] - cpu0, 2),
    }


def exp_bad_row(src: str, tmp: str) -> dict[str, Any]:
    """Item 8: `gpu_devices: [{"count": "two"}]` at registration; the same value written into
    the database file, then a router restart."""
    node = RawNode(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
    db = f"{tmp}/bad.db"
    r = Router(src, db)
    out: dict[str, Any] = {}
    try:
        status, _body = register(r, node.port, "bad", gpu_devices=[{"count": "two"}])
        out["register_status"] = status
        out["snapshot_status"] = call("GET", r.url + "/api/dashboard/snapshot")[0]
        register(r, node.port, "stored")
        r.stop()
        con = sqlite3.connect(db)  # a row as a damaged or older database may hold it
        con.execute("UPDATE nodes SET gpu_devices = ?", ('[{"count": "two"}]',))
        con.commit()
        con.close()
        r.start()
        out["after_restart_snapshot_status"] = call("GET", r.url + "/api/dashboard/snapshot")[0]
        agents = json.loads(call("GET", r.url + "/api/agents")[1])
        detail = call("GET", r.url + f"/api/dashboard/nodes/{agents[0]['id']}")[0]
        out["after_restart_node_detail_status"] = detail
    finally:
        r.stop()
        node.close()
    return out


def exp_fanout(src: str, tmp: str) -> dict[str, Any]:
    """Item 7: 300 nodes that never answer, 5 concurrent /api/tags; one node = the router."""
    hole = RawNode(None)
    r = Router(src, f"{tmp}/fan.db", {"LLM_ROUTER_CONNECT_TIMEOUT": "3"})
    out: dict[str, Any] = {}
    try:
        for i in range(300):
            register(r, hole.port, f"hole{i}")
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            t = time.perf_counter()
            calls = [pool.submit(call, "GET", r.url + "/api/tags", None, 60) for _ in range(5)]
            time.sleep(1.0)
            health = r.healthz_ms()
            during = r.proc_status()
            statuses = [c.result()[0] for c in calls]
        out["tags_x5_over_300_silent_nodes"] = {
            "statuses": statuses,
            "seconds": round(time.perf_counter() - t, 2),
            "peak_node_connections": hole.peak_connections,
            "router_fds_during": during["fds"],
            "healthz_ms_during": health,
        }
    finally:
        r.stop()
        hole.close()
    r = Router(src, f"{tmp}/loop.db")
    try:
        register(r, r.port, "myself")
        t = time.perf_counter()
        try:
            status = call("GET", r.url + "/api/tags", timeout=60)[0]
        except OSError as exc:
            status = repr(exc)
        seconds = round(time.perf_counter() - t, 2)
        time.sleep(1)
        with open(r.log, "rb") as fh:
            inbound = sum(1 for line in fh if b"GET /api/tags" in line)
        out["tags_with_router_registered_as_its_own_node"] = {
            "status": status,
            "seconds": seconds,
            "api_tags_requests_handled": inbound,
            **r.proc_status(),
        }
    finally:
        r.stop()
    return out


EXPERIMENTS = {
    "framing": exp_framing,
    "cardinality": exp_cardinality,
    "registration": exp_registration,
    "bad_row": exp_bad_row,
    "fanout": exp_fanout,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", required=True, help="source tree to run the router from")
    parser.add_argument("experiments", nargs="*", default=list(EXPERIMENTS))
    args = parser.parse_args()
    for name in args.experiments:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            try:
                result = EXPERIMENTS[name](os.path.abspath(args.src), tmp)
            except Exception as exc:  # a figure of its own: the attack broke the measurement
                result = {"failed": repr(exc)}
            result["wall_s"] = round(time.perf_counter() - started, 1)
            print(json.dumps({name: result}), flush=True)


if __name__ == "__main__":
    main()
