"""Prefix affinity through a real router and fake nodes: conversations stick on both APIs, the
load bound moves them, the history records hits, streams are relayed as before, and
PREFIX_AFFINITY=false routes as the configured balancer alone does."""

from __future__ import annotations

import asyncio
import http.client as httpclient
import json
from typing import Any

import ollama
import openai
import pytest

from routercore._balancer_py import mix64, rendezvous_seed
from routercore.prefix import prompt_prefix
from tests.support.routers import http, join

MODEL = "llama3"
EXPECTED = " ".join(f"tok{i}" for i in range(8))
PATHS = {
    "chat.completions": "/v1/chat/completions",
    "completions": "/v1/completions",
    "api.chat": "/api/chat",
    "api.generate": "/api/generate",
}


def question(conversation: int, turn: int) -> str:
    # Long enough that a raw prompt spans several fixed-size chunks.
    return f"conversation {conversation}, question {turn}: " + "why is the sky blue? " * 20


class Conversation:
    """One multi-turn conversation on one endpoint; the history grows with each answer."""

    def __init__(self, endpoint: str, number: int) -> None:
        self.endpoint = endpoint
        self.number = number
        self.turn = 0
        self.messages: list[dict[str, Any]] = []
        self.prompt = ""

    def body(self) -> dict[str, Any]:
        text = question(self.number, self.turn)
        body: dict[str, Any] = {"model": MODEL, "stream": False}
        if self.endpoint in ("chat.completions", "api.chat"):
            self.messages.append({"role": "user", "content": text})
            body["messages"] = list(self.messages)
        else:
            self.prompt += f"\nUser: {text}\nAssistant:"
            body["prompt"] = self.prompt
        return body

    def answered(self, reply: dict[str, Any]) -> None:
        if self.endpoint == "chat.completions":
            self.messages.append(reply["choices"][0]["message"])
        elif self.endpoint == "api.chat":
            self.messages.append(reply["message"])
        elif self.endpoint == "completions":
            self.prompt += reply["choices"][0]["text"]
        else:
            self.prompt += reply["response"]
        self.turn += 1

    def send(self, router: Any) -> str:
        status, headers, reply = http("POST", router.url + PATHS[self.endpoint], self.body())
        assert status == 200, reply
        self.answered(reply)
        return str(headers["x-router-node"])


def rendezvous_node(body: dict[str, Any], endpoint: str, agents: list[dict[str, Any]]) -> str:
    """Where any router replica sends this first turn: node addresses ranked for its anchor."""
    prefix = prompt_prefix(endpoint, MODEL, body)
    assert prefix is not None

    def score(agent: dict[str, Any]) -> int:
        seed = rendezvous_seed(f"{agent['ip_address']}:{agent['runtime_port']}")
        return mix64(prefix.anchor ^ seed)

    return str(max(agents, key=score)["id"])


def spread_conversations(endpoint: str, agents: list[dict[str, Any]], each: int) -> list[int]:
    """Conversation numbers whose first turns land `each` on every node (by rendezvous)."""
    chosen: dict[str, list[int]] = {a["id"]: [] for a in agents}
    number = 0
    while any(len(v) < each for v in chosen.values()):
        node = rendezvous_node(Conversation(endpoint, number).body(), endpoint, agents)
        if len(chosen[node]) < each:
            chosen[node].append(number)
        number += 1
    return sorted(n for v in chosen.values() for n in v)


def history(router: Any) -> list[dict[str, Any]]:
    router.call(router.service.proxy.flush_rows)
    router.service.store.flush()
    fut = asyncio.run_coroutine_threadsafe(
        router.service.store.query_requests(limit=500), router.loop
    )
    rows: list[dict[str, Any]] = fut.result(10)[0]
    return rows[::-1]  # oldest first


@pytest.mark.parametrize("endpoint", list(PATHS))
def test_each_conversation_sticks_to_one_node_and_all_nodes_are_used(
    router_factory: Any, fake_nodes: Any, endpoint: str
) -> None:
    router = router_factory(balancer="round_robin")
    join(router, fake_nodes, 2)
    agents = router.agents()
    numbers = spread_conversations(endpoint, agents, each=2)
    conversations = [Conversation(endpoint, n) for n in numbers]
    expected = {
        c.number: rendezvous_node(Conversation(endpoint, c.number).body(), endpoint, agents)
        for c in conversations
    }
    served: dict[int, list[str]] = {c.number: [] for c in conversations}
    for _turn in range(4):  # interleaved: every conversation's turn t before any turn t + 1
        for c in conversations:
            served[c.number].append(c.send(router))
    for number, nodes in served.items():
        assert nodes == [expected[number]] * 4, (number, nodes)
    assert {nodes[0] for nodes in served.values()} == {a["id"] for a in agents}
    rows = history(router)
    assert [r["affinity_hit"] for r in rows] == [False] * len(numbers) + [True] * 3 * len(numbers)


