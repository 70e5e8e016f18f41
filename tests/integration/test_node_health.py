"""Node health through a real router on a real socket: each failure class marks what it proves,
and the errors tell the truth (404 unknown, 503 + Retry-After unavailable, a node's own answer
passed through, 502 connection-level)."""

from __future__ import annotations

import asyncio
import http.client as httpclient
import json
import threading
import time
from typing import Any

import openai
import pytest

from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN, http, join, online_ids

CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}


def chat(router: Any, body: Any = None, path: str = "/v1/chat/completions") -> Any:
    return http("POST", router.url + path, body or CHAT)


def agent(router: Any, node_id: str) -> dict[str, Any]:
    return dict(http("GET", f"{router.url}/api/agents/{node_id}")[2])


def only_id(router: Any) -> str:
    (a,) = router.agents()
    return str(a["id"])


def test_one_poisoned_request_loses_no_later_request(router: Any, fake_nodes: Any) -> None:
    (node,) = join(router, fake_nodes, 1)
    node_id = only_id(router)
    node.set_fault("status500", times=1)
    status, headers, body = chat(router)
    # The only candidate's own answer, passed through (a reverse proxy's job), not a 502.
    assert status == 500 and headers["x-router-node"] == node_id
    assert body["error"]["message"] == "fake fault: status500"
    statuses = [chat(router)[0] for _ in range(20)]
    assert statuses == [200] * 20
    a = agent(router, node_id)
    assert a["status"] == "online" and a["health"]["in_rotation"]
    assert a["health"]["breaker"]["consecutive_failures"] == 0  # the successes reset it


def test_breaker_opens_after_consecutive_failures_and_a_trial_closes_it(
    router_factory: Any, fake_nodes: Any
) -> None:
    router = router_factory(breaker_failures=3, probe_interval=0.5, probe_max_interval=5)
    (node,) = join(router, fake_nodes, 1)
    node_id = only_id(router)
    node.set_fault("status500")
    assert [chat(router)[0] for _ in range(3)] == [500, 500, 500]
    a = agent(router, node_id)
    assert a["status"] == "online"  # it answers: not unreachable
    assert a["health"]["reason"] == "breaker open: 3 failures"
    assert a["health"]["breaker"]["state"] == "open"
    # Out of rotation: the model is unavailable for now, and the client is told when to retry.
    status, headers, body = chat(router)
    assert status == 503 and body["error"]["code"] == "model_unavailable"
    assert body["error"]["type"] == "service_unavailable" and int(headers["retry-after"]) >= 1
    status, headers, body = chat(router, {"model": "llama3", "prompt": "x"}, "/api/generate")
    assert status == 503 and isinstance(body["error"], str) and "retry-after" in headers
    # A trial after the backoff: still failing, so it opens again...
    wait_until(lambda: agent(router, node_id)["health"]["breaker"]["state"] == "half_open")
    assert chat(router)[0] == 500
    assert agent(router, node_id)["health"]["breaker"]["state"] == "open"
    # ...and once the node is well, the next trial closes it.
    node.clear_faults()
    wait_until(lambda: agent(router, node_id)["health"]["breaker"]["state"] == "half_open")
    assert chat(router)[0] == 200
    a = agent(router, node_id)
    assert a["health"]["breaker"] == {"state": "closed", "consecutive_failures": 0}
    assert [chat(router)[0] for _ in range(5)] == [200] * 5


def test_5xx_fails_over_and_the_failing_node_stays_in_rotation(
    router_factory: Any, fake_nodes: Any
) -> None:
    # The same prompt each time, spread by round robin: prefix affinity would keep it on one node.
    router = router_factory(balancer="round_robin", breaker_failures=5, prefix_affinity=False)
    bad, good = join(router, fake_nodes, 2)
    ids = {a["runtime_port"]: a["id"] for a in router.agents()}
    bad.set_fault("status500", times=2)
    served = [chat(router) for _ in range(6)]
    assert [s[0] for s in served] == [200] * 6
    assert all("fake fault" not in json.dumps(s[2]) for s in served)  # no node body leaks
    a = agent(router, ids[bad.port])
    assert a["status"] == "online" and a["health"]["in_rotation"]
    # The bad node recovered on its own and takes its share again.
    picks = {chat(router)[1]["x-router-node"] for _ in range(4)}
    assert picks == {ids[bad.port], ids[good.port]}


def test_mid_stream_drop_keeps_the_node_in_rotation(router: Any, fake_nodes: Any) -> None:
    (node,) = join(router, fake_nodes, 1, tokens=10)
    node_id = only_id(router)
    node.set_fault("drop_after", 3, times=1)
    conn = httpclient.HTTPConnection("127.0.0.1", router.port, timeout=30)
    conn.request("POST", "/api/generate", json.dumps({"model": "llama3", "prompt": "x"}))
    lines = [line for line in conn.getresponse().read().split(b"\n") if line.strip()]
    conn.close()
    assert "error" in json.loads(lines[-1])
    # The very next request, a millisecond later, is served: nothing is lost.
    assert chat(router)[0] == 200
    a = agent(router, node_id)
    assert a["status"] == "online" and a["health"]["breaker"]["consecutive_failures"] == 0


def test_mid_stream_drop_of_a_dead_runtime_marks_it_by_the_probe(
    router_factory: Any, fake_nodes: Any
) -> None:
    router = router_factory(probe_interval=30, heartbeat_interval=30, heartbeat_timeout=120)
    (node,) = join(router, fake_nodes, 1, tokens=400, token_delay=0.02)
    node_id = only_id(router)
    conn = httpclient.HTTPConnection("127.0.0.1", router.port, timeout=30)
    conn.request("POST", "/api/generate", json.dumps({"model": "llama3", "prompt": "x"}))
    resp = conn.getresponse()
    assert resp.readline().strip()
    node.set_fault("refuse")  # the runtime stops taking connections...
    node.set_fault("drop_after", 0)  # ...and the stream is cut (the process is still there)
    wait_until(lambda: agent(router, node_id)["status"] == "unreachable")
    assert agent(router, node_id)["health"]["reason"].startswith("unreachable: ")
    conn.close()


