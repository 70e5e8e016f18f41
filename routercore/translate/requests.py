"""Ollama API requests as OpenAI API requests (the direction a client's request travels).

`ollama_to_openai` only builds bytes: the proxy sends them to an OpenAI-only node (llama.cpp,
vLLM) or a cloud provider. What OpenAI's API has no field for is dropped when harmless
(`keep_alive`, `think`, Ollama-only sampling options) and refused with a 400 naming the field
when dropping it would change the answer (`template`, `context`, `suffix` with `system`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

from routercore.errors import ClientError

ENDPOINTS = ("api.chat", "api.generate", "api.embed", "api.embeddings", "api.show")


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One request to send to the OpenAI-compatible upstream."""

    method: str  # "POST" or "GET"
    path: str  # "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings" | "/v1/models"
    body: bytes  # JSON for POST, b"" for GET


def ollama_wants_stream(endpoint: str, request: dict[str, Any]) -> bool:
    """Whether the client gets NDJSON lines: chat and generate stream unless `"stream": false`;
    the other endpoints never stream."""
    if endpoint not in ("api.chat", "api.generate"):
        return False
    stream = request.get("stream", True)
    if stream is None:
        return True
    if not isinstance(stream, bool):
        raise ClientError("stream must be a boolean")
    return stream


def ollama_to_openai(endpoint: str, request: dict[str, Any], upstream_model: str) -> UpstreamCall:
    """The OpenAI request for a client's Ollama request; `upstream_model` replaces its model.
    Raises ClientError (400, naming the field) for what cannot be translated."""
    if not isinstance(request, dict):
        raise ClientError("the request body must be a JSON object")
    if endpoint == "api.chat":
        return _chat(request, upstream_model)
    if endpoint == "api.generate":
        return _generate(request, upstream_model)
    if endpoint == "api.embed":
        return _embed(request, upstream_model)
    if endpoint == "api.embeddings":
        return _embeddings(request, upstream_model)
    if endpoint == "api.show":
        return UpstreamCall("GET", "/v1/models", b"")
    raise ValueError(f"no translation for endpoint {endpoint!r}")


def _post(path: str, body: dict[str, Any]) -> UpstreamCall:
    return UpstreamCall("POST", path, orjson.dumps(body))


# --- sampling options, format, stream (shared by chat and generate) ---


