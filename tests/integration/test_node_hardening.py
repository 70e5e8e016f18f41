"""Issue 20, the node and data half: each attack against a real router on loopback, and its bound.

3  client-invented model names: one metrics label, short stored names
6  registration size and count: field limits, body limit, node cap
7  fan-out: bounded concurrency, a shared cached answer, the loop guard on every request
8  a damaged node record: refused at the door, repaired at load, shown as bad, never a 500
11 node replies: no cookies, no forged x-router-node, nosniff and a sandbox CSP
12 odd node framing: a length beside chunked coding, a 204 with a length, control characters
"""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from routercore.testing.raw_node import RawNode
from tests.support.polling import wait_until
from tests.support.providers import provider
from tests.support.routers import ADMIN_TOKEN, RouterThread, http, join
from tests.support.websocket import WSClient

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False}


@pytest.fixture
def raw_nodes() -> Iterator[Callable[..., RawNode]]:
    started: list[RawNode] = []

    def make(reply: Any, **kwargs: Any) -> RawNode:
        node = RawNode(reply, **kwargs)
        started.append(node)
        return node

    yield make
    for node in started:
        node.close()


def register(
    router: RouterThread,
    port: int,
    name: str = "raw",
    models: list[str] | None = None,
    **extra: Any,
) -> tuple[int, Any]:
    # An Ollama node (both APIs, answered as sent): the router does not ask it what it speaks.
    body = {
        "machine_name": name,
        "runtime_port": port,
        "models": models or ["m"],
        "runtime_kind": "ollama",
        **extra,
    }
    status, _, payload = http("POST", router.url + "/api/agents/register", body)
    return status, payload


def reply(status: str, headers: list[str], body: bytes = b"") -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode("latin-1") + body


def exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Everything the router sends back on one connection until it closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while piece := s.recv(65536):
            data += piece
    return data


def chat_request(path: str = "/api/chat", close: bool = True) -> bytes:
    body = json.dumps(CHAT).encode()
    conn = b"connection: close\r\n" if close else b""
    return (
        f"POST {path} HTTP/1.1\r\nhost: r\r\ncontent-type: application/json\r\n".encode()
        + conn
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )


def parse_response(data: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.lower(), []).append(value.strip())
    return int(lines[0].split()[1]), headers, body


def dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out, rest = out + rest[:size], rest[size + 2 :]


# -- 3: client-invented model names ---------------------------------------------------------------


def test_unknown_model_names_share_one_label_and_do_not_grow_the_scrape(
    router: RouterThread, fake_nodes: Callable[..., Any]
) -> None:
    join(router, fake_nodes, 1, models=["llama3"])
    chat = {"messages": [{"role": "user", "content": "hi"}], "stream": False}
    assert http("POST", router.url + "/api/chat", {**chat, "model": "llama3"})[0] == 200
    assert http("POST", router.url + "/api/chat", {**chat, "model": "invented-0"})[0] == 404
    first = http("GET", router.url + "/metrics")[2]
    for i in range(1, 60):
        assert http("POST", router.url + "/api/chat", {**chat, "model": f"invented-{i}"})[0] == 404
    huge = "h" * 200_000
    assert http("POST", router.url + "/api/chat", {**chat, "model": huge})[0] == 404
    text = http("GET", router.url + "/metrics")[2]
    assert isinstance(first, bytes) and isinstance(text, bytes)
    assert b"invented-" not in text and b"hhhh" not in text
    assert b'model="llama3"' in text
    assert b"llm_router_unknown_model_requests_total 61" in text
    # The bound: 60 more invented names add one endpoint's series and a few digits, no more.
    assert len(text) - len(first) < 4096, len(text) - len(first)

    def stored() -> list[dict[str, Any]]:
        return http("GET", router.url + "/api/dashboard/request-history?limit=500")[2]["items"]

    # Invented names are counted only: no history row per name either (the requests for the
    # known model above are there, so the history itself works).
    wait_until(lambda: any(r["model"] == "llama3" for r in stored()), message="llama3 stored")
    assert not [r for r in stored() if r["model"].startswith(("hhh", "invented-"))]


def test_long_listed_model_names_are_cut_in_labels(
    router: RouterThread, fake_nodes: Callable[..., Any]
) -> None:
    long_name = "m" * 250
    join(router, fake_nodes, 1, models=[long_name])
    body = {"model": long_name, "messages": [{"role": "user", "content": "hi"}], "stream": False}
    assert http("POST", router.url + "/api/chat", body)[0] == 200
    text = http("GET", router.url + "/metrics")[2].decode()
    labels = [part for part in text.split('"') if part.startswith("mmm")]
    assert labels and {len(label) for label in labels} == {128}


