"""OpenAI SSE chunks as Ollama NDJSON lines, as they arrive (the hot path of a translated
stream: one `orjson.loads` and one `orjson.dumps` per chunk, no per-chunk clock read).

Chat-completion chunks (`choices[0].delta`) and completion chunks (`choices[0].text`) are both
read, so `/api/generate` works whichever upstream path its request took. Tool-call deltas are
gathered and sent in one line when the choice finishes, as Ollama does. The last line is
`done: true` with counts from the usage chunk; a node that sends none (llama-cpp-python
ignores `stream_options.include_usage`) gets `eval_count` = the number of content deltas and no
`prompt_eval_count`.
"""

from __future__ import annotations

from typing import Any, Unpack

import orjson

from routercore.translate.common import (
    CONTENT_TYPE_NDJSON,
    TranslationError,
    node_json_object,
    ollama_done_reason,
    ollama_error_line,
    openai_tool_calls_to_ollama,
)
from routercore.translate.sse import MAX_PENDING_BYTES, SSEDecoder
from routercore.translate.translator import Exchange, ResponseTranslator


class StreamTranslator(ResponseTranslator):
    """Streaming `/api/chat` (`message` lines) or `/api/generate` (`response` lines)."""

    content_type = CONTENT_TYPE_NDJSON

    def __init__(
        self, *, chat: bool, max_pending: int = MAX_PENDING_BYTES, **exchange: Unpack[Exchange]
    ) -> None:
        super().__init__(**exchange)
        self._chat = chat
        self._sse = SSEDecoder(max_pending)
        self._closed = False
        self._first_content_ns: int | None = None
        self._deltas = 0
        self._finish_reason: Any = None
        self._finished = False  # a finish_reason or [DONE] arrived: the answer is whole
        self._tools: dict[int, dict[str, Any]] = {}

    # --- interface ---

    def feed(self, data: bytes) -> bytes:
        if self._closed:
            return b""
        try:
            events = self._sse.feed(data)
        except TranslationError as exc:
            return self._fail(exc.message)
        if not events:
            return b""
        return self._translate(events)

    def finish(self) -> bytes:
        if self._closed:
            return b""
        self._sse.finish()
        if not self._finished:
            return self._fail("the node's stream ended before the answer was complete")
        return self._done()

    def usage(self) -> tuple[int | None, int | None]:
        completion = self.completion_tokens
        return self.prompt_tokens, self._deltas if completion is None else completion

    # --- events ---

    def _translate(self, events: list[bytes]) -> bytes:
        out: list[bytes] = []
        for payload in events:
            if self._closed:
                break
            if payload == b"[DONE]":
                out.append(self._done())
                break
            try:
                line = self._chunk(payload)
            except TranslationError as exc:
                out.append(self._fail(exc.message))
                break
            if line:
                out.append(line)
        return out[0] if len(out) == 1 else b"".join(out)

    def _chunk(self, payload: bytes) -> bytes:
        chunk = node_json_object(payload, "the node sent an event that is")
        usage = chunk.get("usage")
        if usage:
            self.record_usage(usage)
        choices = chunk.get("choices")
        if not choices:
            return b""
        if not isinstance(choices, list):
            raise TranslationError("the node sent choices that are not a list")
        choice = choices[0]
        if not isinstance(choice, dict):
            raise TranslationError("the node sent a choice that is not an object")
        delta = choice.get("delta")
        thinking = None
        if delta is not None:
            if not isinstance(delta, dict):
                raise TranslationError("the node sent a delta that is not an object")
            text = delta.get("content")
            thinking = delta.get("reasoning_content") or delta.get("reasoning")
            calls = delta.get("tool_calls")
            if calls:
                self._gather_tool_calls(calls)
        else:
            text = choice.get("text")
        line = b""
        if text or thinking:
            if not isinstance(text, str | None) or not isinstance(thinking, str | None):
                raise TranslationError("the node sent content that is not a string")
            line = self._line(text or "", thinking)
        finish_reason = choice.get("finish_reason")
        if finish_reason is not None:
            self._finish_reason = finish_reason
            self._finished = True
            if self._tools:
                line += self._tool_line()
        return line

    def _line(self, text: str, thinking: str | None) -> bytes:
        self._deltas += 1
        if self._first_content_ns is None:
            self._first_content_ns = self.clock_ns()
        if self._chat:
            message = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            body: dict[str, Any] = {
                "model": self.model,
                "created_at": self.now_rfc3339(),
                "message": message,
                "done": False,
            }
        else:
            body = {
                "model": self.model,
                "created_at": self.now_rfc3339(),
                "response": text,
                "done": False,
            }
            if thinking:
                body["thinking"] = thinking
        return orjson.dumps(body) + b"\n"

    def _gather_tool_calls(self, calls: Any) -> None:
        """OpenAI streams a call as its id and name first, then argument fragments, all under
        the call's `index`."""
        if not isinstance(calls, list):
            raise TranslationError("the node sent tool_calls that are not a list")
        if self._first_content_ns is None:
            self._first_content_ns = self.clock_ns()
        for call in calls:
            if not isinstance(call, dict):
                raise TranslationError("the node sent a tool call that is not an object")
            slot = self._tools.setdefault(self._tool_index(call), {"id": None, "name": ""})
            slot.setdefault("arguments", [])
            if isinstance(call.get("id"), str) and not slot["id"]:
                slot["id"] = call["id"]
            function = call.get("function") or {}
            if not isinstance(function, dict):
                raise TranslationError("the node sent a tool call function that is not an object")
            if isinstance(function.get("name"), str) and not slot["name"]:
                slot["name"] = function["name"]  # sent once; some servers repeat it
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                slot["arguments"].append(arguments)
            elif isinstance(arguments, dict):  # some servers send the whole object at once
                slot["arguments"] = [orjson.dumps(arguments).decode()]

    def _tool_index(self, call: dict[str, Any]) -> int:
        """The call's `index`; servers that leave it out (Gemini's) send each call whole with
        its own id, and argument fragments without one continue the last call."""
        index = call.get("index")
        if isinstance(index, int):
            return index
        call_id = call.get("id")
        for known, slot in self._tools.items():
            if call_id and slot["id"] == call_id:
                return known
        if not self._tools:
            return 0
        last = max(self._tools)
        return last + 1 if call_id else last

    def _tool_line(self) -> bytes:
        calls = []
        for index in sorted(self._tools):
            slot = self._tools[index]
            call: dict[str, Any] = {
                "type": "function",
                "function": {"name": slot["name"], "arguments": "".join(slot["arguments"])},
            }
            if slot["id"]:
                call["id"] = slot["id"]
            calls.append(call)
        self._tools = {}
        if not self._chat:
            return b""  # /api/generate has no tool calls (nor tools in its request)
        message = {
            "role": "assistant",
            "content": "",
            "tool_calls": openai_tool_calls_to_ollama(calls),
        }
        body = {
            "model": self.model,
            "created_at": self.now_rfc3339(),
            "message": message,
            "done": False,
        }
        return orjson.dumps(body) + b"\n"

    # --- the end ---

    def _done(self) -> bytes:
        self._closed = True
        pending = b""
        if self._tools:
            try:
                pending = self._tool_line()
            except TranslationError as exc:
                return self._fail(exc.message)
        end = self.clock_ns()
        first = end if self._first_content_ns is None else self._first_content_ns
        body: dict[str, Any] = {"model": self.model, "created_at": self.now_rfc3339()}
        if self._chat:
            body["message"] = {"role": "assistant", "content": ""}
        else:
            body["response"] = ""
        body["done"] = True
        body["done_reason"] = ollama_done_reason(self._finish_reason)
        body["total_duration"] = end - self.started_ns
        body["load_duration"] = 0
        if self.prompt_tokens is not None:
            body["prompt_eval_count"] = self.prompt_tokens
        body["prompt_eval_duration"] = first - self.started_ns
        body["eval_count"] = self.usage()[1]
        body["eval_duration"] = end - first
        return pending + orjson.dumps(body) + b"\n"

    def _fail(self, message: str) -> bytes:
        self._closed = True
        self.error = message
        self._tools = {}
        return ollama_error_line(message)