def _number(value: Any, field: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClientError(f"{field} must be a number")
    return value


def _integer(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ClientError(f"{field} must be an integer")
    return value


def _apply_options(request: dict[str, Any], body: dict[str, Any]) -> None:
    """`options` as OpenAI's sampling fields. Ollama-only options (top_k, min_p, repeat_penalty,
    num_ctx, mirostat, ...) are dropped: cloud providers reject fields they do not know."""
    options = request.get("options")
    if options is None:
        return
    if not isinstance(options, dict):
        raise ClientError("options must be an object")
    for name in ("temperature", "top_p", "frequency_penalty", "presence_penalty"):
        if options.get(name) is not None:
            body[name] = _number(options[name], f"options.{name}")
    if options.get("seed") is not None:
        body["seed"] = _integer(options["seed"], "options.seed")
    if options.get("num_predict") is not None:
        limit = _integer(options["num_predict"], "options.num_predict")
        if limit >= 0:  # -1 (and -2, "fill the context") mean no limit: OpenAI's default
            body["max_tokens"] = limit
    stop = options.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise ClientError("options.stop must be a string or a list of strings")
        if stop:
            body["stop"] = stop


def _apply_format(request: dict[str, Any], body: dict[str, Any]) -> None:
    fmt = request.get("format")
    if fmt is None or fmt == "":
        return
    if fmt == "json":
        body["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "schema", "schema": fmt},
        }
    else:
        raise ClientError('format must be "json" or a JSON schema object')


def _apply_stream(endpoint: str, request: dict[str, Any], body: dict[str, Any]) -> None:
    body["stream"] = ollama_wants_stream(endpoint, request)
    if body["stream"]:
        body["stream_options"] = {"include_usage": True}


# --- images and messages ---

_IMAGE_MAGIC = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
    (b"BM", "image/bmp"),
)


def _image_part(image: Any, field: str) -> dict[str, Any]:
    """An Ollama image (base64, no prefix) as an OpenAI `image_url` part with a data URL; the
    media type comes from the image's first bytes."""
    if not isinstance(image, str) or not image:
        raise ClientError(f"{field} must be a base64 string")
    if image.startswith("data:"):
        url = image
    else:
        try:
            head = base64.b64decode(image[:16], validate=True)
        except (binascii.Error, ValueError):
            raise ClientError(f"{field} is not valid base64") from None
        media = next((m for magic, m in _IMAGE_MAGIC if head.startswith(magic)), "image/jpeg")
        url = f"data:{media};base64,{image}"
    return {"type": "image_url", "image_url": {"url": url}}


def _content_with_images(text: str, images: Any, field: str) -> str | list[dict[str, Any]]:
    if images is None or images == []:
        return text
    if not isinstance(images, list):
        raise ClientError(f"{field} must be a list of base64 strings")
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts.extend(_image_part(image, f"{field}[{i}]") for i, image in enumerate(images))
    return parts


def _tool_calls_to_openai(
    calls: Any, field: str, message_index: int, pending: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Ollama tool calls (dict arguments, maybe no id) as OpenAI's (id, JSON-string arguments);
    each id is remembered so the `tool` messages that answer it can name it."""
    if not isinstance(calls, list):
        raise ClientError(f"{field} must be a list")
    out = []
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ClientError(f"{field}[{j}].function.name is required")
        arguments = function.get("arguments", {})
        if isinstance(arguments, dict):
            arguments = orjson.dumps(arguments).decode()
        elif not isinstance(arguments, str):
            raise ClientError(f"{field}[{j}].function.arguments must be an object")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = f"call_{message_index}_{j}"
        pending.append((call_id, function["name"]))
        out.append(
            {
                "id": call_id,
                "type": "function",
                "function": {"name": function["name"], "arguments": arguments},
            }
        )
    return out


def _tool_call_id(message: dict[str, Any], field: str, pending: list[tuple[str, str]]) -> str:
    """The id of the call a `tool` message answers: its own `tool_call_id`, else the oldest
    unanswered call of the same `tool_name`, else the oldest unanswered call."""
    given = message.get("tool_call_id")
    if isinstance(given, str) and given:
        for i, (call_id, _) in enumerate(pending):
            if call_id == given:
                del pending[i]
                break
        return given
    name = message.get("tool_name") or message.get("name")
    for i, (call_id, call_name) in enumerate(pending):
        if call_name == name:
            del pending[i]
            return call_id
    if pending:
        return pending.pop(0)[0]
    raise ClientError(f"{field}: a tool message must answer an assistant message's tool_calls")


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise ClientError("messages must be a non-empty list (loading a model is not translated)")
    pending: list[tuple[str, str]] = []
    out: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        field = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ClientError(f"{field} must be an object")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise ClientError(f"{field}.role is required")
        content = message.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ClientError(f"{field}.content must be a string")
        converted: dict[str, Any] = {"role": role}
        if role == "tool":
            converted["tool_call_id"] = _tool_call_id(message, field, pending)
            converted["content"] = content
        else:
            converted["content"] = _content_with_images(
                content, message.get("images"), f"{field}.images"
            )
            calls = message.get("tool_calls")
            if calls:
                converted["tool_calls"] = _tool_calls_to_openai(
                    calls, f"{field}.tool_calls", i, pending
                )
        out.append(converted)
    return out


# --- endpoints ---


def _chat(request: dict[str, Any], model: str) -> UpstreamCall:
    body: dict[str, Any] = {"model": model, "messages": _messages(request.get("messages"))}
    _apply_options(request, body)
    _apply_format(request, body)
    tools = request.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise ClientError("tools must be a list")
        body["tools"] = tools
    _apply_stream("api.chat", request, body)
    return _post("/v1/chat/completions", body)


def _string(request: dict[str, Any], name: str) -> str:
    value = request.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ClientError(f"{name} must be a string")
    return value


def _generate(request: dict[str, Any], model: str) -> UpstreamCall:
    """Non-raw prompts go to chat completions (the node applies the model's chat template, as
    Ollama does); `raw` prompts and fill-in-the-middle (`suffix`) go to plain completions."""
    if request.get("template"):
        raise ClientError("template is not supported for this model's node")
    if request.get("context"):
        raise ClientError("context is not supported for this model's node: send messages")
    prompt = _string(request, "prompt")
    system = _string(request, "system")
    suffix = _string(request, "suffix")
    raw = request.get("raw", False)
    if not isinstance(raw, bool):
        raise ClientError("raw must be a boolean")
    body: dict[str, Any] = {"model": model}
    if raw or suffix:
        if request.get("images"):
            raise ClientError("images cannot be sent with raw or suffix to this model's node")
        if system and suffix:
            raise ClientError("system cannot be combined with suffix for this model's node")
        body["prompt"] = prompt
        if suffix:
            body["suffix"] = suffix
        path = "/v1/completions"
    else:
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        content = _content_with_images(prompt, request.get("images"), "images")
        messages.append({"role": "user", "content": content})
        body["messages"] = messages
        path = "/v1/chat/completions"
    _apply_options(request, body)
    _apply_format(request, body)
    _apply_stream("api.generate", request, body)
    return _post(path, body)


def _embed(request: dict[str, Any], model: str) -> UpstreamCall:
    """`truncate` has no OpenAI field: inputs over the context are the node's error either way
    (Ollama's default, truncate=true, would cut them)."""
    value = request.get("input")
    if isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            raise ClientError("input must be a string or a list of strings")
    elif not isinstance(value, str):
        raise ClientError("input must be a string or a list of strings")
    body: dict[str, Any] = {"model": model, "input": value}
    if request.get("dimensions") is not None:
        body["dimensions"] = _integer(request["dimensions"], "dimensions")
    return _post("/v1/embeddings", body)


def _embeddings(request: dict[str, Any], model: str) -> UpstreamCall:
    return _post("/v1/embeddings", {"model": model, "input": _string(request, "prompt")})
