"""Helpers for the agent's tests: a fault-injecting file server, a forward proxy, processes.

Everything binds 127.0.0.1 on a free port; nothing reaches the internet.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "agent-test-admin"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `predicate` until truthy (returning its value) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with _DIRECT.open(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        exc.close()
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, body


def post_json(url: str, body: Any, timeout: float = 10.0) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    try:
        with _DIRECT.open(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, raw
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        exc.close()
        return exc.code, raw


def delete(url: str, token: str | None = None, timeout: float = 10.0) -> int:
    req = urllib.request.Request(url, method="DELETE")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with _DIRECT.open(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


# --- file server with injectable faults ---------------------------------------------------------


class FileServer:
    """Serves in-memory files with Range support. `faults[path]` is a list consumed one per
    request: "503", "404", "reset" (close mid-body), "stall" (stop sending mid-body until the
    server closes), "ignore_range" (answer 200 with the whole file)."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = {}
        self.requests: list[dict[str, Any]] = []
        self.closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                server.requests.append(
                    {"path": path, "range": self.headers.get("Range"), "raw_path": self.path}
                )
                queue = server.faults.get(path) or []
                fault = queue.pop(0) if queue else None
                if fault in ("503", "500", "404"):
                    self.send_error(int(fault))
                    return
                data = server.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and fault != "ignore_range" and rng.startswith("bytes="):
                    start = int(rng[6:].split("-", 1)[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if fault in ("reset", "stall"):
                    half = len(body) // 2
                    self.wfile.write(body[:half])
                    self.wfile.flush()
                    if fault == "stall":
                        server.closing.wait(10)  # the client's read timeout fires first
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class ForwardProxy:
    """A minimal HTTP forward proxy (absolute-form GET, CONNECT); records each URL it forwarded.

    With `auth=(user, password)` it requires `Proxy-Authorization: Basic ...` like a corporate
    proxy: anything else gets 407 (and is recorded in `refused`).
    """

    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        self.seen: list[str] = []
        self.refused: list[str] = []
        self.expected_auth = (
            "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode() if auth else None
        )
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def authorized(self) -> bool:
                if proxy.expected_auth is None:
                    return True
                if self.headers.get("Proxy-Authorization") == proxy.expected_auth:
                    return True
                proxy.refused.append(self.path)
                self.send_response(407, "Proxy Authentication Required")
                self.send_header("Proxy-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def do_CONNECT(self) -> None:
                """An HTTPS tunnel: after 200, copy bytes both ways until one side closes."""
                if not self.authorized():
                    self.close_connection = True
                    return
                proxy.seen.append(f"CONNECT {self.path}")
                host, _, port = self.path.rpartition(":")
                try:
                    upstream = socket.create_connection((host, int(port)), timeout=10)
                except OSError as exc:
                    self.send_error(502, str(exc))
                    return
                self.send_response(200, "Connection Established")
                self.end_headers()
                self.wfile.flush()
                client = self.connection
                with upstream:
                    sockets = [client, upstream]
                    while True:
                        readable, _, _ = select.select(sockets, [], [], 10)
                        if not readable:
                            break
                        for sock in readable:
                            data = sock.recv(65536)
                            if not data:
                                self.close_connection = True
                                return
                            (upstream if sock is client else client).sendall(data)
                self.close_connection = True

            def do_GET(self) -> None:
                if not self.authorized():
                    return
                proxy.seen.append(self.path)
                target = urlsplit(self.path)
                if target.scheme != "http" or not target.hostname:
                    self.send_error(400, "absolute http:// URL expected")
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=10)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower()
                    not in ("proxy-connection", "connection", "host", "proxy-authorization")
                }
                path = target.path + (f"?{target.query}" if target.query else "")
                try:
                    conn.request("GET", path or "/", headers=headers)
                    resp = conn.getresponse()
                    body = resp.read()
                except OSError as exc:
                    self.send_error(502, str(exc))
                    return
                finally:
                    conn.close()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Via", "1.1 test-proxy")
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def xvfb_display() -> Iterator[str]:
    """A private Xvfb server's DISPLAY value; the caller should skip when Xvfb is missing."""
    n = next(
        n
        for n in range(90, 200)
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists()
    )
    proc = subprocess.Popen(
        # -noreset: an X server resets when its last client leaves, dropping connections
        # that arrive meanwhile (pystray probes the display once before it connects for real).
        ["Xvfb", f":{n}", "-screen", "0", "800x600x24", "-nolisten", "tcp", "-noreset"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: Path(f"/tmp/.X11-unix/X{n}").exists(), timeout=10, what="Xvfb")
        yield f":{n}"
    finally:
        proc.terminate()
        proc.wait(10)


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and its key), made with the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


# --- child processes ---------------------------------------------------------------------------


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLM_AGENT_", "LLM_ROUTER_", "PYSTRAY_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Proc:
    """A child process with its output in a log file; `stop()` is idempotent."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.cmd = cmd
        self.log_path = log_path
        self.env = _clean_env(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""  # base URL for servers

    def start(self) -> Proc:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT)
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def router_proc(port: int, db: Path, log_path: Path, heartbeat: float = 0.5) -> Proc:
    """`python -m routercore serve` on `port`, heartbeats every `heartbeat` s, timeout 3 s."""
    cmd = [
        sys.executable,
        "-m",
        "routercore",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--db",
        str(db),
    ]
    env = {
        "LLM_ROUTER_HEARTBEAT_INTERVAL": str(heartbeat),
        "LLM_ROUTER_HEARTBEAT_TIMEOUT": "3",
        "LLM_ROUTER_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    return Proc(cmd, log_path, env)


def fakenode_cmd(port: int, models: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "routercore.testing.fakenode",
        "--port",
        str(port),
        "--models",
        models,
    ]


def agent_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", "--no-tray", *args]


def url_ready(url: str) -> bool:
    try:
        return get_json(url, timeout=1)[0] == 200
    except OSError:
        return False
