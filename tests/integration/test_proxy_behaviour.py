"""Routing, failover, capacity queue, streaming failures and flow control through a real router."""

from __future__ import annotations

import asyncio
import collections
import http.client as httpclient
import json
import socket
import threading

import orjson
import pytest

from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN, http, join, online_ids

CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}


def chat(router, body=None, path="/v1/chat/completions", timeout=30.0):
    return http("POST", router.url + path, body or CHAT, timeout=timeout)


def served_by(router, n, body=None):
    return [chat(router, body)[1]["x-router-node"] for _ in range(n)]


def node_ids_by_port(router):
    return {a["runtime_port"]: a["id"] for a in router.agents()}


def open_stream(router, body, path="/api/generate"):
    """Start a streamed request; returns (connection, response) with the head read."""
    conn = httpclient.HTTPConnection("127.0.0.1", router.port, timeout=30)
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    return conn, conn.getresponse()


# -- spreading ---------------------------------------------------------------------------------


# The same prompt every time: with prefix affinity on, it would rightly stay on one node. These
# tests are about the configured algorithm itself, so they turn affinity off.


def test_round_robin_spreads_evenly(router_factory, fake_nodes):
    router = router_factory(balancer="round_robin", prefix_affinity=False)
    join(router, fake_nodes, 3)
    counts = collections.Counter(served_by(router, 30))
    assert sorted(counts.values()) == [10, 10, 10]


def test_least_loaded_avoids_the_busy_node(router_factory, fake_nodes):
    router = router_factory(balancer="least_loaded", prefix_affinity=False)
    nodes = join(router, fake_nodes, 3)
    slow = {"model": "llama3", "prompt": "x", "stream": True}
    for n in nodes:
        n.node.configure(token_delay=0.5, tokens=20)
    conn, resp = open_stream(router, slow)
    busy = resp.getheader("x-router-node")
    for n in nodes:
        n.node.configure(token_delay=0.0, tokens=8)
    picks = served_by(router, 6)
    assert busy not in picks
    assert len(set(picks)) == 2
    conn.close()


def test_latency_prefers_the_fast_node(router_factory, fake_nodes):
    router = router_factory(balancer="latency", prefix_affinity=False)
    fast = fake_nodes(register=router.url, name="fast", first_token_delay=0.0)
    slow = fake_nodes(register=router.url, name="slow", first_token_delay=0.15)
    online_ids(router, 2)
    ids = node_ids_by_port(router)
    picks = collections.Counter(served_by(router, 12))
    assert picks[ids[fast.port]] >= 10
    assert picks[ids[slow.port]] >= 1  # an unsampled node gets tried


def test_model_aware_routing(router_factory, fake_nodes):
    router = router_factory(prefix_affinity=False)  # node a must get some of the same prompt
    a = fake_nodes(register=router.url, name="a", models=["m1"])
    b = fake_nodes(register=router.url, name="b", models=["m2", "m1"])
    online_ids(router, 2)
    ids = node_ids_by_port(router)
    picks = set(served_by(router, 6, {**CHAT, "model": "m2"}))
    assert picks == {ids[b.port]}
    assert ids[a.port] in set(served_by(router, 6, {**CHAT, "model": "m1"}))
    status, _, body = chat(router, {**CHAT, "model": "m3"})
    assert status == 404 and body["error"]["code"] == "model_not_found"


def test_disabled_node_gets_no_requests(router, fake_nodes):
    a, b = join(router, fake_nodes, 2)
    ids = node_ids_by_port(router)
    status, _, _ = http(
        "PATCH", f"{router.url}/api/agents/{ids[a.port]}", {"enabled": False}, token=ADMIN_TOKEN
    )
    assert status == 200
    assert set(served_by(router, 5)) == {ids[b.port]}


# -- failover ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["status500", "refuse", "garbage"])
def test_failover_before_first_byte(router_factory, fake_nodes, fault):
    # Round robin without affinity, so that the failing node is tried first on some request.
    router = router_factory(balancer="round_robin", probe_interval=30, prefix_affinity=False)
    bad, _good = join(router, fake_nodes, 2)
    ids = node_ids_by_port(router)
    bad.node.set_fault(fault)
    served_by(router, 4)  # every request succeeds (chat() would return non-200 otherwise)
    agents = {a["id"]: a for a in router.agents()}
    if fault == "status500":
        # An HTTP answer proves the node up: it stays in rotation, the failures are counted.
        assert agents[ids[bad.port]]["status"] == "online"
        assert agents[ids[bad.port]]["health"]["breaker"]["consecutive_failures"] >= 1
    else:
        assert agents[ids[bad.port]]["status"] == "unreachable"
        assert not agents[ids[bad.port]]["health"]["in_rotation"]