def test_heartbeats_do_not_revive_an_unreachable_node(router_factory: Any, fake_nodes: Any) -> None:
    router = router_factory(probe_interval=0.3, probe_max_interval=0.6, heartbeat_interval=0.2)
    (node,) = join(router, fake_nodes, 1)
    node_id = only_id(router)
    node.set_fault("refuse")  # the agent (its heartbeats) lives on; the runtime does not
    assert chat(router)[0] == 502
    seen = agent(router, node_id)["last_seen"]
    wait_until(lambda: agent(router, node_id)["last_seen"] != seen, message="heartbeats go on")
    time.sleep(1.0)  # several heartbeats and probes
    a = agent(router, node_id)
    assert a["status"] == "unreachable" and a["health"]["reason"] == "unreachable: connect refused"
    assert a["health"]["next_check_in_secs"] is not None
    status, headers, _ = chat(router)
    assert status == 503 and 1 <= int(headers["retry-after"]) <= 1  # the next probe is near
    node.clear_faults()
    online_ids(router, 1)  # the router's own probe brings it back
    assert chat(router)[0] == 200


def test_404_only_when_no_enabled_node_lists_the_model(router: Any, fake_nodes: Any) -> None:
    join(router, fake_nodes, 1)
    node_id = only_id(router)
    status, _, body = chat(router, {**CHAT, "model": "nobody-has-it"})
    assert status == 404 and body["error"]["code"] == "model_not_found"
    status, _, _ = http(
        "PATCH", f"{router.url}/api/agents/{node_id}", {"enabled": False}, token=ADMIN_TOKEN
    )
    assert status == 200
    status, _, body = chat(router)
    assert status == 404 and body["error"]["code"] == "model_not_found"
    status, _, body = chat(router, {"model": "llama3", "prompt": "x"}, "/api/generate")
    assert status == 404 and isinstance(body["error"], str)


def test_openai_sdk_retries_a_503_and_gets_through(router_factory: Any, fake_nodes: Any) -> None:
    """The official client retries 5xx with Retry-After on its own (never a 404)."""
    router = router_factory(breaker_failures=1, probe_interval=1.0, probe_max_interval=1.0)
    (node,) = join(router, fake_nodes, 1)
    node.set_fault("status500", times=1)
    client = openai.OpenAI(base_url=router.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="llama3", messages=[{"role": "user", "content": "a"}])
    # Now the breaker is open: a 503 with Retry-After, which the SDK waits out and retries.
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="llama3", messages=[{"role": "user", "content": "a"}])
    assert err.value.status_code == 503
    retrying = openai.OpenAI(base_url=router.url + "/v1", api_key="x", max_retries=3)
    reply = retrying.chat.completions.create(
        model="llama3", messages=[{"role": "user", "content": "a"}]
    )
    assert reply.choices[0].message.content


class CaptureNode:
    """A runtime that records each request head it gets and answers a fixed completion.

    With `answers_per_connection` set it closes a connection, without a byte, when a request
    past that count arrives on it: a keep-alive socket the runtime closed while idle, seen by
    the router only once it has sent on it."""

    def __init__(self, answers_per_connection: int | None = None) -> None:
        self.answers_per_connection = answers_per_connection
        self.connections = 0
        self.heads: list[bytes] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if answered == self.answers_per_connection:
                    writer.transport.abort()
                    return
                answered += 1
                self.heads.append(head)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                body = b'{"choices": [{"message": {"content": "ok"}}]}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.mark.parametrize(
    "content_type",
    [b"application/x-www-form-urlencoded", b"text/plain", None, b"application/json; charset=x"],
)
def test_json_reaches_the_node_as_json(router: Any, content_type: bytes | None) -> None:
    node = CaptureNode()
    try:
        body = {"machine_name": "capture", "runtime_port": node.port, "models": ["llama3"]}
        body["runtime_kind"] = "openai"  # said, so the router does not ask GET /api/tags
        assert http("POST", router.url + "/api/agents/register", body)[0] == 201
        conn = httpclient.HTTPConnection("127.0.0.1", router.port, timeout=10)
        headers = {"content-type": content_type.decode()} if content_type else {}
        conn.request("POST", "/v1/chat/completions", json.dumps(CHAT).encode(), headers)
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        conn.close()
        (head,) = node.heads
        fields = [line.lower() for line in head.split(b"\r\n")[1:] if line]
        assert [f for f in fields if f.startswith(b"content-type:")] == [
            b"content-type: application/json"
        ]
    finally:
        node.close()


def test_a_stale_keepalive_socket_is_retried_on_a_fresh_one_and_counts_as_nothing(
    router: Any,
) -> None:
    node = CaptureNode(answers_per_connection=1)
    try:
        body = {"machine_name": "capture", "runtime_port": node.port, "models": ["llama3"]}
        body["runtime_kind"] = "openai"  # said, so the router does not ask GET /api/tags
        status, _, reg = http("POST", router.url + "/api/agents/register", body)
        assert status == 201
        statuses = [chat(router)[0] for _ in range(5)]
        assert statuses == [200] * 5
        assert len(node.heads) == 5 and node.connections >= 5  # each reuse failed, then fresh
        a = agent(router, reg["agent_id"])
        assert a["status"] == "online" and a["stats"]["failed_requests"] == 0
        assert a["health"]["breaker"]["consecutive_failures"] == 0
    finally:
        node.close()