def test_provider_models_keep_their_label_and_invented_ones_do_not(
    router_factory: Callable[..., Any],
    provider_node: Any,
    tls_files: Any,
) -> None:
    router = router_factory(providers=(provider(provider_node, tls_files[0]),))
    wait_until(lambda: len(http("GET", router.url + "/v1/models")[2]["data"]) == 2)
    url = router.url + "/v1/chat/completions"
    status, headers, _ = http("POST", url, {**CHAT, "model": "acme:gpt-4o-mini"})
    assert status == 200
    assert headers["x-content-type-options"] == "nosniff"  # provider replies too (item 11)
    assert headers["content-security-policy"] == "sandbox"
    assert http("POST", url, {**CHAT, "model": "acme:made-up-1"})[0] >= 400
    text = http("GET", router.url + "/metrics")[2]
    assert b'model="acme:gpt-4o-mini"' in text and b"made-up" not in text
    assert b"llm_router_unknown_model_requests_total 1" in text


# -- 6: registration size and count ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"system": {"os": "x" * 257}}, "system.os"),
        ({"system": {"blob": {"nested": True}}}, "system.blob"),
        ({"system": {f"k{i}": i for i in range(17)}}, "'system'"),
        ({"system": {"memory_bytes": -1}}, "system.memory_bytes"),
        ({"system": {"cpu_count": "8"}}, "system.cpu_count"),
        ({"gpu_devices": [{"model": "gpu"}] * 65}, "'gpu_devices'"),
        ({"gpu_devices": [{"model": "x" * 300}]}, "gpu_devices[0].model"),
        ({"gpu_devices": [{"memory_bytes": 1.5}]}, "gpu_devices[0].memory_bytes"),
        ({"models": [f"m{i}" for i in range(1025)]}, "'models'"),
        ({"models": ["x" * 257]}, "'models'"),
        ({"machine_name": "x" * 256}, "'machine_name'"),
        ({"max_concurrency": 10**9}, "'max_concurrency'"),
    ],
)
def test_oversized_registration_fields_get_400_naming_the_field(
    router: RouterThread, extra: dict[str, Any], field: str
) -> None:
    body = {"machine_name": "n", "runtime_port": 9, "models": ["m"], **extra}
    status, _, payload = http("POST", router.url + "/api/agents/register", body)
    assert status == 400, payload
    assert field in payload["error"], payload
    assert router.agents() == []


def test_registration_and_heartbeat_bodies_are_capped(router_factory: Callable[..., Any]) -> None:
    router = router_factory(max_node_body_bytes=4096)
    big = {"machine_name": "n", "runtime_port": 9, "notes_from_agent": "x" * 5000}
    status, _, payload = http("POST", router.url + "/api/agents/register", big)
    assert status == 413 and "4096" in payload["error"]
    status, agent = register(router, 9, "n")
    assert status == 201
    beat = {"agent_id": agent["agent_id"], "models": [f"model-{i:04d}" for i in range(400)]}
    url = router.url + "/api/health"
    assert http("POST", url, beat, token=agent["agent_token"])[0] == 413
    beat["models"] = beat["models"][:10] * 20  # small, with repeats: kept once each, in order
    assert http("POST", url, beat, token=agent["agent_token"])[0] == 200
    assert router.agents()[0]["models"] == [f"model-{i:04d}" for i in range(10)]


def test_the_number_of_nodes_is_capped(router_factory: Callable[..., Any]) -> None:
    router = router_factory(max_nodes=3)
    for i in range(3):
        assert register(router, 9, f"n{i}")[0] == 201
    status, _, payload = http(
        "POST", router.url + "/api/agents/register", {"machine_name": "n3", "runtime_port": 9}
    )
    assert status == 503 and "max_nodes" in payload["error"]
    assert len(router.agents()) == 3
    assert register(router, 9, "n0")[0] == 200  # a known node may always come back
    victim = router.agents()[0]["id"]
    assert http("DELETE", f"{router.url}/api/agents/{victim}", token=ADMIN_TOKEN)[0] == 204
    assert register(router, 9, "n3")[0] == 201


# -- 7: fan-out ------------------------------------------------------------------------------------


