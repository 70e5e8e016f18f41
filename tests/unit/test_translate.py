"""Ollama requests as OpenAI requests (routercore.translate.requests) and upstream errors as
Ollama's. Responses: test_translate_stream.py and test_translate_bodies.py."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest

from routercore.errors import ClientError
from routercore.translate import (
    UpstreamCall,
    ollama_error_line,
    ollama_to_openai,
    ollama_wants_stream,
    openai_error_to_ollama,
)
from routercore.translate.common import MAX_ERROR_CHARS

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "translate"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 24).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\x00" * 24).decode()


def body(call: UpstreamCall) -> dict:
    assert call.method == "POST"
    return orjson.loads(call.body)


def chat(**fields) -> dict:
    request = {"model": "client-name", "messages": [{"role": "user", "content": "hi"}]}
    request.update(fields)
    return body(ollama_to_openai("api.chat", request, "upstream-name"))


# --- chat ---


def test_chat_maps_messages_model_and_streams_with_usage_by_default():
    call = ollama_to_openai(
        "api.chat",
        {
            "model": "client-name",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello", "thinking": "dropped"},
            ],
            "keep_alive": "5m",
            "think": True,
        },
        "upstream-name",
    )
    assert call.path == "/v1/chat/completions"
    assert orjson.loads(call.body) == {
        "model": "upstream-name",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_chat_without_stream_asks_for_one_answer():
    sent = chat(stream=False)
    assert sent["stream"] is False
    assert "stream_options" not in sent


def test_options_map_to_openai_sampling_fields_and_ollama_only_ones_are_dropped():
    sent = chat(
        options={
            "temperature": 0.2,
            "top_p": 0.9,
            "num_predict": 64,
            "stop": ["\n\n", "END"],
            "seed": 42,
            "frequency_penalty": 0.5,
            "presence_penalty": 0.25,
            "top_k": 40,
            "num_ctx": 4096,
            "repeat_penalty": 1.1,
        }
    )
    assert {k: v for k, v in sent.items() if k not in ("model", "messages", "stream")} == {
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["\n\n", "END"],
        "seed": 42,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.25,
        "stream_options": {"include_usage": True},
    }


@pytest.mark.parametrize("limit", [-1, -2])
def test_negative_num_predict_means_no_limit(limit):
    assert "max_tokens" not in chat(options={"num_predict": limit})


def test_num_predict_zero_is_kept_and_a_single_stop_string_becomes_a_list():
    sent = chat(options={"num_predict": 0, "stop": "###"})
    assert sent["max_tokens"] == 0
    assert sent["stop"] == ["###"]


def test_format_json_and_schema_become_response_format():
    assert chat(format="json")["response_format"] == {"type": "json_object"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert chat(format=schema)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "schema", "schema": schema},
    }
    assert "response_format" not in chat(format="")


def test_tools_pass_through_unchanged():
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    assert chat(tools=tools)["tools"] == tools


def test_images_become_content_parts_with_data_urls_of_the_right_type():
    sent = chat(messages=[{"role": "user", "content": "what is this?", "images": [PNG, JPEG]}])
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG}"}},
            ],
        }
    ]


def tool_conversation(question: str, calls: list[dict], *answers: dict) -> list[dict]:
    """Ollama-shaped messages: a question, the assistant's tool calls, then the tool answers."""
    asked = {"role": "assistant", "content": "", "tool_calls": calls}
    return [{"role": "user", "content": question}, asked, *answers]


def test_tool_calls_and_tool_results_get_matching_ids_and_json_string_arguments():
    calls = [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"function": {"name": "get_time", "arguments": {"tz": "CET"}}},
    ]
    answers = (
        {"role": "tool", "content": "09:00", "tool_name": "get_time"},
        {"role": "tool", "content": "sunny"},
    )
    sent = chat(messages=tool_conversation("weather in Paris and Rome?", calls, *answers))
    assistant, time_answer, weather_answer = sent["messages"][1:]
    assert assistant == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1_0",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {
                "id": "call_1_1",
                "type": "function",
                "function": {"name": "get_time", "arguments": '{"tz":"CET"}'},
            },
        ],
    }
    # matched by tool_name first, then the oldest unanswered call
    assert time_answer == {"role": "tool", "tool_call_id": "call_1_1", "content": "09:00"}
    assert weather_answer == {"role": "tool", "tool_call_id": "call_1_0", "content": "sunny"}


