"""End to end through the agent's relay: a real router -> a real agent (`python -m agent --relay`)
-> a fake runtime bound to 127.0.0.1 only.

The node's "LAN address" is 127.0.0.2: the agent's relay listens there and registers it, while
the runtime listens on 127.0.0.1 alone, so nothing that connects to the node's address (the
router included) can reach the runtime except through the relay. Nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from routercore.testing.fakenode import ThreadedFakeNode, run_in_thread
from routercore.testing.processes import agent_cmd
from tests.support.agents import Proc
from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN, RouterThread, http

pytestmark = pytest.mark.slow

NODE_IP = "127.0.0.2"  # the node's address as the router sees it (the relay listens here)
MODEL = "relay-model"


class RelayCluster:
    def __init__(self, tmp: Path) -> None:
        self.router = RouterThread(str(tmp / "router.db"), allowed_node_addresses=(NODE_IP,))
        self.runtime: ThreadedFakeNode = run_in_thread(host="127.0.0.1", models=[MODEL])
        self.relay_port = _free_port_on(NODE_IP)
        env = {"XDG_CONFIG_HOME": str(tmp / "cfg"), "XDG_DATA_HOME": str(tmp / "data")}
        self.agent = Proc(
            agent_cmd(
                "--router", self.router.url,
                "--runtime-url", f"http://127.0.0.1:{self.runtime.port}",
                "--name", "relayed",
                "--relay",
                "--relay-host", NODE_IP,
                "--relay-port", str(self.relay_port),
                "--ip-address", NODE_IP,
            ),
            tmp / "agent.log",
            env,
        ).start()  # fmt: skip
        self.node = wait_until(self._online, timeout=30, message="the relayed node online")

    def _online(self) -> dict[str, Any] | None:
        if not self.agent.alive():
            raise RuntimeError(f"agent exited:\n{self.agent.log()}")
        for a in self.router.agents():
            if a["machine_name"] == "relayed" and a["status"] == "online" and a["models"]:
                return dict(a)
        return None

    def stats(self) -> dict[str, Any]:
        return self.runtime.snapshot()

    def close(self) -> None:
        self.agent.stop()
        self.runtime.close()
        self.router.stop()


def _free_port_on(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayCluster]:
    c = RelayCluster(tmp_path_factory.mktemp("relay"))
    yield c
    c.close()


def _raw_request(
    host: str, port: int, method: str, path: str, body: Any = None, *, headers: str = "",
    source: str | None = None,
) -> socket.socket:  # fmt: skip
    sock = socket.create_connection(
        (host, port), timeout=10, source_address=(source, 0) if source else None
    )
    data = json.dumps(body).encode() if body is not None else b""
    sock.sendall(
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n{headers}\r\n".encode()
        + data
    )
    return sock


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    got = b""
    while marker not in got:
        piece = sock.recv(65536)
        assert piece, f"connection closed before {marker!r}; got {got[:300]!r}"
        got += piece
    return got


def test_registered_with_relay_port_never_the_token(cluster: RelayCluster) -> None:
    node = cluster.node
    assert node["ip_address"] == NODE_IP
    assert node["relay_port"] == cluster.relay_port
    assert node["runtime_port"] == cluster.runtime.port
    assert "relay_token" not in node
    status, _, raw = http(
        "GET", cluster.router.url + "/api/agents/" + node["id"], token=ADMIN_TOKEN
    )
    assert status == 200 and "relay_token" not in raw
    listing = json.dumps(cluster.router.agents())
    assert "rly_" not in listing  # the relay secret's prefix appears nowhere


def test_the_runtime_is_unreachable_except_through_the_relay(cluster: RelayCluster) -> None:
    # Whoever connects to the node's address finds no runtime there...
    with pytest.raises(ConnectionRefusedError), socket.socket() as s:
        s.connect((NODE_IP, cluster.runtime.port))
    # ... the router included: the same runtime registered without the relay cannot be used.
    status, _, body = http(
        "POST",
        cluster.router.url + "/api/agents/register",
        {"machine_name": "direct", "ip_address": NODE_IP, "runtime_port": cluster.runtime.port,
         "models": ["direct-only"]},
    )  # fmt: skip
    assert status == 201, body
    try:
        before = cluster.stats()["requests_total"]
        status, _, body = http(
            "POST",
            cluster.router.url + "/api/generate",
            {"model": "direct-only", "prompt": "hi", "stream": False},
        )
        assert status == 502, body
        assert cluster.stats()["requests_total"] == before
    finally:
        http("DELETE", cluster.router.url + "/api/agents/" + body_id(cluster), token=ADMIN_TOKEN)
    # The relayed node serves the same runtime through the router.
    status, headers, body = http(
        "POST",
        cluster.router.url + "/api/generate",
        {"model": MODEL, "prompt": "hi", "stream": False},
    )
    assert status == 200, body
    assert headers["x-router-node"] == cluster.node["id"]
    assert body["done"] is True and body["response"]


def body_id(cluster: RelayCluster) -> str:
    return next(a["id"] for a in cluster.router.agents() if a["machine_name"] == "direct")


def test_stream_through_router_and_relay_with_the_openai_client(cluster: RelayCluster) -> None:
    cluster.runtime.configure(tokens=12, token_delay=0.0)
    client = openai.OpenAI(base_url=cluster.router.url + "/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) == 12
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "".join(pieces)


def test_client_disconnect_reaches_the_runtime(cluster: RelayCluster) -> None:
    cluster.runtime.configure(tokens=400, token_delay=0.05)
    cancelled = cluster.stats()["cancelled"]
    sock = _raw_request(
        "127.0.0.1", cluster.router.port, "POST", "/api/generate", {"model": MODEL, "prompt": "hi"}
    )
    _read_until(sock, b'"done":false')  # the stream is flowing: first token arrived
    assert cluster.stats()["in_flight"] == 1
    sock.close()
    # router -> relay -> runtime: each hop cuts its upstream when its client goes away.
    wait_until(lambda: cluster.stats()["cancelled"] == cancelled + 1, timeout=15,
               message="the runtime to see the cancel")  # fmt: skip
    assert cluster.stats()["in_flight"] == 0


def test_flow_control_a_slow_client_pauses_the_runtime(cluster: RelayCluster) -> None:
    """A client that stops reading must stall the runtime (every hop stops reading in turn),
    not make the relay or the router buffer the whole answer."""
    cluster.runtime.configure(tokens=400_000, token_delay=0.0)  # ~40 MB of NDJSON
    cancelled = cluster.stats()["cancelled"]
    sock = _raw_request(
        "127.0.0.1", cluster.router.port, "POST", "/api/generate", {"model": MODEL, "prompt": "hi"}
    )
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    _read_until(sock, b'"done":false')

    def paused_stream() -> Any:
        # The runtime's connection answering this request, while its writes are paused. Only
        # that connection is watched: the agent's own polls (/api/tags, /api/ps...) keep
        # completing on other connections meanwhile.
        return next((c for c in list(cluster.runtime.node.connections) if c.writing_paused), None)

    stream = wait_until(paused_stream, timeout=30, message="the runtime's writes to be paused")
    time.sleep(0.5)  # a moment for anything still moving; the answer must not complete
    assert stream.busy and not stream.closed
    # Kernel buffers may still grow a little (autotuning) and let the runtime write a bit more,
    # but it ends up paused again, the answer far from complete.
    wait_until(
        lambda: stream.writing_paused, timeout=10, message="the runtime's writes paused again"
    )
    assert stream.busy and not stream.closed
    sock.close()
    wait_until(lambda: cluster.stats()["cancelled"] == cancelled + 1, timeout=15,
               message="the runtime to see the cancel")  # fmt: skip


def test_wrong_or_missing_token_gets_401_and_a_log_line(cluster: RelayCluster) -> None:
    before = cluster.stats()["requests_total"]
    for headers in ("authorization: Bearer wrong-token-0123456789\r\n", ""):
        sock = _raw_request(
            NODE_IP, cluster.relay_port, "POST", "/api/generate",
            {"model": MODEL, "prompt": "hi"}, headers=headers, source="127.0.0.3",
        )  # fmt: skip
        with sock:
            answer = _read_until(sock, b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
        assert b"www-authenticate: Bearer" in answer.lower().replace(b"bearer", b"Bearer")
    assert cluster.stats()["requests_total"] == before  # nothing reached the runtime
    log = wait_until(
        lambda: (
            cluster.agent.log().count("relay_refused peer=127.0.0.3") >= 2 and cluster.agent.log()
        ),
        timeout=10,
        message="the refusals in the agent's log",
    )
    assert "reason=wrong token" in log and "reason=no token" in log
    assert "wrong-token-0123456789" not in log


def test_health_probe_goes_through_the_relay_with_the_token(cluster: RelayCluster) -> None:
    node_id = cluster.node["id"]
    probes = cluster.stats()["requests"].get("/", 0)
    refused = cluster.agent.log().count("relay_refused")
    svc = cluster.router.service

    async def probe_once() -> str:
        # What the health monitor does for an unreachable node, run here so a heartbeat cannot
        # race it: mark it, probe it (through the relay), see the result.
        svc.registry.mark_unreachable(node_id, "test: forced")
        await svc.health._probe(node_id, 0.3, None)
        return svc.registry.nodes[node_id].status

    status = asyncio.run_coroutine_threadsafe(probe_once(), cluster.router.loop).result(15)
    assert status == "online"
    assert cluster.stats()["requests"].get("/", 0) == probes + 1  # it reached the runtime
    assert cluster.agent.log().count("relay_refused") == refused


def test_runtime_down_behind_the_relay_is_unreachable_until_the_probe_passes(
    cluster: RelayCluster,
) -> None:
    """The relay is transparent to node health: a runtime that cannot be reached makes the
    router mark the node unreachable (not "answered 502"), and only the router's probe through
    the relay brings it back."""
    node_id = cluster.node["id"]

    def status() -> str:
        return str(
            cluster.router.call(lambda: cluster.router.service.registry.nodes[node_id].status)
        )

    cluster.runtime.set_fault("refuse")
    try:
        code, _, body = http(
            "POST",
            cluster.router.url + "/api/generate",
            {"model": MODEL, "prompt": "hi", "stream": False},
        )
        assert code in (502, 503), body
        assert status() == "unreachable"
        assert "relay_runtime_unreachable" in cluster.agent.log()
    finally:
        cluster.runtime.clear_faults()
    wait_until(lambda: status() == "online", timeout=20, message="the probe to bring the node back")
    code, _, body = http(
        "POST",
        cluster.router.url + "/api/generate",
        {"model": MODEL, "prompt": "hi", "stream": False},
    )
    assert code == 200, body
