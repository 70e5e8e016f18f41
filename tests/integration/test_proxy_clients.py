"""The official openai and ollama clients against a router with fake nodes."""

from __future__ import annotations

import collections

import ollama
import openai
import pytest

from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN, http, join

MSG = [{"role": "user", "content": "hello"}]
EXPECTED = " ".join(f"tok{i}" for i in range(8))


@pytest.fixture
def cluster(router, fake_nodes):
    nodes = join(router, fake_nodes, 2, models=["llama3", "nomic-embed"])
    return router, nodes


def test_openai_chat_streamed_and_not(cluster):
    router, _ = cluster
    client = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)
    resp = client.chat.completions.create(model="llama3", messages=MSG)
    assert resp.choices[0].message.content == EXPECTED
    assert resp.usage is not None and resp.usage.completion_tokens == 8

    chunks = list(
        client.chat.completions.create(
            model="llama3", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == EXPECTED
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_openai_completions_embeddings_models(cluster):
    router, _ = cluster
    client = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)
    assert client.completions.create(model="llama3", prompt="hi").choices[0].text == EXPECTED
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="llama3", prompt="hi", stream=True)
        if c.choices
    )
    assert streamed == EXPECTED
    emb = client.embeddings.create(model="nomic-embed", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
    assert sorted(m.id for m in client.models.list()) == ["llama3", "nomic-embed"]
    assert client.models.retrieve("llama3").id == "llama3"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("nope")
    assert err.value.body["code"] == "model_not_found"


def test_every_proxied_response_names_the_node(cluster):
    router, _ = cluster
    client = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)
    ids = {a["id"] for a in router.agents()}
    raw = client.chat.completions.with_raw_response.create(model="llama3", messages=MSG)
    assert raw.headers["x-router-node"] in ids
    status, headers, _ = http(
        "POST", router.url + "/api/generate", {"model": "llama3", "prompt": "x", "stream": False}
    )
    assert status == 200 and headers["x-router-node"] in ids


def test_ollama_client_chat_generate_embed_list(cluster):
    router, _ = cluster
    client = ollama.Client(host=router.url)
    assert client.chat(model="llama3", messages=MSG, stream=False).message.content == EXPECTED
    parts = list(client.chat(model="llama3", messages=MSG, stream=True))
    assert "".join(p.message.content for p in parts) == EXPECTED
    assert parts[-1].done and parts[-1].eval_count == 8
    assert client.generate(model="llama3", prompt="x", stream=False).response == EXPECTED
    gen = list(client.generate(model="llama3", prompt="x", stream=True))
    assert "".join(g.response for g in gen) == EXPECTED
    emb = client.embed(model="nomic-embed", input=["a", "b", "c"])
    assert len(emb.embeddings) == 3
    names = sorted(m.model for m in client.list().models)
    assert names == ["llama3", "nomic-embed"]
    assert client.ps() is not None
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="missing", messages=MSG, stream=False)
    assert err.value.status_code == 404 and "missing" in err.value.error


def test_history_records_tokens_and_nodes(cluster):
    router, _ = cluster
    client = ollama.Client(host=router.url)
    list(client.generate(model="llama3", prompt="x", stream=True))
    oa = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)
    oa.chat.completions.create(model="llama3", messages=MSG)

    found = wait_until(lambda: _history(router) if len(_history(router)) >= 2 else None)
    by_endpoint = {r["endpoint"]: r for r in found}
    gen = by_endpoint["api.generate"]
    assert gen["completion_tokens"] == 8 and gen["stream"] is True and gen["outcome"] == "ok"
    chat = by_endpoint["chat.completions"]
    assert chat["completion_tokens"] == 8 and chat["prompt_tokens"] >= 1
    assert gen["ttfb_ms"] is not None and gen["duration_ms"] >= gen["ttfb_ms"]
    agents = {a["id"]: a for a in router.agents()}
    assert sum(a["stats"]["total_requests"] for a in agents.values()) >= 2


def _history(router):
    import asyncio

    router.service.store.flush()
    fut = asyncio.run_coroutine_threadsafe(
        router.service.store.query_requests(limit=50), router.loop
    )
    return fut.result(10)[0]


def test_bad_requests_get_api_shaped_errors(cluster):
    router, _ = cluster
    cases = [
        ("/v1/chat/completions", b"{not json", 400),
        ("/v1/chat/completions", b'{"messages": []}', 400),
        ("/v1/chat/completions", b'{"model": 5}', 400),
        ("/v1/chat/completions", b'{"model": "llama3", "stream": "yes"}', 400),
        ("/v1/chat/completions", b'{"model": "unknown-model"}', 404),
        ("/api/chat", b"[1,2]", 400),
        ("/api/generate", b'{"model": "unknown-model"}', 404),
    ]
    for path, body, expected in cases:
        status, _, payload = http("POST", router.url + path, raw=body)
        assert status == expected, (path, body, payload)
        if path.startswith("/v1/"):
            assert set(payload["error"]) >= {"message", "type", "code"}
            if expected == 404:
                assert payload["error"]["code"] == "model_not_found"
        else:
            assert isinstance(payload["error"], str) and payload["error"]


def test_aggregates_merge_without_duplicates(router, fake_nodes):
    join(router, fake_nodes, 1, models=["a", "shared"])
    fake_nodes(register=router.url, name="other", models=["b", "shared"])
    wait_until(lambda: len([a for a in router.agents() if a["status"] == "online"]) == 2)
    _, _, tags = http("GET", router.url + "/api/tags")
    assert sorted(m["name"] for m in tags["models"]) == ["a", "b", "shared"]
    _, _, models = http("GET", router.url + "/v1/models")
    ids = [m["id"] for m in models["data"]]
    assert sorted(ids) == ["a", "b", "shared"] and len(ids) == len(set(ids))
    _, _, version = http("GET", router.url + "/api/version")
    assert version["version"]
    counts = collections.Counter(m["name"] for m in tags["models"])
    assert max(counts.values()) == 1
    assert http("GET", router.url + "/api/agents", token=ADMIN_TOKEN)[0] == 200