def test_tool_call_ids_the_client_kept_are_used_both_ways():
    call = {"id": "call_abc", "function": {"name": "get_weather", "arguments": {}}}
    answer = {"role": "tool", "content": "rain", "tool_call_id": "call_abc"}
    sent = chat(messages=tool_conversation("weather?", [call], answer))
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_abc"
    assert sent["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert sent["messages"][2]["tool_call_id"] == "call_abc"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"content": "no role"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "x", "images": "abc"}]}, "messages[0].images"),
        ({"messages": [{"role": "user", "images": ["%%%"]}]}, "messages[0].images[0]"),
        ({"messages": [{"role": "tool", "content": "orphan"}]}, "messages[0]"),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"function": {}}]}]},
            "messages[0].tool_calls[0].function.name",
        ),
        ({"options": "hot"}, "options"),
        ({"options": {"temperature": "hot"}}, "options.temperature"),
        ({"options": {"top_p": True}}, "options.top_p"),
        ({"options": {"num_predict": 1.5}}, "options.num_predict"),
        ({"options": {"seed": "x"}}, "options.seed"),
        ({"options": {"stop": [1]}}, "options.stop"),
        ({"format": "yaml"}, "format"),
        ({"tools": {"a": 1}}, "tools"),
        ({"stream": "yes"}, "stream"),
    ],
)
def test_chat_input_that_cannot_be_translated_is_a_400_naming_the_field(fields, named):
    with pytest.raises(ClientError) as caught:
        chat(**fields)
    assert caught.value.status == 400
    assert caught.value.message.startswith(named)


def test_request_that_is_not_an_object_is_a_400():
    with pytest.raises(ClientError):
        ollama_to_openai("api.chat", ["not", "an", "object"], "m")  # type: ignore[arg-type]


def test_unknown_endpoint_is_a_programming_error():
    with pytest.raises(ValueError):
        ollama_to_openai("api.pull", {"model": "m"}, "m")


# --- generate ---


def generate(**fields) -> UpstreamCall:
    request = {"model": "client-name"}
    request.update(fields)
    return ollama_to_openai("api.generate", request, "upstream-name")


def test_generate_goes_to_chat_completions_with_system_and_prompt():
    call = generate(prompt="Why is the sky blue?", system="Answer in one line.", stream=False)
    assert call.path == "/v1/chat/completions"
    assert body(call) == {
        "model": "upstream-name",
        "messages": [
            {"role": "system", "content": "Answer in one line."},
            {"role": "user", "content": "Why is the sky blue?"},
        ],
        "stream": False,
    }


def test_generate_images_and_options_and_format():
    sent = body(
        generate(prompt="describe", images=[PNG], options={"temperature": 0}, format="json")
    )
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ],
        }
    ]
    assert sent["temperature"] == 0
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_raw_generate_goes_to_completions_with_the_prompt_as_is():
    call = generate(prompt="<|im_start|>user\nhi", raw=True, options={"num_predict": 5})
    assert call.path == "/v1/completions"
    assert body(call) == {
        "model": "upstream-name",
        "prompt": "<|im_start|>user\nhi",
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_suffix_is_fill_in_the_middle_on_completions():
    call = generate(prompt="def add(a, b):\n", suffix="\n    return c", stream=False)
    assert call.path == "/v1/completions"
    assert body(call) == {
        "model": "upstream-name",
        "prompt": "def add(a, b):\n",
        "suffix": "\n    return c",
        "stream": False,
    }


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"prompt": "x", "template": "{{ .Prompt }}"}, "template"),
        ({"prompt": "x", "context": [1, 2, 3]}, "context"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x", "system": ["a"]}, "system"),
        ({"prompt": "x", "raw": "yes"}, "raw"),
        ({"prompt": "x", "raw": True, "images": [PNG]}, "images"),
        ({"prompt": "x", "suffix": "y", "system": "s"}, "system"),
    ],
)
def test_generate_input_that_cannot_be_translated_is_a_400_naming_the_field(fields, named):
    with pytest.raises(ClientError) as caught:
        generate(**fields)
    assert caught.value.message.startswith(named)