def test_unreachable_node_comes_back_after_probe(router_factory, fake_nodes):
    router = router_factory(
        balancer="round_robin",
        probe_interval=0.2,
        heartbeat_timeout=30,
        heartbeat_interval=20,
        prefix_affinity=False,  # the failing node must get one of the same three prompts
    )
    bad, _good = join(router, fake_nodes, 2)
    ids = node_ids_by_port(router)
    bad.node.set_fault("refuse")
    served_by(router, 3)
    assert {a["id"]: a for a in router.agents()}[ids[bad.port]]["status"] == "unreachable"
    bad.node.clear_faults()
    wait_until(
        lambda: {a["id"]: a["status"] for a in router.agents()}[ids[bad.port]] == "online",
        message="probe brings the node back",
    )


def test_all_nodes_refusing_gives_502_then_503(router, fake_nodes):
    (only,) = join(router, fake_nodes, 1)
    only.node.set_fault("refuse")
    status, _, body = chat(router)
    assert status == 502 and body["error"]["code"] == "upstream_error"
    # The node is unreachable now: the model is listed but unavailable, not unknown.
    status, headers, body = chat(router, {"model": "llama3", "prompt": "x"}, path="/api/generate")
    assert status == 503 and isinstance(body["error"], str) and int(headers["retry-after"]) >= 1


def test_last_candidates_error_answer_is_passed_through(router, fake_nodes):
    (only,) = join(router, fake_nodes, 1)
    only.node.set_fault("status500")
    node_id = router.agents()[0]["id"]
    status, headers, body = chat(router)
    assert status == 500 and headers["x-router-node"] == node_id
    assert body["error"]["message"] == "fake fault: status500"  # the node's own body


def test_hanging_node_gives_504(router_factory, fake_nodes):
    router = router_factory(read_timeout=0.5)
    (only,) = join(router, fake_nodes, 1)
    only.node.set_fault("hang")
    status, _, body = chat(router)
    assert status == 504 and body["error"]["code"] == "upstream_timeout"


# -- capacity ----------------------------------------------------------------------------------


