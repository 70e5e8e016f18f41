"""OpenAI SSE streams as Ollama NDJSON lines (routercore.translate.stream): the real
llama.cpp stream, usage, tool calls, any split of the bytes, errors and garbage. Every line
produced is checked with the official `ollama` client's response types."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ollama._types import ChatResponse, GenerateResponse

from routercore.translate import CONTENT_TYPE_NDJSON, ollama_response_translator
from routercore.translate.stream import StreamTranslator
from tests.support.json_values import json_values, some_of

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "translate"
LLAMA_CHAT_SSE = (FIXTURES / "llama_chat_stream.sse").read_bytes()
LLAMA_COMPLETION_SSE = (FIXTURES / "llama_completion_stream.sse").read_bytes()
STAMP = "2026-01-02T03:04:05.000000Z"


class Clock:
    """A clock that moves 1 ms per read, so durations are exact and split-independent."""

    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        self.now += 1_000_000
        return self.now


def translator(endpoint: str = "api.chat", **kwargs):
    return ollama_response_translator(
        endpoint,
        model="client-name",
        streaming=True,
        started_ns=1_000_000_000,
        clock_ns=Clock(),
        now_rfc3339=lambda: STAMP,
        **kwargs,
    )


def run(data: bytes | list[bytes], endpoint: str = "api.chat"):
    t = translator(endpoint)
    pieces = [data] if isinstance(data, bytes) else data
    out = b"".join(t.feed(piece) for piece in pieces) + t.finish()
    return t, out


def lines(out: bytes, endpoint: str = "api.chat") -> list[dict]:
    assert out.endswith(b"\n")
    parsed = [orjson.loads(line) for line in out.split(b"\n")[:-1]]
    kind = ChatResponse if endpoint == "api.chat" else GenerateResponse
    for line in parsed:
        if "error" not in line:
            kind.model_validate(line)  # the official client reads every line this way
    return parsed


def sse(*chunks: dict | str) -> bytes:
    return b"".join(
        b"data: " + (c.encode() if isinstance(c, str) else orjson.dumps(c)) + b"\n\n"
        for c in chunks
    )


def delta(content: str | None = None, finish: str | None = None, **more) -> dict:
    d = dict(more)
    if content is not None:
        d["content"] = content
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": d, "finish_reason": finish}],
    }


# --- the real llama.cpp stream ---


def test_real_llama_chat_stream_becomes_ollama_lines():
    t, out = run(LLAMA_CHAT_SSE)
    assert t.content_type == CONTENT_TYPE_NDJSON == b"application/x-ndjson"
    got = lines(out)
    assert [line["message"]["content"] for line in got[:-1]] == ["S", "m", "all", "ass", "y"]
    for line in got[:-1]:
        assert line == {
            "model": "client-name",
            "created_at": STAMP,
            "message": {"role": "assistant", "content": line["message"]["content"]},
            "done": False,
        }
    done = got[-1]
    # llama-cpp-python sends no usage chunk: eval_count counts the content deltas
    assert done == {
        "model": "client-name",
        "created_at": STAMP,
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "total_duration": 2_000_000,
        "load_duration": 0,
        "prompt_eval_duration": 1_000_000,
        "eval_count": 5,
        "eval_duration": 1_000_000,
    }
    assert t.usage() == (None, 5)
    assert t.error is None


def test_real_llama_completion_stream_becomes_generate_lines():
    _, out = run(LLAMA_COMPLETION_SSE, "api.generate")
    got = lines(out, "api.generate")
    assert "".join(line["response"] for line in got) == " a canvas of colors,"
    assert all("message" not in line for line in got)
    assert got[-1]["done"] is True and got[-1]["done_reason"] == "length"
    assert got[-1]["response"] == ""
    assert got[-1]["eval_count"] == 5
    assert "context" not in got[-1]


def test_chat_chunks_on_generate_become_response_lines():
    _, out = run(LLAMA_CHAT_SSE, "api.generate")
    got = lines(out, "api.generate")
    assert "".join(line["response"] for line in got) == "Smallassy"


def test_each_delta_goes_out_as_soon_as_it_arrives():
    t = translator()
    events = LLAMA_CHAT_SSE.split(b"\n\n")
    assert t.feed(events[0] + b"\n\n") == b""  # the role-only delta has no content
    line = t.feed(events[1] + b"\n\n")
    assert orjson.loads(line)["message"]["content"] == "S"
    assert t.feed(events[2][:40]) == b""  # half an event: nothing yet
    assert orjson.loads(t.feed(events[2][40:] + b"\n\n"))["message"]["content"] == "m"


# --- usage, timings, finish ---


OPENAI_STREAM = sse(
    delta("", role="assistant"),
    delta("Hello"),
    delta(" world"),
    delta(finish="length"),
    {
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
    },
    "[DONE]",
)


def test_usage_chunk_gives_the_counts():
    t, out = run(OPENAI_STREAM)
    done = lines(out)[-1]
    assert done["prompt_eval_count"] == 12
    assert done["eval_count"] == 2
    assert done["done_reason"] == "length"
    assert t.usage() == (12, 2)


def test_done_line_goes_out_at_done_marker_not_only_at_finish():
    t = translator()
    out = t.feed(OPENAI_STREAM)
    assert orjson.loads(out.split(b"\n")[-2])["done"] is True
    assert t.feed(b'data: {"late": 1}\n\n') == b""
    assert t.finish() == b""


def test_durations_use_the_router_clock():
    clock = Clock()
    t = ollama_response_translator(
        "api.chat", model="m", streaming=True, started_ns=clock.now, clock_ns=clock
    )
    out = t.feed(sse(delta("a"))) + t.feed(sse(delta("b"))) + t.feed(sse(delta(finish="stop")))
    out += t.finish()
    done = orjson.loads(out.split(b"\n")[-2])
    # first content read the clock once (+1 ms), the end once more (+2 ms)
    assert done["prompt_eval_duration"] == 1_000_000
    assert done["eval_duration"] == 1_000_000
    assert done["total_duration"] == 2_000_000
    ChatResponse.model_validate(done)  # the default created_at is a valid timestamp
    assert done["created_at"].endswith("Z") and "T" in done["created_at"]


def test_no_content_at_all_still_ends_with_done():
    _, out = run(sse(delta(finish="stop"), "[DONE]"))
    done = lines(out)[-1]
    assert done["done"] is True and done["eval_count"] == 0
    assert done["eval_duration"] == 0
    assert done["prompt_eval_duration"] == done["total_duration"]


def test_finish_reason_without_done_marker_ends_at_finish():
    _, out = run(sse(delta("x"), delta(finish="stop")))
    assert lines(out)[-1]["done"] is True


def test_reasoning_deltas_become_thinking():
    _, out = run(sse(delta(reasoning_content="hmm"), delta("ok", finish="stop")))
    got = lines(out)
    assert got[0]["message"] == {"role": "assistant", "content": "", "thinking": "hmm"}
    _, out = run(sse(delta(reasoning="hmm"), delta(finish="stop")), "api.generate")
    assert lines(out, "api.generate")[0]["thinking"] == "hmm"


# --- tool calls ---

TOOL_STREAM = sse(
    delta(
        None,
        role="assistant",
        tool_calls=[
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ],
    ),
    delta(None, tool_calls=[{"index": 0, "function": {"arguments": '{"city": '}}]),
    delta(None, tool_calls=[{"index": 0, "function": {"arguments": '"Paris"}'}}]),
    delta(
        None,
        tool_calls=[
            {
                "index": 1,
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            }
        ],
    ),
    delta(finish="tool_calls"),
    "[DONE]",
)


def test_tool_call_deltas_go_out_in_one_line_with_dict_arguments():
    _, out = run(TOOL_STREAM)
    got = lines(out)
    assert len(got) == 2
    assert got[0]["message"] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}},
                "id": "call_1",
            },
            {"function": {"index": 1, "name": "get_time", "arguments": {}}, "id": "call_2"},
        ],
    }
    parsed = ChatResponse.model_validate(got[0])
    assert parsed.message.tool_calls[0].function.arguments == {"city": "Paris"}
    assert got[1]["done"] is True and got[1]["done_reason"] == "stop"


def test_tool_calls_without_index_each_keep_their_own_slot():
    stream = sse(
        delta(
            None,
            tool_calls=[
                {
                    "id": "a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":'},
                }
            ],
        ),
        delta(None, tool_calls=[{"function": {"name": "get_weather", "arguments": '"Rome"}'}}]),
        delta(
            None,
            tool_calls=[
                {
                    "id": "b",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": {"tz": "CET"}},
                }
            ],
        ),
        delta(finish="stop"),
    )
    _, out = run(stream)
    calls = lines(out)[0]["message"]["tool_calls"]
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("a", "get_weather", {"city": "Rome"}),
        ("b", "get_time", {"tz": "CET"}),
    ]


def test_tool_calls_without_finish_reason_go_out_before_done():
    stream = TOOL_STREAM.replace(b'"finish_reason":"tool_calls"', b'"finish_reason":null')
    _, out = run(stream)
    got = lines(out)
    assert len(got[0]["message"]["tool_calls"]) == 2 and got[1]["done"] is True


def test_tool_call_arguments_that_are_not_json_end_with_an_error_line():
    bad = sse(
        delta(
            None,
            tool_calls=[{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{oops"}}],
        ),
        delta(finish="tool_calls"),
    )
    t, out = run(bad)
    assert orjson.loads(out) == {"error": "f: tool call arguments are not a JSON object"}
    assert t.error


# --- any split of the bytes gives the same answer ---


CRLF_STREAM = LLAMA_CHAT_SSE.replace(b"\n", b"\r\n")


@pytest.mark.parametrize("stream", [LLAMA_CHAT_SSE, OPENAI_STREAM, TOOL_STREAM, CRLF_STREAM])
def test_byte_by_byte_is_the_same_as_one_feed(stream):
    _, whole = run(stream)
    _, bytewise = run([stream[i : i + 1] for i in range(len(stream))])
    assert bytewise == whole


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_splits_are_the_same_as_one_feed(data):
    stream = data.draw(
        st.sampled_from(
            [LLAMA_CHAT_SSE, LLAMA_COMPLETION_SSE, OPENAI_STREAM, TOOL_STREAM, CRLF_STREAM]
        )
    )
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=30)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert run(pieces)[1] == run(stream)[1]


def test_crlf_comments_and_multiline_data_are_read():
    stream = (
        b": keep-alive\r\n\r\n"
        b'event: message\r\nid: 1\r\ndata: {"choices": [{"delta":\r\n'
        b'data: {"content": "hi"}, "finish_reason": "stop"}]}\r\n\r\n'
        b"data:[DONE]\r\n\r\n"
    )
    _, out = run(stream)
    got = lines(out)
    assert got[0]["message"]["content"] == "hi"
    assert got[1]["done"] is True


# --- errors and garbage ---


def test_error_event_from_the_node_becomes_the_final_error_line():
    t, out = run(
        sse(delta("partial"), {"error": {"message": "CUDA out of memory", "type": "server_error"}})
    )
    got = lines(out)
    assert got[0]["message"]["content"] == "partial"
    assert got[-1] == {"error": "CUDA out of memory"}
    assert t.error == "CUDA out of memory"
    assert t.feed(sse(delta("more"))) == b""
    assert t.finish() == b""


@pytest.mark.parametrize(
    ("garbage", "message"),
    [
        (b"data: {not json\n\n", "the node sent an event that is not JSON"),
        (b"data: [1, 2]\n\n", "the node sent an event that is not a JSON object"),
        (b'data: {"choices": [7]}\n\n', "the node sent a choice that is not an object"),
        (b'data: {"choices": [{"delta": "x"}]}\n\n', "the node sent a delta that is not an object"),
        (
            b'data: {"choices": [{"delta": {"content": 5}}]}\n\n',
            "the node sent content that is not a string",
        ),
        (
            b'data: {"choices": [{"delta": {"tool_calls": 5}}]}\n\n',
            "the node sent tool_calls that are not a list",
        ),
    ],
)
def test_malformed_events_end_with_one_error_line(garbage, message):
    t, out = run(sse(delta("ok")) + garbage + sse(delta("ignored"), "[DONE]"))
    got = lines(out)
    assert got[-1] == {"error": message}
    assert t.error == message
    assert [line.get("message", {}).get("content") for line in got[:-1]] == ["ok"]


def test_stream_cut_before_its_end_ends_with_an_error_line():
    t, out = run(sse(delta("half")) + b'data: {"choi')
    got = lines(out)
    assert got[-1]["error"].startswith("the node's stream ended before")
    assert t.error


def test_pending_bytes_are_capped():
    t = StreamTranslator(
        chat=True,
        model="m",
        started_ns=0,
        clock_ns=Clock(),
        now_rfc3339=lambda: STAMP,
        max_pending=1024,
    )
    assert t.feed(b"data: " + b"x" * 1000) == b""
    out = t.feed(b"x" * 100)
    assert orjson.loads(out)["error"].startswith("upstream event larger than 1024 bytes")
    assert t.feed(b"\n\n") == b"" and t.finish() == b""


def test_the_default_cap_is_8_mib_of_one_unfinished_event():
    t = translator()
    assert t.feed(b"data: " + b"a" * (8 * 1024 * 1024 - 16)) == b""
    assert b"larger than" in t.feed(b"b" * 64)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.binary(max_size=64)
        | st.sampled_from(
            [
                b"data: ",
                b"\n\n",
                b"\r\n",
                b"[DONE]",
                b"{",
                b"}",
                b'"choices"',
                b":",
                b"data: {}\n\n",
            ]
        ),
        max_size=40,
    )
)
def test_garbage_never_raises_and_ends_with_done_or_error(pieces):
    _, out = run(pieces)
    got = [orjson.loads(line) for line in out.split(b"\n")[:-1]]
    assert got, "the client always gets a last line"
    assert got[-1].get("done") is True or set(got[-1]) == {"error"}
    assert sum(1 for line in got if "error" in line or line.get("done")) == 1


JSON = json_values()
CHUNK_FIELDS = some_of(
    {
        "choices": JSON
        | st.lists(
            some_of(
                {
                    "delta": JSON
                    | some_of(
                        {
                            "content": JSON,
                            "reasoning_content": JSON,
                            "tool_calls": JSON
                            | st.lists(
                                some_of(
                                    {
                                        "index": JSON,
                                        "id": JSON,
                                        "function": JSON
                                        | some_of({"name": JSON, "arguments": JSON}),
                                    },
                                ),
                                max_size=2,
                            ),
                        },
                    ),
                    "text": JSON,
                    "message": JSON,
                    "finish_reason": JSON,
                },
            ),
            max_size=2,
        ),
        "usage": JSON,
        "error": JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(CHUNK_FIELDS, max_size=6), st.sampled_from(["api.chat", "api.generate"]))
def test_odd_json_chunks_never_raise(chunks, endpoint):
    stream = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    t, out = run(stream, endpoint)
    got = lines(out, endpoint)
    assert got[-1].get("done") is True or set(got[-1]) == {"error"}
    assert (set(got[-1]) == {"error"}) == (t.error is not None)
