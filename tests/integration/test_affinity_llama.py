"""Prefix affinity end to end on the real runtime: two llama.cpp servers (llama-cpp-python with
the SmolLM2-135M GGUF, `--cache True`), each behind its own real agent, one real router process,
the official `openai` client. Interleaved conversations each stay on one node, and both nodes
serve some.

The runtime lives in its own cached virtualenv (scripts/llama_runtime.sh); scripts/test.sh builds
it and exports LLM_ROUTER_LLAMA_PYTHON. Without that variable this test skips locally and fails
in CI, where nothing may be skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from routercore._balancer_py import mix64, rendezvous_seed
from routercore.bench import llama
from routercore.prefix import prompt_prefix
from routercore.testing.processes import agent_cmd, free_port, url_ok
from tests.support.agents import Proc
from tests.support.llama import llama_python
from tests.support.polling import wait_until
from tests.support.routers import RouterProcess, http

pytestmark = pytest.mark.llama

TURNS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    python = llama_python()
    tmp = tmp_path_factory.mktemp("affinity")
    procs: list[Proc] = []
    router = RouterProcess(str(tmp / "router.db"), log_path=tmp / "router.log")
    try:
        for name in ("llama-a", "llama-b"):
            port = free_port()
            cmd = llama.server_cmd(python, port, n_ctx=2048)
            procs.append(Proc(cmd, tmp / f"{name}.log").start())
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda u=url: url_ok(u + "/v1/models"), timeout=120, message=name)
            (tmp / f"{name}.toml").write_text("")
            env = {"XDG_CONFIG_HOME": str(tmp / name / "cfg"), "XDG_DATA_HOME": str(tmp / name)}
            args = ["--router", router.url, "--runtime-url", url, "--name", name]
            cmd = agent_cmd(*args, "--config", str(tmp / f"{name}.toml"))
            procs.append(Proc(cmd, tmp / f"{name}-agent.log", env).start())
        wait_until(lambda: len(online(router)) == 2, timeout=60, message="both agents register")
        yield router
    finally:
        for proc in reversed(procs):
            proc.stop()
        router.stop()


def online(router: RouterProcess) -> list[dict[str, Any]]:
    agents = http("GET", router.url + "/api/agents")[2]
    return [a for a in agents if a["status"] == "online" and llama.MODEL in a["models"]]


def opening(number: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Answer in one short sentence."},
        {"role": "user", "content": f"Story {number}: a fox met a crow. What happened next?"},
    ]


def rendezvous_node(messages: list[dict[str, str]], agents: list[dict[str, Any]]) -> str:
    """Where every router replica sends a new conversation: node addresses ranked for it."""
    prefix = prompt_prefix("chat.completions", llama.MODEL, {"messages": messages})
    assert prefix is not None

    def score(agent: dict[str, Any]) -> int:
        return mix64(
            prefix.anchor ^ rendezvous_seed(f"{agent['ip_address']}:{agent['runtime_port']}")
        )

    return str(max(agents, key=score)["id"])


def test_each_conversation_stays_on_one_node_and_both_nodes_serve(cluster: RouterProcess) -> None:
    router = cluster
    agents = online(router)
    # Two conversations expected on each node, so "both nodes serve" is a fact of this run, not
    # a matter of luck (with random node ports, rendezvous may put any few on one node).
    chosen: dict[str, list[int]] = {a["id"]: [] for a in agents}
    number = 0
    while any(len(v) < 2 for v in chosen.values()):
        node = rendezvous_node(opening(number), agents)
        if len(chosen[node]) < 2:
            chosen[node].append(number)
        number += 1
    expected = {n: node for node, numbers in chosen.items() for n in numbers}
    chats = {n: opening(n) for n in sorted(expected)}

    client = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)
    served: dict[int, list[str]] = {n: [] for n in chats}
    for turn in range(TURNS):  # interleaved: every conversation's turn t before any turn t + 1
        for n, messages in chats.items():
            raw = client.chat.completions.with_raw_response.create(
                model=llama.MODEL,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=8,
                temperature=0,
            )
            served[n].append(raw.headers["x-router-node"])
            answer = raw.parse().choices[0].message.content or ""
            messages += [
                {"role": "assistant", "content": answer},
                {"role": "user", "content": f"And after that ({turn})?"},
            ]
    for n, nodes in served.items():
        assert nodes == [expected[n]] * TURNS, (n, nodes, expected[n])
    assert {nodes[0] for nodes in served.values()} == {a["id"] for a in agents}

    text = http("GET", router.url + "/metrics")[2].decode()
    hits = float(next(line.split()[-1] for line in text.splitlines()
                      if line.startswith("llm_router_affinity_hit_rate ")))  # fmt: skip
    assert hits == pytest.approx((TURNS - 1) / TURNS)

    def history() -> list[dict[str, Any]]:
        return list(
            http("GET", router.url + "/api/dashboard/request-history?limit=100")[2]["items"]
        )

    rows = wait_until(lambda: len(history()) == 4 * TURNS and history(), message="history rows")
    assert sorted(r["affinity_hit"] for r in rows) == [False] * 4 + [True] * 4 * (TURNS - 1)
