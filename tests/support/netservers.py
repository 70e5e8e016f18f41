"""Servers the agent's download tests run against on 127.0.0.1: a file server with injectable
faults, a forward proxy (optionally demanding credentials, like a corporate one) and a
self-signed certificate for the HTTPS variants. Nothing reaches the internet."""

from __future__ import annotations

import base64
import contextlib
import http.client
import select
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest


class FileServer:
    """Serves in-memory files with Range support. `faults[path]` is a list consumed one per
    request: "503", "404", "reset" (close mid-body), "stall" (stop sending mid-body until the
    server closes), "ignore_range" (answer 200 with the whole file)."""

    def __init__(
        self, tls: tuple[Path, Path] | None = None, files: dict[str, bytes] | None = None
    ) -> None:
        self.files: dict[str, bytes] = dict(files or {})
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

    def __enter__(self) -> FileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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

    def __enter__(self) -> ForwardProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


@contextlib.contextmanager
def https_file_server(
    directory: Path, files: dict[str, bytes]
) -> Iterator[tuple[FileServer, Path]]:
    """A FileServer over HTTPS with a fresh self-signed certificate in `directory`: the server and
    the certificate a client must trust. Skips the test when the openssl command is missing."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not installed")
    tls = self_signed_cert(directory)
    with FileServer(tls=tls, files=files) as server:
        yield server, tls[0]
