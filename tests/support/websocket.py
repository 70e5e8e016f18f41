"""WebSocket clients for the dashboard feed: a blocking one on wsproto (a dependency already)
that speaks the protocol correctly, and raw frames for the tests that must not."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, RejectConnection, TextMessage
from wsproto.events import Request as WSRequest
from wsproto.utilities import LocalProtocolError


class WSClient:
    """A tiny blocking WebSocket client on wsproto (a dependency already), for the feed."""

    def __init__(self, url: str, path: str = "/ws/dashboard") -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(WSRequest(host=f"{host}:{port}", target=path)))
        self.pending: list[str] = []
        self.parts: list[str] = []
        self.accepted: bool | None = None
        self.reject_status: int | None = None
        while self.accepted is None:
            self._pump()

    def _pump(self) -> None:
        data = self.sock.recv(65536)
        self.ws.receive_data(data or None)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.accepted = True
            elif isinstance(event, RejectConnection):
                self.accepted = False
                self.reject_status = event.status_code
            elif isinstance(event, TextMessage):
                self.parts.append(event.data)
                if event.message_finished:
                    self.pending.append("".join(self.parts))
                    self.parts = []
            elif isinstance(event, CloseConnection):
                raise ConnectionResetError("closed by server")
        if not data and self.accepted is None:
            self.accepted = False

    def receive_json(self, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from the dashboard feed")
            self.sock.settimeout(left)
            self._pump()
        return json.loads(self.pending.pop(0))

    def close(self) -> None:
        try:
            self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        except (OSError, LocalProtocolError):  # best effort on teardown
            pass
        self.sock.close()


# -- raw frames (RFC 6455), for the tests that send what a correct client never would -----------


def upgrade_request(host: str, extra_headers: str = "", path: str = "/ws/dashboard") -> bytes:
    """A browser's upgrade request for `path` with a fresh key; `extra_headers` are
    "Name: value\r\n" lines."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    ).encode()


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0
) -> bytes:
    """One client frame; `masked=False`, `fin=False` or `rsv` make it one a server must refuse."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    size = len(payload)
    if size < 126:
        head = bytes([first, (0x80 if masked else 0) | size])
    else:
        head = bytes([first, (0x80 if masked else 0) | 126]) + struct.pack(">H", size)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the whole unmasked server frames in `data`."""
    out = []
    while len(data) >= 2:
        opcode, size, start = data[0] & 0x0F, data[1] & 0x7F, 2
        if size == 126:
            size, start = struct.unpack(">H", data[2:4])[0], 4
        elif size == 127:
            size, start = struct.unpack(">Q", data[2:10])[0], 10
        if len(data) < start + size:
            break
        out.append((opcode, data[start : start + size]))
        data = data[start + size :]
    return out
