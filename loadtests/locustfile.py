"""Locust load test for LLM Router: OpenAI chat (streamed and not), Ollama generate, model lists.

Headless, against a router on :8080 with at least one node serving the model:

    locust -f loadtests/locustfile.py --headless -H http://127.0.0.1:8080 \
        -u 50 -r 10 -t 1m --csv loadtests/out/run

Environment: LLM_ROUTER_MODEL (model to ask for, default "llama3"), LLM_ROUTER_API_KEY (sent
as a bearer token when set), LLM_ROUTER_THINK_MIN / LLM_ROUTER_THINK_MAX (seconds of think
time between a user's requests, default 0.5 / 2).

Streamed rows ("openai chat stream", "ollama generate") time the whole stream, from sending the
request to its last line; the TTFT rows of the same names time its first line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from locust import HttpUser, between, events, tag, task

MODEL = os.environ.get("LLM_ROUTER_MODEL", "llama3")
API_KEY = os.environ.get("LLM_ROUTER_API_KEY", "")
THINK_MIN = float(os.environ.get("LLM_ROUTER_THINK_MIN", "0.5"))
THINK_MAX = float(os.environ.get("LLM_ROUTER_THINK_MAX", "2"))
MESSAGES = [{"role": "user", "content": "Say hello in five words."}]


def _headers() -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if API_KEY:
        headers["authorization"] = f"Bearer {API_KEY}"
    return headers


def _fire_ttft(name: str, started: float, size: int) -> None:
    """Report time to first token as its own entry (request type TTFT)."""
    events.request.fire(
        request_type="TTFT",
        name=name,
        response_time=(time.perf_counter() - started) * 1000.0,
        response_length=size,
        exception=None,
        context={},
    )


def _post(user: HttpUser, path: str, body: dict[str, Any], name: str, stream: bool = False) -> Any:
    """A JSON POST whose outcome the caller decides (`with ... as resp`: resp.failure(...))."""
    return user.client.post(
        path, json=body, headers=_headers(), name=name, stream=stream, catch_response=True
    )


@contextmanager
def _streamed(user: HttpUser, path: str, body: dict[str, Any], name: str) -> Iterator[Any]:
    """POST a streamed request; yields (response, its non-empty lines).

    Locust stops a `stream=True` request's clock at the response head: against llama.cpp that
    was 9 ms for a stream whose first token took 92 ms. This row times the whole stream instead
    (the head's time plus the reading of the body, whatever the loop did with it), reports the
    bytes read, and fires the time to the first line as its own TTFT row.
    """
    started = time.perf_counter()
    with _post(user, path, body, name, stream=True) as resp:
        head_at = time.perf_counter()
        read = 0

        def lines() -> Iterator[bytes]:
            nonlocal read
            for line in resp.iter_lines():
                if not line:
                    continue
                if not read:
                    _fire_ttft(name, started, len(line))
                read += len(line)
                yield line

        try:
            yield resp, lines()
        finally:
            meta = resp.request_meta  # what Locust reports when the `with` block ends
            meta["response_time"] += (time.perf_counter() - head_at) * 1000.0
            meta["response_length"] = read


class OpenAIChatUser(HttpUser):
    """An application calling /v1/chat/completions, half of the time streamed."""

    weight = 3
    wait_time = between(THINK_MIN, THINK_MAX)

    @tag("openai")
    @task(2)
    def chat(self) -> None:
        body = {"model": MODEL, "messages": MESSAGES}
        with _post(self, "/v1/chat/completions", body, "openai chat") as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}: {resp.text[:200]}")
                return
            try:
                content = resp.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError) as exc:
                resp.failure(f"unexpected body: {exc}")
                return
            if not isinstance(content, str):
                resp.failure("no message content")

    @tag("openai", "stream")
    @task(2)
    def chat_stream(self) -> None:
        body = {"model": MODEL, "messages": MESSAGES, "stream": True}
        with _streamed(self, "/v1/chat/completions", body, "openai chat stream") as (resp, lines):
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
                return
            done = False
            for line in lines:
                if not line.startswith(b"data: "):
                    continue
                payload = line[6:]
                if payload == b"[DONE]":
                    done = True
                    break
                if b'"error"' in payload and "error" in json.loads(payload):
                    resp.failure(f"error event: {payload[:200]!r}")
                    return
            if not done:
                resp.failure("stream ended without [DONE]")


class OllamaUser(HttpUser):
    """A client of Ollama's API: /api/generate streams NDJSON until a line with done=true."""

    weight = 2
    wait_time = between(THINK_MIN, THINK_MAX)

    @tag("ollama", "stream")
    @task(3)
    def generate(self) -> None:
        body = {"model": MODEL, "prompt": "Why is the sky blue?"}
        with _streamed(self, "/api/generate", body, "ollama generate") as (resp, lines):
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
                return
            last: dict[str, object] = {}
            for line in lines:
                last = json.loads(line)
                if "error" in last:
                    resp.failure(f"error line: {last['error']}")
                    return
            if not last.get("done"):
                resp.failure("stream ended without done=true")

    @tag("ollama")
    @task(1)
    def generate_whole(self) -> None:
        body = {"model": MODEL, "prompt": "Why is the sky blue?", "stream": False}
        with _post(self, "/api/generate", body, "ollama generate (no stream)") as resp:
            if resp.status_code != 200 or not resp.json().get("done"):
                resp.failure(f"status {resp.status_code}: {resp.text[:200]}")


class ModelListUser(HttpUser):
    """Dashboards and clients listing what the cluster serves."""

    weight = 1
    wait_time = between(THINK_MIN * 2, THINK_MAX * 2)

    @tag("models")
    @task
    def openai_models(self) -> None:
        with self.client.get(
            "/v1/models", headers=_headers(), name="openai models", catch_response=True
        ) as resp:
            if resp.status_code != 200 or not any(m["id"] == MODEL for m in resp.json()["data"]):
                resp.failure(f"model {MODEL} missing: {resp.text[:200]}")

    @tag("models")
    @task
    def ollama_tags(self) -> None:
        with self.client.get(
            "/api/tags", headers=_headers(), name="ollama tags", catch_response=True
        ) as resp:
            if resp.status_code != 200 or not any(
                m["name"].split(":")[0] == MODEL.split(":")[0] for m in resp.json()["models"]
            ):
                resp.failure(f"model {MODEL} missing: {resp.text[:200]}")
