"""Pieces both translation directions share: the error type, Ollama's error line, timestamps,
and the tool-call shapes (OpenAI: ids and JSON-string arguments; Ollama: dict arguments)."""

from __future__ import annotations

from typing import Any

import orjson

from routercore.errors import UpstreamError

# The longest error message passed on to a client: upstream errors may carry whole tracebacks.
MAX_ERROR_CHARS = 200

CONTENT_TYPE_NDJSON = b"application/x-ndjson"
CONTENT_TYPE_JSON = b"application/json; charset=utf-8"


class TranslationError(UpstreamError):
    """The node's answer cannot be read as OpenAI's API (bad JSON, bad SSE, a buffer over its
    cap). A 502 like any other upstream failure: `app.py` maps it without help."""

    code = "bad_upstream_response"


def truncate_message(message: str) -> str:
    message = message.strip()
    if len(message) > MAX_ERROR_CHARS:
        return message[: MAX_ERROR_CHARS - 1] + "…"
    return message


def ollama_error_line(message: str) -> bytes:
    """The final NDJSON line of an Ollama stream that failed (the official client raises
    `ResponseError` with the message)."""
    return orjson.dumps({"error": truncate_message(message)}) + b"\n"


def openai_error_message(payload: Any) -> str | None:
    """The message inside an OpenAI-style error (`{"error": {"message"}}`, `{"error": "..."}`,
    FastAPI's `{"detail"}`, Gemini's one-element list), or None when it has none."""
    if isinstance(payload, list) and payload:
        payload = payload[0]
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str) and message:
            return message
        return orjson.dumps(error).decode()
    if isinstance(error, str) and error:
        return error
    for key in ("detail", "message"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value
    if "error" in payload:
        return orjson.dumps(error).decode()
    return None


def node_json_object(data: bytes, subject: str) -> dict[str, Any]:
    """A JSON object the node sent, which must not be an OpenAI error object; anything else
    raises TranslationError (`subject` starts its message: "the node's answer is")."""
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise TranslationError(f"{subject} not JSON") from None
    if not isinstance(payload, dict):
        raise TranslationError(f"{subject} not a JSON object")
    if "error" in payload:
        raise TranslationError(openai_error_message(payload) or "the node reported an error")
    return payload


def openai_error_to_ollama(status: int, body: bytes) -> bytes:
    """An upstream error answer (any body) as Ollama's `{"error": "message"}` JSON; the message
    is cut to `MAX_ERROR_CHARS` so a traceback never reaches the client whole."""
    message: str | None = None
    try:
        message = openai_error_message(orjson.loads(body))
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        message = text or None
    if not message:
        message = f"upstream answered HTTP {status}"
    return orjson.dumps({"error": truncate_message(message)})


def tool_arguments_to_dict(arguments: Any, where: str) -> dict[str, Any]:
    """OpenAI's JSON-string arguments as the dict Ollama carries ("" means no arguments)."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, str):
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    raise TranslationError(f"{where}: tool call arguments are not a JSON object")


def openai_tool_calls_to_ollama(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI `tool_calls` (complete, not deltas) as Ollama's, keeping the id so a client that
    sends the assistant message back gets the same id upstream."""
    out: list[dict[str, Any]] = []
    for position, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise TranslationError("upstream tool call without a function name")
        converted: dict[str, Any] = {
            "function": {
                "index": position,
                "name": function["name"],
                "arguments": tool_arguments_to_dict(function.get("arguments"), function["name"]),
            }
        }
        if isinstance(call.get("id"), str):
            converted["id"] = call["id"]
        out.append(converted)
    return out


def ollama_done_reason(finish_reason: Any) -> str:
    """OpenAI's finish_reason as Ollama's done_reason: tool calls end a turn like `stop`."""
    if finish_reason is None or finish_reason in ("tool_calls", "function_call"):
        return "stop"
    return str(finish_reason)
