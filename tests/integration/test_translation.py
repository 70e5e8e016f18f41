"""Ollama's API on nodes that speak only OpenAI's, through a real router, with the official
`ollama` client: chat and generate (streamed and not), embed, embeddings, show; failures
mid-stream; a client that leaves; and a mix of Ollama and OpenAI-only nodes."""

from __future__ import annotations

import collections
import json
import socket
from typing import Any

import ollama
import pytest

from tests.support.polling import wait_until
from tests.support.routers import http, join


def client(router: Any) -> ollama.Client:
    return ollama.Client(host=router.url)


@pytest.fixture
def openai_node(router: Any, fake_nodes: Any) -> Any:
    (node,) = join(router, fake_nodes, 1, api="openai", models=["llama3"], tokens=6)
    (agent,) = router.agents()
    assert agent["runtime_kind"] == "openai"
    return node


def test_chat_streamed_and_not(router: Any, openai_node: Any) -> None:
    c = client(router)
    reply = c.chat(model="llama3", messages=[{"role": "user", "content": "hi"}])
    assert reply.message.role == "assistant" and reply.message.content
    assert reply.done and reply.done_reason == "stop"
    assert reply.eval_count == 6 and reply.prompt_eval_count and reply.total_duration
    parts = list(c.chat(model="llama3", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert len(parts) >= 3 and parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts) == reply.message.content
    assert parts[-1].eval_count == 6  # from the usage the router asked the node for
    assert openai_node.snapshot()["requests"].get("/api/chat") is None  # never sent as is


def test_generate_streamed_and_not(router: Any, openai_node: Any) -> None:
    c = client(router)
    reply = c.generate(model="llama3", prompt="Why is the sky blue?")
    assert reply.response and reply.done
    parts = list(c.generate(model="llama3", prompt="Why?", stream=True))
    assert parts[-1].done and "".join(p.response for p in parts) == reply.response


def test_embed_and_embeddings(router: Any, openai_node: Any) -> None:
    c = client(router)
    out = c.embed(model="llama3", input=["one", "two"])
    assert len(out.embeddings) == 2 and len(out.embeddings[0]) == 8
    legacy = c.embeddings(model="llama3", prompt="one")
    assert len(legacy.embedding) == 8


def test_show_from_the_nodes_model_list(router: Any, openai_node: Any) -> None:
    shown = client(router).show("llama3")
    assert shown.capabilities and "completion" in shown.capabilities
    with pytest.raises(ollama.ResponseError):
        client(router).show("not-there")


def test_a_node_failure_mid_stream_ends_with_an_error_line(router: Any, openai_node: Any) -> None:
    openai_node.set_fault("drop_after", 2, times=1)
    with pytest.raises(ollama.ResponseError) as err:
        for _ in client(router).chat(
            model="llama3", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass
    assert "upstream node failed" in str(err.value)
    # The node stays in rotation: the next one is served.
    assert client(router).chat(model="llama3", messages=[{"role": "user", "content": "x"}]).done


def test_a_node_error_answer_comes_back_in_ollamas_shape(router: Any, openai_node: Any) -> None:
    openai_node.set_fault("status500", times=1)
    status, headers, body = http(
        "POST",
        router.url + "/api/chat",
        {"model": "llama3", "messages": [{"role": "user", "content": "x"}], "stream": False},
    )
    assert status == 500 and body == {"error": "fake fault: status500"}
    assert headers["x-router-node"] == router.agents()[0]["id"]


def test_a_client_leaving_mid_stream_cancels_the_node(router: Any, fake_nodes: Any) -> None:
    (node,) = join(router, fake_nodes, 1, api="openai", tokens=200, token_delay=0.05)
    sock = socket.create_connection(("127.0.0.1", router.port), timeout=30)
    body = json.dumps({"model": "llama3", "prompt": "x"}).encode()
    sock.sendall(
        b"POST /api/generate HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s"
        % (len(body), body)
    )
    got = b""
    while b'"response"' not in got:
        got += sock.recv(65536)
    sock.close()
    wait_until(lambda: node.snapshot()["cancelled"] == 1, message="the node stops generating")


def test_mixed_nodes_serve_both_apis(router_factory: Any, fake_nodes: Any) -> None:
    # One prompt four times, alternated by round robin: prefix affinity would keep it on one node.
    router = router_factory(balancer="round_robin", prefix_affinity=False)
    fake_nodes(register=router.url, name="ollama-node", models=["llama3"])
    fake_nodes(register=router.url, name="openai-node", api="openai", models=["llama3"])
    wait_until(lambda: len([a for a in router.agents() if a["status"] == "online"]) == 2)
    kinds = {a["id"]: a["runtime_kind"] for a in router.agents()}
    assert sorted(kinds.values()) == ["ollama", "openai"]
    for path, body in (
        ("/api/chat", {"model": "llama3", "messages": [{"role": "user", "content": "x"}]}),
        ("/api/generate", {"model": "llama3", "prompt": "x", "stream": False}),
        (
            "/v1/chat/completions",
            {"model": "llama3", "messages": [{"role": "user", "content": "x"}]},
        ),
    ):
        served = collections.Counter()
        for _ in range(4):
            status, headers, _ = http("POST", router.url + path, body)
            assert status == 200, path
            served[kinds[headers["x-router-node"]]] += 1
        assert served == {"ollama": 2, "openai": 2}, path