def test_tags_fan_out_is_bounded_and_shared(
    router_factory: Callable[..., Any], raw_nodes: Callable[..., RawNode]
) -> None:
    router = router_factory(fanout_concurrency=4, connect_timeout=0.5, fanout_cache_seconds=60)
    hole = raw_nodes(None)  # accepts, reads, never answers
    for i in range(30):
        assert register(router, hole.port, f"hole-{i}", models=[f"model-{i}"])[0] == 201
    results: list[Any] = []

    def tags() -> None:
        results.append(http("GET", router.url + "/api/tags", timeout=30))

    callers = [threading.Thread(target=tags) for _ in range(5)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(30)
    assert [r[0] for r in results] == [200] * 5
    # The registry's names, though no node answered.
    names = [m["name"] for m in results[0][2]["models"]]
    assert names == sorted(f"model-{i}" for i in range(30))
    # At most fanout_concurrency sockets at once (x2: the node sees closes a little late).
    assert hole.peak_connections <= 2 * 4
    # Five callers, one fan-out: each node was asked at most once (some not before the deadline).
    assert 0 < hole.requests_to("/api/tags") <= 30
    assert all(b"\r\nvia: 1.1 llm-router-" in h.lower() for h in hole.heads)


def test_tags_are_cached_and_keep_only_listed_models(
    router_factory: Callable[..., Any], raw_nodes: Callable[..., RawNode]
) -> None:
    router = router_factory(fanout_cache_seconds=60)
    listing = {
        "models": [
            {"name": "m", "model": "m", "size": 42, "details": {"family": "x"}},
            {"name": "not-listed", "model": "not-listed"},
            {"name": "m2", "model": "m2", "details": {"junk": "j" * 10_000}},
        ]
    }
    body = json.dumps(listing).encode()
    node = raw_nodes(reply("200 OK", [f"content-length: {len(body)}"], body))
    assert register(router, node.port, models=["m", "m2"])[0] == 201
    for _ in range(3):
        status, _, answer = http("GET", router.url + "/api/tags")
        assert status == 200
        assert answer["models"] == [
            {"name": "m", "model": "m", "size": 42, "details": {"family": "x"}},
            {"name": "m2", "model": "m2"},  # an oversized entry keeps its name only
        ]
    assert node.requests_to("/api/tags") == 1


def test_router_registered_as_its_own_node_answers_tags_once(
    router: RouterThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="routercore")
    assert register(router, router.port, "myself", models=["loop-model"])[0] == 201
    status, _, answer = http("GET", router.url + "/api/tags", timeout=30)
    assert status == 200
    assert [m["name"] for m in answer["models"]] == ["loop-model"]
    loops = [r for r in caplog.records if "event=loop_detected" in r.getMessage()]
    assert len(loops) == 1  # the one request that came back to us, answered 508
    status, _, payload = http("GET", router.url + "/api/ps", timeout=30)
    assert status == 200 and payload == {"models": []}


def test_probes_carry_the_routers_via(
    router: RouterThread, raw_nodes: Callable[..., RawNode]
) -> None:
    node = raw_nodes(reply("200 OK", ["content-length: 2"], b"{}"))
    status, agent = register(router, node.port)
    assert status == 201
    router.call(lambda: router.service.registry.mark_unreachable(agent["agent_id"], "test"))
    probe = wait_until(lambda: list(node.heads), timeout=10)  # nothing else calls this node
    assert f"via: {router.service.proxy.via_token}".encode() in probe[0].lower()


# -- 8: a damaged node record -------------------------------------------------------------------


def test_wrongly_typed_nested_fields_are_refused(router: RouterThread) -> None:
    status, payload = register(router, 9, gpu_devices=[{"count": "two"}])
    assert status == 400 and "gpu_devices[0].count" in payload["error"]
    assert http("GET", router.url + "/api/dashboard/snapshot")[0] == 200


def test_a_damaged_stored_row_is_shown_as_bad_after_a_restart(
    router_factory: Callable[..., Any], tmp_path: Any
) -> None:
    db = str(tmp_path / "damaged.db")
    router = router_factory(db=db)
    assert register(router, 9, "bad-node")[0] == 201
    assert register(router, 9, "good-node")[0] == 201
    router.stop()
    con = sqlite3.connect(db)  # damage as a hand edit or an older version could leave it
    con.execute(
        "UPDATE nodes SET gpu_devices = ?, system = ?, models = ?, max_concurrency = ? "
        "WHERE machine_name = 'bad-node'",
        ('[{"count": "two"}]', "{not json", '{"a": 1}', "lots"),
    )
    con.commit()
    con.close()

    router = router_factory(db=db)
    status, _, snap = http("GET", router.url + "/api/dashboard/snapshot")
    assert status == 200
    rows = {row["machine_name"]: row for row in snap["nodes"]}
    bad, good = rows["bad-node"], rows["good-node"]
    assert good["problem"] is None
    for field in ("gpu_devices", "system", "models", "max_concurrency"):
        assert field in bad["problem"]
    assert bad["models"] == [] and bad["gpu_count"] == 0
    detail_status, _, detail = http("GET", f"{router.url}/api/dashboard/nodes/{bad['id']}")
    assert detail_status == 200 and detail["node"]["problem"] == bad["problem"]
    status, _, agents = http("GET", router.url + "/api/agents")
    assert status == 200 and len(agents) == 2
    assert http("GET", router.url + "/metrics")[0] == 200
    ws = WSClient(router.url)
    try:
        pushed = ws.receive_json()
        assert {n["machine_name"] for n in pushed["nodes"]} == {"bad-node", "good-node"}
    finally:
        ws.close()
    # The node's next registration replaces the damaged record.
    assert register(router, 9, "bad-node")[0] == 200
    rows = {r["machine_name"]: r for r in http("GET", router.url + "/api/agents")[2]}
    assert rows["bad-node"]["problem"] is None and rows["bad-node"]["models"] == ["m"]


def test_a_row_json_cannot_carry_is_shown_as_bad_not_a_500(router: RouterThread) -> None:
    assert register(router, 9, "odd")[0] == 201
    assert register(router, 9, "fine")[0] == 201

    def damage() -> None:
        node = next(n for n in router.service.registry.nodes.values() if n.machine_name == "odd")
        node.tags = ["fine", object()]  # whatever slips past every check one day
        for listener in router.service.registry.listeners:  # announce: a fresh snapshot
            listener(node.id, node)

    router.call(damage)
    status, _, snap = http("GET", router.url + "/api/dashboard/snapshot")
    assert status == 200
    rows = {row["machine_name"]: row for row in snap["nodes"]}
    assert "cannot be shown" in rows["odd"]["problem"] and rows["fine"]["problem"] is None
    status, _, detail = http("GET", f"{router.url}/api/dashboard/nodes/{rows['odd']['id']}")
    assert status == 200 and "cannot be shown" in detail["node"]["problem"]


# -- 11: node replies served from the router's origin ---------------------------------------------


def test_node_cookies_forged_node_ids_and_active_content_are_neutralised(
    router: RouterThread, raw_nodes: Callable[..., RawNode]
) -> None:
    page = b"<script>alert(document.cookie)</script>"
    node = raw_nodes(
        reply(
            "200 OK",
            [
                "content-type: text/html",
                "set-cookie: session=stolen; Path=/",
                "x-router-node: forged",
                "content-security-policy: script-src *",
                "connection: x-secret",
                "x-secret: hop",
                "keep-alive: timeout=5",
                "x-kept: yes",
                f"content-length: {len(page)}",
            ],
            page,
        )
    )
    status, agent = register(router, node.port)
    assert status == 201
    code, headers, body = parse_response(exchange(router.port, chat_request()))
    assert code == 200 and body == page
    assert "set-cookie" not in headers and "x-secret" not in headers
    assert "keep-alive" not in headers
    assert headers["x-router-node"] == [agent["agent_id"]]
    assert headers["x-content-type-options"] == ["nosniff"]
    assert headers["content-security-policy"] == ["sandbox"]
    assert headers["x-kept"] == ["yes"]


# -- 12: odd node framing -------------------------------------------------------------------------


def test_a_length_beside_chunked_coding_is_dropped(
    router: RouterThread, raw_nodes: Callable[..., RawNode]
) -> None:
    chunks = b'14\r\n{"message":"hello"}\n\r\n0\r\n\r\n'
    node = raw_nodes(
        reply(
            "200 OK",
            [
                "content-type: application/x-ndjson",
                "content-length: 5",
                "transfer-encoding: chunked",
            ],
            chunks,
        )
    )
    assert register(router, node.port)[0] == 201
    code, headers, body = parse_response(exchange(router.port, chat_request()))
    assert code == 200 and "content-length" not in headers
    assert headers["transfer-encoding"] == ["chunked"]
    assert dechunk(body) == b'{"message":"hello"}\n'


def test_a_204_is_relayed_without_a_length_and_the_connection_stays_usable(
    router: RouterThread, raw_nodes: Callable[..., RawNode]
) -> None:
    node = raw_nodes(reply("204 No Content", ["content-length: 0"]))
    assert register(router, node.port)[0] == 201
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as s:
        s.sendall(chat_request(close=False))
        first = s.recv(65536)
        code, headers, body = parse_response(first)
        assert code == 204 and "content-length" not in headers and body == b""
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: r\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    "bad_line",
    [
        b"x-a: one\ntwo",
        b"x-a: one\rtwo",
        b"x-a: one\x00two",
        b"x-a: \x07bell",
        b"x a: b",
        b"x-a:\x0bb",
    ],
)
def test_a_control_character_in_a_node_header_gives_502(
    router: RouterThread, raw_nodes: Callable[..., RawNode], bad_line: bytes
) -> None:
    node = raw_nodes(b"HTTP/1.1 200 OK\r\n" + bad_line + b"\r\ncontent-length: 2\r\n\r\n{}")
    assert register(router, node.port)[0] == 201
    code, _, body = parse_response(exchange(router.port, chat_request()))
    assert code == 502, body
    assert "error" in json.loads(body)
    assert http("GET", router.url + "/healthz")[0] == 200
