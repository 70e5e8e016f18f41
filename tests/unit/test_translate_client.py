"""The official `ollama` client, end to end over the translation: its requests go through
`ollama_to_openai`, the real llama.cpp answers (fixtures) through the response translators in
small pieces, and the client must read every answer, stream and error. The HTTP hop is httpx's
in-memory transport: the proxy's own socket tests belong to the integration suite."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import ollama
import orjson
import pytest

from routercore.translate import (
    ollama_response_translator,
    ollama_to_openai,
    ollama_wants_stream,
    openai_error_to_ollama,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "translate"
UPSTREAM = {
    ("/v1/chat/completions", True): "llama_chat_stream.sse",
    ("/v1/chat/completions", False): "llama_chat.json",
    ("/v1/completions", True): "llama_completion_stream.sse",
    ("/v1/completions", False): "llama_completion.json",
    ("/v1/embeddings", False): "llama_embeddings_per_token.json",
    ("/v1/models", False): "llama_models.json",
}


class TranslatingRouter:
    """What the proxy will do for an `openai` node, minus the sockets."""

    def __init__(self, override: bytes | None = None, status: int = 200) -> None:
        self.sent: list[tuple[str, str, dict | None]] = []
        self.override = override
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        endpoint = "api." + request.url.path.rsplit("/", 1)[-1]
        started = time.perf_counter_ns()
        ollama_request = orjson.loads(request.content)
        call = ollama_to_openai(endpoint, ollama_request, "smollm2")
        streaming = ollama_wants_stream(endpoint, ollama_request)
        self.sent.append((call.method, call.path, orjson.loads(call.body) if call.body else None))
        upstream = self.override or (FIXTURES / UPSTREAM[(call.path, streaming)]).read_bytes()
        if self.status != 200:
            return httpx.Response(
                self.status, content=openai_error_to_ollama(self.status, upstream)
            )
        translator = ollama_response_translator(
            endpoint,
            model=ollama_request["model"],
            streaming=streaming,
            started_ns=started,
            upstream_model="smollm2",
        )
        out = b"".join(translator.feed(upstream[i : i + 37]) for i in range(0, len(upstream), 37))
        out += translator.finish()
        return httpx.Response(
            200, content=out, headers={"content-type": translator.content_type.decode()}
        )


def client(router: TranslatingRouter) -> ollama.Client:
    return ollama.Client(host="http://router.test", transport=httpx.MockTransport(router))


def test_chat_streamed():
    router = TranslatingRouter()
    parts = list(
        client(router).chat(
            model="smol",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            options={"temperature": 0, "num_predict": 8},
        )
    )
    assert "".join(p.message.content for p in parts) == "Smallassy"
    assert parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count == 5
    assert all(p.model == "smol" for p in parts)
    assert parts[-1].total_duration >= parts[-1].eval_duration >= 0
    assert router.sent[0][1] == "/v1/chat/completions"
    assert router.sent[0][2]["max_tokens"] == 8 and router.sent[0][2]["stream"] is True


def test_chat_not_streamed():
    answer = client(TranslatingRouter()).chat(
        model="smol", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.message.content == "Smallassy"
    assert answer.prompt_eval_count == 36 and answer.eval_count == 5


def test_generate_streamed_and_raw():
    router = TranslatingRouter()
    parts = list(client(router).generate(model="smol", prompt="The sky is", raw=True, stream=True))
    assert "".join(p.response for p in parts) == " a canvas of colors,"
    assert parts[-1].done_reason == "length"
    assert router.sent[0][1] == "/v1/completions"


def test_generate_not_streamed():
    router = TranslatingRouter()
    answer = client(router).generate(model="smol", prompt="Say hi", system="be brief")
    assert answer.response == "Smallassy" and answer.done
    assert router.sent[0][2]["messages"][0] == {"role": "system", "content": "be brief"}


def test_embed_and_legacy_embeddings():
    c = client(TranslatingRouter())
    embedded = c.embed(model="smol", input=["hi there", "yo"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 6
    legacy = c.embeddings(model="smol", prompt="hi there")
    assert len(legacy.embedding) == 6


def test_show():
    shown = client(TranslatingRouter()).show("smol")
    assert shown.capabilities == ["completion"]


def test_node_error_mid_stream_raises_the_clients_response_error():
    broken = (FIXTURES / "llama_chat_stream.sse").read_bytes().split(b"\n\n")
    stream = b"\n\n".join(broken[:3]) + b'\n\ndata: {"error": {"message": "slot crashed"}}\n\n'
    parts = []
    with pytest.raises(ollama.ResponseError, match="slot crashed"):
        for part in client(TranslatingRouter(stream)).chat(
            model="smol", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            parts.append(part.message.content)
    assert parts == ["S", "m"]


def test_upstream_http_error_reaches_the_client_as_ollamas():
    raw = (FIXTURES / "llama_error_500.json").read_bytes()
    with pytest.raises(ollama.ResponseError) as caught:
        client(TranslatingRouter(raw, status=500)).chat(
            model="smol", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 500
    assert caught.value.error.startswith("1 validation error")