def test_queue_waits_for_a_free_slot(router_factory, fake_nodes):
    router = router_factory(queue_timeout=20)
    (node,) = join(router, fake_nodes, 1, max_concurrency=1)
    node.node.configure(token_delay=0.05, tokens=10)
    results = []
    threads = [threading.Thread(target=lambda: results.append(chat(router)[0])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200, 200, 200, 200]
    assert node.node.snapshot()["completed"] == 4


def test_queue_timeout_gives_503_with_retry_after(router_factory, fake_nodes):
    router = router_factory(queue_timeout=0.3)
    (node,) = join(router, fake_nodes, 1, max_concurrency=1)
    node.node.configure(token_delay=0.3, tokens=20)
    conn, resp = open_stream(router, {"model": "llama3", "prompt": "x"})
    assert resp.status == 200
    status, headers, body = chat(router)
    assert status == 503 and int(headers["retry-after"]) >= 1
    assert body["error"]["code"] == "model_unavailable"
    assert body["error"]["type"] == "service_unavailable"
    status, headers, body = http("POST", router.url + "/api/chat", CHAT)
    assert status == 503 and isinstance(body["error"], str)
    conn.close()


def test_full_queue_rejects_at_once(router_factory, fake_nodes):
    router = router_factory(queue_timeout=30, queue_max=0)
    (node,) = join(router, fake_nodes, 1, max_concurrency=1)
    node.node.configure(token_delay=0.3, tokens=20)
    conn, _resp = open_stream(router, {"model": "llama3", "prompt": "x"})
    status, _headers, body = chat(router)
    assert status == 503 and "queue is full" in body["error"]["message"]
    conn.close()


# -- streaming failures and cancellation -------------------------------------------------------


def test_failure_mid_stream_ends_with_error_event(router, fake_nodes):
    (node,) = join(router, fake_nodes, 1)
    node.node.configure(tokens=10)
    node.node.set_fault("drop_after", 3)
    _conn, resp = open_stream(router, {**CHAT, "stream": True}, path="/v1/chat/completions")
    events = [e for e in resp.read().split(b"\n\n") if e.strip()]
    assert len(events) >= 3
    last = orjson.loads(events[-1].removeprefix(b"data: "))
    assert "error" in last and last["error"]["message"]
    # The node answered, so it stays in rotation (its probe answers): the next request is served.
    online_ids(router, 1)
    _conn, resp = open_stream(router, {"model": "llama3", "prompt": "x"})
    lines = [line for line in resp.read().split(b"\n") if line.strip()]
    assert "error" in orjson.loads(lines[-1])
    assert len(lines) >= 3


def test_client_disconnect_cancels_the_upstream(router, fake_nodes):
    (node,) = join(router, fake_nodes, 1)
    node.node.configure(token_delay=0.1, tokens=200)
    sock = socket.create_connection(("127.0.0.1", router.port))
    body = orjson.dumps({"model": "llama3", "prompt": "x"})
    sock.sendall(
        b"POST /api/generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    got = b""
    while got.count(b"\n{") < 2:
        got += sock.recv(65536)
    sock.close()
    wait_until(
        lambda: node.node.snapshot()["cancelled"] == 1, message="the fake node saw the cancellation"
    )
    import asyncio

    def outcomes():
        router.service.store.flush()
        fut = asyncio.run_coroutine_threadsafe(router.service.store.query_requests(), router.loop)
        return [r["outcome"] for r in fut.result(10)[0]]

    assert wait_until(lambda: "cancelled" in outcomes())


@pytest.mark.slow
def test_long_gaps_between_tokens_are_not_cut(router, fake_nodes):
    (node,) = join(router, fake_nodes, 1)
    node.node.configure(token_delay=5.0, tokens=2)
    _conn, resp = open_stream(router, {"model": "llama3", "prompt": "x"})
    lines = [orjson.loads(x) for x in resp.read().split(b"\n") if x.strip()]
    assert "".join(x.get("response", "") for x in lines) == "tok0 tok1"
    assert lines[-1]["done"] is True


def test_large_request_body_is_forwarded_untouched(router, fake_nodes):
    (node,) = join(router, fake_nodes, 1)
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
    raw = orjson.dumps(big)
    status, _, _ = http("POST", router.url + "/v1/chat/completions", raw=raw, timeout=60)
    assert status == 200
    assert node.node.snapshot()["last_body_size"] == len(raw)


def test_body_over_limit_gets_413(router_factory, fake_nodes):
    router = router_factory(max_body_bytes=1000)
    join(router, fake_nodes, 1)
    status, _, body = http(
        "POST", router.url + "/v1/chat/completions", raw=orjson.dumps({**CHAT, "pad": "x" * 2000})
    )
    assert status == 413 and body["error"]["message"]
    # The server's own refusals carry a code under /v1, as the handlers' errors do.
    assert body["error"]["code"] == "payload_too_large"


def test_slow_reader_does_not_make_the_router_buffer(router_factory, fake_nodes):
    high_water = 64 * 1024
    router = router_factory(write_high_water=high_water)
    (node,) = join(router, fake_nodes, 1)
    tokens = 60_000  # several MB of NDJSON, written by the fake node at once
    node.node.configure(tokens=tokens)
    sock = socket.create_connection(("127.0.0.1", router.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    body = orjson.dumps({"model": "llama3", "prompt": "x"})
    sock.sendall(
        b"POST /api/generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )

    def router_side():
        conns = list(router.service.server.state.connections)
        ups = list(router.service.pool.active)
        if not conns or not ups:
            return None
        return (
            max(c.transport.get_write_buffer_size() for c in conns if c.transport),
            ups[0].paused,
            ups[0].buffered,
        )

    # The client reads nothing: the router must stop reading the node, not pile up the body.
    state = wait_until(
        lambda: (s := router.call(router_side)) and s[1] and s,
        timeout=20,
        message="upstream paused while the client does not read",
    )
    write_buffer, _, upstream_buffered = state
    assert write_buffer <= high_water + 64 * 1024
    assert upstream_buffered <= 1024 * 1024  # one socket read at most, not the ~6 MB body
    # Now read everything: nothing was lost on the way.
    sock.settimeout(30)
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        piece = sock.recv(1 << 20)
        if not piece:
            break
        data += piece
    sock.close()
    lines = [orjson.loads(x) for x in dechunk(data.split(b"\r\n\r\n", 1)[1]).split(b"\n") if x]
    assert len(lines) == tokens + 1  # every token line plus the final done line
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == tokens


def dechunk(body: bytes) -> bytes:
    """Undo HTTP/1.1 chunked framing."""
    out, pos = [], 0
    while True:
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2


def test_history_keeps_failed_and_rejected_requests(router, fake_nodes):
    join(router, fake_nodes, 1)
    node_id = router.agents()[0]["id"]
    # A known model its (only, now disabled) node cannot serve: refused by the router, recorded.
    patch = {"enabled": False}
    assert http("PATCH", f"{router.url}/api/agents/{node_id}", patch, token=ADMIN_TOKEN)[0] == 200
    chat(router, CHAT)

    def rows():
        router.service.store.flush()
        fut = asyncio.run_coroutine_threadsafe(
            router.service.store.query_requests(model="llama3"), router.loop
        )
        return fut.result(10)[0]

    found = wait_until(rows)
    assert found[0]["status_code"] == 404 and found[0]["outcome"] == "rejected"
