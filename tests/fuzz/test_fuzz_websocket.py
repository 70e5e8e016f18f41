"""Fuzz the dashboard WebSocket of a real router with random frame sequences.

Each case opens /ws/dashboard, sends up to 150 frames in one write (pings and pongs beyond the
control-frame allowance, oversized or fragmented control frames, unmasked frames, reserved
opcodes and bits, truncated frames), then a close. The router may answer and close as it sees
fit, but: no more pongs than the burst allowance, a close code from the protocol's set, no
ERROR logged, and `GET /healthz` answering afterwards.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routercore.http.websocket import CONTROL_BURST
from tests.support.logs import ErrorLog
from tests.support.routers import http
from tests.support.websocket import frame, server_frames, upgrade_request

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
TIMEOUT = max(120, EXAMPLES // 5)

CLOSE_CODES = {1000, 1001, 1002, 1007, 1008, 1009, 1011}


one_frame = st.one_of(
    st.builds(lambda p: frame(0x9, p), st.binary(max_size=125)),  # ping
    st.builds(lambda p: frame(0xA, p), st.binary(max_size=125)),  # pong
    st.builds(lambda t: frame(0x1, t.encode()), st.text(max_size=50)),  # text
    st.builds(lambda p: frame(0x2, p), st.binary(max_size=50)),  # binary
    st.builds(lambda p: frame(0x9, p), st.binary(min_size=126, max_size=300)),  # oversized ping
    st.builds(lambda p: frame(0x9, p, fin=False), st.binary(max_size=20)),  # fragmented ping
    st.builds(lambda p: frame(0x9, p, masked=False), st.binary(max_size=20)),  # unmasked
    st.builds(
        lambda o, p: frame(o, p), st.sampled_from([0x3, 0x7, 0xB, 0xF, 0x0]), st.binary(max_size=20)
    ),
    st.builds(lambda p: frame(0x9, p, rsv=1), st.binary(max_size=20)),  # reserved bit
    st.just(b"\x89"),  # a truncated frame
)
flood = st.builds(lambda n, p: [frame(0x9, p)] * n, st.integers(1, 120), st.binary(max_size=125))
frames = st.lists(st.one_of(one_frame, flood.map(b"".join)), max_size=30).map(b"".join)


def run_case(port: int, payload: bytes) -> bytes:
    """Upgrade, send the frames, a close and EOF; read until the router closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(upgrade_request("fuzz"))
        data = b""
        while b"\r\n\r\n" not in data:
            piece = s.recv(65536)
            assert piece, "closed before the upgrade answer"
            data += piece
        assert data.startswith(b"HTTP/1.1 101 ")
        data = data.partition(b"\r\n\r\n")[2]
        try:
            s.sendall(payload + frame(0x8, struct.pack(">H", 1000)))
            # EOF too: after a truncated frame the close above is read as that frame's rest
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the router closed on an earlier frame
        while True:
            try:
                piece = s.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            data += piece
        return data


@pytest.fixture
def fuzz_ws_router(router_factory: Callable[..., Any]) -> Any:
    return router_factory()


@pytest.mark.timeout(TIMEOUT)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payload=frames)
def test_fuzz_websocket_frames_against_the_router(
    payload: bytes, fuzz_ws_router: Any, error_log: ErrorLog
) -> None:
    got = server_frames(run_case(fuzz_ws_router.port, payload))
    pongs = [p for op, p in got if op == 0xA]
    assert len(pongs) <= CONTROL_BURST + 5
    for op, p in got:
        if op == 0x8 and len(p) >= 2:
            assert struct.unpack(">H", p[:2])[0] in CLOSE_CODES
    assert not error_log.records, [f"{r.name}: {r.getMessage()}" for r in error_log.records]
    assert http("GET", fuzz_ws_router.url + "/healthz")[0] == 200