def test_empty_context_is_not_an_error():
    assert generate(prompt="x", context=[]).path == "/v1/chat/completions"


# --- embeddings, show, stream flag ---


@pytest.mark.parametrize("value", ["one text", ["a", "b"]])
def test_embed_input_and_dimensions(value):
    call = ollama_to_openai(
        "api.embed",
        {"model": "e", "input": value, "truncate": True, "dimensions": 256, "keep_alive": 0},
        "upstream-e",
    )
    assert call.path == "/v1/embeddings"
    assert body(call) == {"model": "upstream-e", "input": value, "dimensions": 256}


@pytest.mark.parametrize(
    "fields", [{}, {"input": 3}, {"input": ["a", 2]}, {"input": "x", "dimensions": "big"}]
)
def test_embed_bad_input_is_a_400(fields):
    with pytest.raises(ClientError):
        ollama_to_openai("api.embed", {"model": "e", **fields}, "e")


def test_legacy_embeddings_prompt_becomes_input():
    call = ollama_to_openai("api.embeddings", {"model": "e", "prompt": "hello"}, "upstream-e")
    assert call.path == "/v1/embeddings"
    assert body(call) == {"model": "upstream-e", "input": "hello"}


def test_show_lists_the_models():
    assert ollama_to_openai("api.show", {"model": "m"}, "m") == UpstreamCall(
        "GET", "/v1/models", b""
    )


def test_wants_stream_follows_ollama_defaults():
    assert ollama_wants_stream("api.chat", {}) is True
    assert ollama_wants_stream("api.generate", {"stream": None}) is True
    assert ollama_wants_stream("api.generate", {"stream": False}) is False
    assert ollama_wants_stream("api.embed", {"stream": True}) is False
    assert ollama_wants_stream("api.show", {}) is False


# --- upstream errors ---


def test_real_llama_cpp_error_with_a_traceback_is_cut_short():
    raw = (FIXTURES / "llama_error_500.json").read_bytes()
    assert b"Traceback" in raw or b'File \\"' in raw
    answer = orjson.loads(openai_error_to_ollama(500, raw))
    assert list(answer) == ["error"]
    assert answer["error"].startswith("1 validation error:")
    assert len(answer["error"]) == MAX_ERROR_CHARS
    assert answer["error"].endswith("…")


@pytest.mark.parametrize(
    ("status", "raw", "message"),
    [
        (
            404,
            b'{"error": {"message": "model x not found", "type": "invalid_request_error"}}',
            "model x not found",
        ),
        (500, b'{"error": "out of memory"}', "out of memory"),
        (404, b'{"detail": "Not Found"}', "Not Found"),
        (429, b'[{"error": {"code": 429, "message": "Resource exhausted"}}]', "Resource exhausted"),
        (502, b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
        (503, b"", "upstream answered HTTP 503"),
        (500, b"[]", "upstream answered HTTP 500"),
        (400, b'{"error": {"code": "bad"}}', '{"code":"bad"}'),
        (500, b"\xff\xfe not utf-8", "\ufffd\ufffd not utf-8"),
    ],
)
def test_any_upstream_error_body_becomes_ollama_error(status, raw, message):
    assert orjson.loads(openai_error_to_ollama(status, raw)) == {"error": message}


def test_error_line_is_one_ndjson_line():
    line = ollama_error_line("x" * 1000)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert len(orjson.loads(line)["error"]) == MAX_ERROR_CHARS
