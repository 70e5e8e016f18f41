"""Prefix affinity on two real llama.cpp nodes: follow-up time to first token with and without.

Two llama.cpp servers (`--cache True`, one thread each) sit behind two routers at once, one with
PREFIX_AFFINITY on and one with it off (the configured balancer alone, as before the feature).
Each phase sends a few conversations with long first messages, interleaved turn by turn (every
conversation's turn t before any turn t + 1), and streams every answer: TTFT is the time to the
first streamed event. The phases alternate between the routers round by round, on fresh
conversations, so drift in the machine's load hits both alike. The pick microbenchmark (1,000
indexed prefixes, compiled vs twin) is in bench/balancer.py.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import statistics
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from routercore.bench import llama
from routercore.bench.nodes import register
from routercore.bench.procs import Proc, Processes, free_port, port_open, wait_until

# A plain vocabulary: about 1.3 tokens a word with SmolLM2's tokenizer.
_TEXT = (
    "the river runs past an old mill where the miller keeps his grain in large wooden barrels "
    "each morning he opens the doors and counts the sacks that arrived during the night while "
    "his daughter writes the numbers in a ledger with a green cover and the cat sleeps near the "
    "warm stove dreaming of mice that never come because the dog chases them away"
)
_WORDS = tuple(_TEXT.split(" "))


@dataclass(frozen=True)
class AffinitySettings:
    conversations: int = 3
    turns: int = 3  # the first is cold everywhere; the rest are the follow-ups measured
    document_words: int = 1200  # ~1,300 tokens of history with the chat template
    max_tokens: int = 12
    rounds: int = 2  # each round runs one phase per router, in alternating order

    @classmethod
    def quick(cls) -> AffinitySettings:
        return cls(conversations=2, turns=2, document_words=120, rounds=1)


def document(seed: int, words: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def stream_chat(port: int, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    """One streamed chat completion through a router: TTFT, the node, and the answer."""
    body = json.dumps(
        {
            "model": llama.MODEL,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
        }
    )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    started = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"router answered {resp.status}: {resp.read()[:300]!r}")
    node = resp.getheader("x-router-node") or ""
    ttft: float | None = None
    text = []
    seen = []
    for line in resp:
        seen.append(line)
        if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
            continue
        if ttft is None:
            ttft = time.perf_counter() - started
        event = json.loads(line[6:])
        if "error" in event:
            raise RuntimeError(f"stream failed: {event['error']}")
        for choice in event.get("choices", []):
            text.append(choice.get("delta", {}).get("content") or "")
    conn.close()
    if ttft is None:
        return {"empty": b"".join(seen)[:300].decode(errors="replace"), "node": node}
    return {"ttft_s": ttft, "node": node, "text": "".join(text)}


def phase(port: int, s: AffinitySettings, first_seed: int, names: dict[str, str]) -> dict[str, Any]:
    """Interleaved conversations through one router; TTFTs by turn, requests per node."""
    ask = "Read this, then answer in a few words.\n"
    chats = [
        [{"role": "user", "content": ask + document(seed, s.document_words)}]
        for seed in range(first_seed, first_seed + s.conversations)
    ]
    firsts: list[float] = []
    follow_ups: list[float] = []
    nodes_of: list[list[str]] = [[] for _ in chats]
    per_node: dict[str, int] = {name: 0 for name in names.values()}
    empty: list[str] = []
    for turn in range(s.turns):
        for i, messages in enumerate(chats):
            got = stream_chat(port, messages, s.max_tokens)
            for _ in range(2):
                # llama.cpp's server now and then ends a stream at once with [DONE] and no
                # token; such a request is sent again (and counted), its time not measured.
                if "empty" not in got:
                    break
                empty.append(got["empty"])
                got = stream_chat(port, messages, s.max_tokens)
            if "empty" in got:
                raise RuntimeError(f"the stream carried no token three times: {empty}")
            (firsts if turn == 0 else follow_ups).append(got["ttft_s"])
            name = names.get(got["node"], got["node"])
            nodes_of[i].append(name)
            per_node[name] = per_node.get(name, 0) + 1
            messages.append({"role": "assistant", "content": got["text"]})
            messages.append({"role": "user", "content": f"And what comes after step {turn + 1}?"})
    return {
        "first_turn_ttft_s": [round(x, 3) for x in firsts],
        "follow_up_ttft_s": [round(x, 3) for x in follow_ups],
        "nodes_by_conversation": nodes_of,
        "requests_per_node": per_node,
        "empty_streams": empty,
    }


def _listening(node: Proc, port: int) -> bool:
    return node.alive() and port_open(port)


def _summary(phases: list[dict[str, Any]]) -> dict[str, Any]:
    firsts = [x for p in phases for x in p["first_turn_ttft_s"]]
    follow = [x for p in phases for x in p["follow_up_ttft_s"]]
    per_node: dict[str, int] = {}
    for p in phases:
        for name, count in p["requests_per_node"].items():
            per_node[name] = per_node.get(name, 0) + count
    conversations = [c for p in phases for c in p["nodes_by_conversation"]]
    return {
        "first_turn_mean_s": round(statistics.fmean(firsts), 3),
        "follow_up_mean_s": round(statistics.fmean(follow), 3),
        "follow_up_min_s": min(follow),
        "follow_up_max_s": max(follow),
        "follow_ups": len(follow),
        "requests_per_node": per_node,
        "conversations_on_one_node": sum(len(set(c)) == 1 for c in conversations),
        "conversations": len(conversations),
        "empty_streams_resent": sum(len(p["empty_streams"]) for p in phases),
        "phases": phases,
    }


def run(procs: Processes, s: AffinitySettings) -> dict[str, Any]:
    python = llama.runtime_python(build=True)
    if python is None:
        raise RuntimeError(
            "the affinity section needs the llama.cpp runtime: set LLM_ROUTER_LLAMA_PYTHON "
            "(scripts/llama_runtime.sh prints it)"
        )
    node_ports = {"llama-a": free_port(), "llama-b": free_port()}
    for name, port in node_ports.items():
        node = procs.start(name, llama.server_cmd(python, port), None)
        wait_until(partial(_listening, node, port), 300, name)
    routers: dict[str, int] = {}
    names: dict[str, str] = {}
    for mode, flag in (("with", "true"), ("without", "false")):
        port = free_port()
        procs.router(
            port,
            extra_env={
                "LLM_ROUTER_PREFIX_AFFINITY": flag,
                "LLM_ROUTER_HEARTBEAT_INTERVAL": "3600",
                "LLM_ROUTER_HEARTBEAT_TIMEOUT": "86400",
            },
            name=f"router-{mode}",
        )
        for name, node_port in node_ports.items():
            names[register(port, name, node_port, [llama.MODEL], runtime_kind="openai")] = name
        routers[mode] = port
    loadavg_start = [round(x, 2) for x in os.getloadavg()]
    phases: dict[str, list[dict[str, Any]]] = {"with": [], "without": []}
    seed = 0
    for round_no in range(s.rounds):
        order = ("without", "with") if round_no % 2 == 0 else ("with", "without")
        for mode in order:
            phases[mode].append(phase(routers[mode], s, seed, names))
            seed += s.conversations
    with_, without = _summary(phases["with"]), _summary(phases["without"])
    return {
        "settings": s.__dict__,
        "loadavg_start": loadavg_start,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "with": with_,
        "without": without,
        "follow_up_ratio": round(with_["follow_up_mean_s"] / without["follow_up_mean_s"], 3),
    }