def test_the_load_bound_moves_a_conversation_off_a_busy_node(
    router_factory: Any, fake_nodes: Any
) -> None:
    router = router_factory()
    nodes = join(router, fake_nodes, 2)
    talk = Conversation("api.generate", 0)
    home = talk.send(router)
    port_of = {a["id"]: a["runtime_port"] for a in router.agents()}
    home_node = next(n for n in nodes if n.port == port_of[home])
    home_node.node.configure(token_delay=0.3, tokens=4)
    # Three slow streams of the same conversation, each within the bound when it starts (0, 1,
    # 2 in flight against means 0, 0.5, 1), so all on the home node.
    streams = []
    for _ in range(3):
        conn = httpclient.HTTPConnection("127.0.0.1", router.port, timeout=30)
        conn.request("POST", "/api/generate", json.dumps({**talk.body(), "stream": True}))
        resp = conn.getresponse()
        assert resp.getheader("x-router-node") == home
        streams.append((conn, resp))
    try:
        # Now 3 in flight on home and 0 on the other: mean 1.5, bound 1.25 x 1.5 + 1 = 2.875.
        moved = talk.send(router)
        assert moved != home
        assert history(router)[-1]["affinity_hit"] is False
    finally:
        home_node.node.configure(token_delay=0.0, tokens=8)
        for conn, resp in streams:
            resp.read()
            conn.close()
    # The conversation now lives where it moved to: its newest prompt was recorded there.
    assert talk.send(router) == moved
    assert history(router)[-1]["affinity_hit"] is True


def test_streams_are_relayed_as_before(router_factory: Any, fake_nodes: Any) -> None:
    """Streamed follow-ups through the official clients: same chunks with affinity on and off."""
    texts: dict[bool, list[list[str]]] = {}
    for affinity in (True, False):
        router = router_factory(prefix_affinity=affinity)
        join(router, fake_nodes, 2)
        oa = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)
        ol = ollama.Client(host=router.url)
        messages: list[dict[str, Any]] = [{"role": "user", "content": "hello"}]
        got = []
        for turn in range(3):
            chunks = [
                c.choices[0].delta.content or ""
                for c in oa.chat.completions.create(model=MODEL, messages=messages, stream=True)  # type: ignore[arg-type]
                if c.choices
            ]
            got.append(chunks)
            messages += [
                {"role": "assistant", "content": "".join(chunks)},
                {"role": "user", "content": f"and {turn}?"},
            ]
        prompt = "Once upon a time, " * 20  # longer than one chunk: raw prompts need that
        for _turn in range(3):
            pieces = [p["response"] for p in ol.generate(model=MODEL, prompt=prompt, stream=True)]
            got.append(pieces)
            prompt += "".join(pieces) + " And then?"
        texts[affinity] = got
        rows = history(router)
        hits = [r["affinity_hit"] for r in rows]
        if affinity:
            assert hits == [False, True, True, False, True, True]
        else:
            assert hits == [None] * 6
    assert texts[True] == texts[False]
    assert all("".join(chunks).strip() == EXPECTED for chunks in texts[True])
    assert all(len(chunks) >= 8 for chunks in texts[True])  # one chunk per token at least


def test_affinity_off_is_the_configured_balancer_alone(
    router_factory: Any, fake_nodes: Any
) -> None:
    """PREFIX_AFFINITY=false: round robin alternates a conversation's turns, as before."""
    router = router_factory(balancer="round_robin", prefix_affinity=False)
    join(router, fake_nodes, 2)
    talk = Conversation("chat.completions", 0)
    served = [talk.send(router) for _ in range(4)]
    assert served[0] != served[1] and served[0::2] == [served[0]] * 2
    assert served[1::2] == [served[1]] * 2
    assert router.service.balancer.prefix_entries() == []
    status, _, overview = http("GET", router.url + "/api/dashboard/overview")
    assert status == 200 and overview["affinity"] == {
        "enabled": False,
        "hits": 0,
        "picks": 0,
        "hit_rate": None,
    }
