"""Whole OpenAI answers as Ollama's (routercore.translate.bodies): the real llama.cpp answers,
embeddings (per-token vectors pooled), show, errors. Every answer is checked with the official
`ollama` client's response types."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ollama._types import (
    ChatResponse,
    EmbeddingsResponse,
    EmbedResponse,
    GenerateResponse,
    ShowResponse,
)

from routercore.errors import ModelNotFound
from routercore.translate import CONTENT_TYPE_JSON, TranslationError, ollama_response_translator
from routercore.translate.bodies import BodyTranslator
from tests.support.json_values import json_values, some_of

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "translate"
STAMP = "2026-01-02T03:04:05.000000Z"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def translate(endpoint: str, raw: bytes, *, pieces: int = 1, **kwargs) -> tuple[object, dict]:
    ticks = iter(range(5_000_000, 10**12, 1_000_000))
    t = ollama_response_translator(
        endpoint,
        model="client-name",
        streaming=False,
        started_ns=1_000_000,
        clock_ns=lambda: next(ticks),
        now_rfc3339=lambda: STAMP,
        **kwargs,
    )
    step = max(1, len(raw) // pieces)
    for i in range(0, len(raw), step):
        assert t.feed(raw[i : i + step]) == b""
    return t, orjson.loads(t.finish())


# --- chat and generate ---


@pytest.mark.parametrize("pieces", [1, 7])
def test_real_llama_chat_answer(pieces):
    t, answer = translate("api.chat", fixture("llama_chat.json"), pieces=pieces)
    assert t.content_type == CONTENT_TYPE_JSON == b"application/json; charset=utf-8"
    assert answer == {
        "model": "client-name",
        "created_at": STAMP,
        "message": {"role": "assistant", "content": "Smallassy"},
        "done": True,
        "done_reason": "stop",
        "total_duration": 4_000_000,
        "load_duration": 0,
        "prompt_eval_count": 36,
        "eval_count": 5,
    }
    ChatResponse.model_validate(answer)
    assert t.usage() == (36, 5)


def test_real_llama_completion_answer_on_generate():
    _, answer = translate("api.generate", fixture("llama_completion.json"))
    GenerateResponse.model_validate(answer)
    assert answer["response"] == " a canvas of colors,"
    assert answer["done_reason"] == "length"
    assert answer["prompt_eval_count"] == 3 and answer["eval_count"] == 5
    assert "message" not in answer and "context" not in answer


def test_chat_answer_on_generate_gives_response():
    _, answer = translate("api.generate", fixture("llama_chat.json"))
    GenerateResponse.model_validate(answer)
    assert answer["response"] == "Smallassy"


def test_tool_calls_and_reasoning_in_a_whole_answer():
    raw = orjson.dumps(
        {
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "reasoning_content": "need weather",
                        "tool_calls": [
                            {
                                "id": "call_9",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                            }
                        ],
                    },
                }
            ]
        }
    )
    t, answer = translate("api.chat", raw)
    assert answer["message"] == {
        "role": "assistant",
        "content": "",
        "thinking": "need weather",
        "tool_calls": [
            {
                "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Oslo"}},
                "id": "call_9",
            }
        ],
    }
    assert answer["done_reason"] == "stop"
    assert "eval_count" not in answer and t.usage() == (None, None)
    assert ChatResponse.model_validate(answer).message.tool_calls[0].function.name == "get_weather"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"<html>oops", "the node's answer is not JSON"),
        (b"[1]", "the node's answer is not a JSON object"),
        (b'{"choices": []}', "the node's answer has no choices"),
        (b'{"choices": [{"index": 0}]}', "the node's answer has neither a message nor a text"),
        (b'{"choices": [{"message": {"content": 3}}]}', "the node's content is not a string"),
        (b'{"error": {"message": "boom"}}', "boom"),
        (
            b'{"choices": [{"message": {"content": "", "tool_calls": [{"function": {}}]}}]}',
            "upstream tool call without a function name",
        ),
    ],
)
def test_unreadable_answers_raise_translation_error_502(raw, message):
    with pytest.raises(TranslationError) as caught:
        translate("api.chat", raw)
    assert caught.value.message == message
    assert caught.value.status == 502


def test_body_size_is_capped():
    t = BodyTranslator(
        model="m", started_ns=0, clock_ns=lambda: 0, now_rfc3339=lambda: STAMP, max_body=10
    )
    t.feed(b"12345")
    with pytest.raises(TranslationError):
        t.feed(b"678901")
    assert t.error


# --- embeddings ---


def test_real_llama_per_token_embeddings_are_mean_pooled_and_normalized():
    raw = fixture("llama_embeddings_per_token.json")
    upstream = orjson.loads(raw)
    t, answer = translate("api.embed", raw)
    EmbedResponse.model_validate(answer)
    assert set(answer) == {
        "model",
        "embeddings",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
    }
    assert answer["prompt_eval_count"] == 3 and t.usage() == (3, None)
    assert len(answer["embeddings"]) == 2
    for item, vector in zip(upstream["data"], answer["embeddings"], strict=True):
        rows = item["embedding"]
        mean = [sum(col) / len(rows) for col in zip(*rows, strict=True)]
        norm = math.sqrt(sum(x * x for x in mean))
        assert vector == pytest.approx([x / norm for x in mean])
        assert math.fsum(x * x for x in vector) == pytest.approx(1.0)


def test_openai_embeddings_are_put_in_input_order():
    raw = orjson.dumps(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": 1, "embedding": [0.0, 2.0]},
                {"object": "embedding", "index": 0, "embedding": [3.0, 4.0]},
            ],
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }
    )
    _, answer = translate("api.embed", raw)
    assert answer["embeddings"] == [[0.6, 0.8], [0.0, 1.0]]


def test_legacy_embeddings_are_pooled_but_not_normalized():
    _, answer = translate("api.embeddings", fixture("llama_embeddings_per_token.json"))
    EmbeddingsResponse.model_validate(answer)
    rows = orjson.loads(fixture("llama_embeddings_per_token.json"))["data"][0]["embedding"]
    assert answer == {
        "embedding": pytest.approx([sum(c) / len(rows) for c in zip(*rows, strict=True)])
    }


@pytest.mark.parametrize(
    "data",
    [
        None,
        [{"embedding": "abc"}],
        [{"embedding": []}],
        [{"embedding": [[1.0], [1.0, 2.0]]}],
        [{"embedding": [[1.0], ["x"]]}],
        [{"embedding": [1.0, True]}],
        [3],
    ],
)
def test_malformed_embeddings_raise_translation_error(data):
    with pytest.raises(TranslationError):
        translate("api.embed", orjson.dumps({"data": data}))


def test_real_llama_embeddings_disabled_error_is_a_translation_error():
    with pytest.raises(TranslationError) as caught:
        translate("api.embed", fixture("llama_embeddings_disabled_error.json"))
    assert "embedding=True" in caught.value.message


# --- show ---


def test_show_from_the_real_llama_model_list():
    _, answer = translate("api.show", fixture("llama_models.json"), upstream_model="smollm2")
    parsed = ShowResponse.model_validate(answer)
    assert parsed.capabilities == ["completion"]
    assert answer == {
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": {
            "parent_model": "",
            "format": "",
            "family": "",
            "families": None,
            "parameter_size": "",
            "quantization_level": "",
        },
        "model_info": {},
        "capabilities": ["completion"],
    }


def test_show_finds_the_upstream_id_and_reads_llama_cpp_meta():
    raw = orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": "other", "object": "model"},
                {
                    "id": "/models/qwen2.5-7b-instruct-q4_k_m.gguf",
                    "object": "model",
                    "owned_by": "llamacpp",
                    "meta": {"n_params": 7_615_616_512, "n_ctx_train": 32768},
                },
            ],
        }
    )
    _, answer = translate("api.show", raw, upstream_model="/models/qwen2.5-7b-instruct-q4_k_m.gguf")
    ShowResponse.model_validate(answer)
    assert answer["details"]["format"] == "gguf"
    assert answer["details"]["parameter_size"] == "7.6B"
    assert answer["model_info"] == {"general.parameter_count": 7_615_616_512}


def test_show_of_an_embedding_model():
    raw = orjson.dumps({"data": [{"id": "text-embedding-3-small", "object": "model"}]})
    t = ollama_response_translator(
        "api.show",
        model="openai:text-embedding-3-small",
        streaming=False,
        started_ns=0,
        upstream_model="text-embedding-3-small",
    )
    t.feed(raw)
    assert orjson.loads(t.finish())["capabilities"] == ["embedding"]


def test_show_of_a_model_the_node_does_not_list_is_a_404():
    with pytest.raises(ModelNotFound) as caught:
        translate("api.show", fixture("llama_models.json").replace(b"smollm2", b"other"))
    assert caught.value.status == 404
    assert caught.value.message == "model 'client-name' not found"


def test_unknown_endpoint_has_no_translator():
    with pytest.raises(ValueError):
        ollama_response_translator("api.pull", model="m", streaming=False, started_ns=0)


JSON = json_values(st.sampled_from(["id", "index", "embedding", "message", "text"]))
ANSWERS = some_of(
    {
        "choices": JSON
        | st.lists(
            some_of(
                {
                    "message": JSON
                    | some_of({"content": JSON, "tool_calls": JSON, "reasoning": JSON}),
                    "text": JSON,
                    "finish_reason": JSON,
                },
            ),
            max_size=2,
        ),
        "data": JSON
        | st.lists(some_of({"id": JSON, "embedding": JSON, "index": JSON, "meta": JSON})),
        "usage": JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    ANSWERS,
    st.sampled_from(["api.chat", "api.generate", "api.embed", "api.embeddings", "api.show"]),
)
def test_odd_answers_translate_or_raise_a_router_error(payload, endpoint):
    try:
        _, answer = translate(endpoint, orjson.dumps(payload))
    except (TranslationError, ModelNotFound):
        return
    kind = {
        "api.chat": ChatResponse,
        "api.generate": GenerateResponse,
        "api.embed": EmbedResponse,
        "api.embeddings": EmbeddingsResponse,
        "api.show": ShowResponse,
    }[endpoint]
    kind.model_validate(answer)
