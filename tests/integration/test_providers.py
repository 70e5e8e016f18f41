"""Cloud providers by model prefix, against a fake provider that behaves like one: HTTPS with a
certificate from a private CA, 401 unless it gets its own key, 429 with Retry-After. Through a
real router on a real socket and the official `openai` client."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import openai

from routercore.config import load_config
from routercore.testing.fakenode import ThreadedFakeNode
from tests.support.netservers import self_signed_cert
from tests.support.polling import wait_until
from tests.support.providers import KEY, provider
from tests.support.routers import ADMIN_TOKEN, http

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def test_prefixed_models_go_to_the_provider_with_its_key(
    router_factory: Any, provider_node: ThreadedFakeNode, tls_files: tuple[Path, Path]
) -> None:
    router = router_factory(providers=(provider(provider_node, tls_files[0]),))
    wait_until(lambda: len(http("GET", router.url + "/v1/models")[2]["data"]) == 2)
    ids = {m["id"] for m in http("GET", router.url + "/v1/models")[2]["data"]}
    assert ids == {"acme:gpt-4o-mini", "acme:text-embedding-3-small"}
    tags = {m["name"] for m in http("GET", router.url + "/api/tags")[2]["models"]}
    assert tags == ids
    # The client's own Authorization is replaced: the provider accepts only its key.
    client = openai.OpenAI(base_url=router.url + "/v1", api_key="sk-the-clients-own")
    reply = client.chat.completions.create(model="acme:gpt-4o-mini", **CHAT)
    assert reply.choices[0].message.content
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="acme:gpt-4o-mini", stream=True, **CHAT)
        if c.choices
    )
    assert text
    emb = client.embeddings.create(model="acme:text-embedding-3-small", input="x")
    assert emb.data[0].embedding
    status, headers, _ = http(
        "POST", router.url + "/v1/chat/completions", {"model": "acme:gpt-4o-mini", **CHAT}
    )
    assert status == 200 and headers["x-router-node"] == "provider:acme"
    # What the provider saw: the model without the prefix.
    assert provider_node.snapshot()["requests"]["/v1/chat/completions"] == 3


def test_the_ollama_api_reaches_a_provider_through_translation(
    router_factory: Any, provider_node: ThreadedFakeNode, tls_files: tuple[Path, Path]
) -> None:
    import ollama

    router = router_factory(providers=(provider(provider_node, tls_files[0]),))
    c = ollama.Client(host=router.url)
    reply = c.chat(model="acme:gpt-4o-mini", messages=CHAT["messages"])
    assert reply.message.content and reply.model == "acme:gpt-4o-mini" and reply.eval_count
    parts = list(c.chat(model="acme:gpt-4o-mini", messages=CHAT["messages"], stream=True))
    assert parts[-1].done and "".join(p.message.content or "" for p in parts)
    emb = c.embed(model="acme:text-embedding-3-small", input="x")
    assert emb.embeddings and emb.embeddings[0]
    provider_node.set_fault("status429", times=1)
    status, headers, body = http(
        "POST",
        router.url + "/api/chat",
        {"model": "acme:gpt-4o-mini", "messages": CHAT["messages"], "stream": False},
    )
    assert status == 429 and headers["retry-after"] == "7"
    assert body == {"error": "Rate limit reached"}


def test_history_records_provider_requests_with_tokens(
    router_factory: Any, provider_node: ThreadedFakeNode, tls_files: tuple[Path, Path]
) -> None:
    router = router_factory(providers=(provider(provider_node, tls_files[0]),))
    body = {"model": "acme:gpt-4o-mini", **CHAT}
    assert http("POST", router.url + "/v1/chat/completions", body)[0] == 200

    def row() -> Any:
        items = http("GET", router.url + "/api/dashboard/request-history")[2]["items"]
        return items[0] if items else None

    found = wait_until(row)
    assert found["node_id"] == "provider:acme" and found["model"] == "acme:gpt-4o-mini"
    assert found["completion_tokens"] and found["outcome"] == "ok"


def test_rate_limit_passes_through_with_retry_after(
    router_factory: Any, provider_node: ThreadedFakeNode, tls_files: tuple[Path, Path]
) -> None:
    router = router_factory(providers=(provider(provider_node, tls_files[0]),))
    provider_node.set_fault("status429", times=1)
    status, headers, body = http(
        "POST", router.url + "/v1/chat/completions", {"model": "acme:gpt-4o-mini", **CHAT}
    )
    assert status == 429 and headers["retry-after"] == "7"
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert headers["x-router-node"] == "provider:acme"


def test_a_wrong_ca_is_refused_and_the_list_fetch_failure_keeps_the_router_up(
    router_factory: Any, provider_node: ThreadedFakeNode, tmp_path: Path
) -> None:
    other_ca, _ = self_signed_cert(tmp_path)  # not the one that signed the provider's cert
    router = router_factory(providers=(provider(provider_node, other_ca, models=("gpt-4o-mini",)),))
    status, _, body = http(
        "POST", router.url + "/v1/chat/completions", {"model": "acme:gpt-4o-mini", **CHAT}
    )
    assert status == 502 and "TLS failed" in body["error"]["message"]
    assert "certificate" in body["error"]["message"].lower()
    assert provider_node.snapshot()["requests"] == {}  # nothing was sent to an unverified host


def test_unconfigured_prefix_says_which_variable_to_set(router: Any) -> None:
    status, _, body = http(
        "POST", router.url + "/v1/chat/completions", {"model": "anthropic:claude-x", **CHAT}
    )
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert "ANTHROPIC_API_KEY" in body["error"]["message"]
    status, _, body = http("POST", router.url + "/api/chat", {"model": "google:gemini", **CHAT})
    assert status == 404 and "GEMINI_API_KEY" in body["error"]


def test_builtin_providers_come_from_their_sdk_variables(tmp_path: Path) -> None:
    cfg = load_config(env={"OPENAI_API_KEY": "sk-a", "GEMINI_API_KEY": "g-b"})
    by_name = {p.name: p for p in cfg.providers}
    assert set(by_name) == {"openai", "google"}
    assert by_name["openai"].base_url == "https://api.openai.com/v1"
    assert "sk-a" not in repr(cfg)  # printing a config never shows a key
    toml = tmp_path / "router.toml"
    toml.write_text(
        '[providers.groq]\nbase_url = "https://api.groq.com/openai/v1"\n'
        'api_key_env = "GROQ_API_KEY"\nmodels = ["llama-3.1-8b-instant"]\n'
    )
    cfg = load_config(config_file=str(toml), env={"GROQ_API_KEY": "gsk"})
    (groq,) = cfg.providers
    assert groq.api_key == "gsk" and groq.models == ("llama-3.1-8b-instant",)


def test_the_key_never_leaks(
    router_factory: Any, provider_node: ThreadedFakeNode, tls_files: tuple[Path, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    """Logs, history, /metrics, the dashboard, error answers: grep them all for the key."""
    log = tmp_path / "router.log"
    router = router_factory(providers=(provider(provider_node, tls_files[0]),), log_level="debug")
    handler = logging.FileHandler(log)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        for model in ("acme:gpt-4o-mini", "acme:nope"):
            http("POST", router.url + "/v1/chat/completions", {"model": model, **CHAT})
        provider_node.set_fault("status429", times=1)
        http("POST", router.url + "/v1/chat/completions", {"model": "acme:gpt-4o-mini", **CHAT})
        seen = [
            http("GET", router.url + path, token=ADMIN_TOKEN)[2]
            for path in (
                "/api/dashboard/request-history",
                "/api/dashboard/overview",
                "/v1/models",
                "/api/tags",
                "/api/agents",
            )
        ]
        metrics = subprocess.run(
            ["curl", "-s", router.url + "/metrics"], capture_output=True, check=True
        ).stdout
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
    assert KEY not in str(seen)
    assert KEY.encode() not in metrics
    text = log.read_text()
    assert "provider=acme" in text and "status=429" in text  # the log did see these requests
    assert KEY not in text
