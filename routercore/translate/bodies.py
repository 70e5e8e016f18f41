"""Whole (non-streaming) OpenAI answers as Ollama's: chat, generate, embed, embeddings, show.

The body is gathered (up to `MAX_BODY_BYTES`) and translated when it ends. Durations: only
`total_duration` is measured (and `load_duration` 0); without a stream the router cannot tell
prompt evaluation from generation, so `prompt_eval_duration`/`eval_duration` are left out
rather than made up (clients would divide by them for tokens per second).
"""

from __future__ import annotations

import math
from typing import Any, Unpack

import orjson

from routercore.errors import ModelNotFound
from routercore.translate.common import (
    TranslationError,
    node_json_object,
    ollama_done_reason,
    openai_tool_calls_to_ollama,
)
from routercore.translate.translator import Exchange, ResponseTranslator

# Embeddings of many inputs make big bodies (about 20 bytes per float as JSON text): 64 MiB
# holds ~800 vectors of 4096 and still bounds what one answer can make the router hold.
MAX_BODY_BYTES = 64 * 1024 * 1024


class BodyTranslator(ResponseTranslator):
    """Gathers the body; `finish()` returns the Ollama JSON or raises TranslationError."""

    def __init__(self, *, max_body: int = MAX_BODY_BYTES, **exchange: Unpack[Exchange]) -> None:
        super().__init__(**exchange)
        self._parts: list[bytes] = []
        self._size = 0
        self._max = max_body

    def feed(self, data: bytes) -> bytes:
        self._size += len(data)
        if self._size > self._max:
            self._parts = []
            self.error = f"the node's answer is larger than {self._max} bytes"
            raise TranslationError(self.error)
        self._parts.append(data)
        return b""

    def finish(self) -> bytes:
        body = b"".join(self._parts)
        self._parts = []
        try:
            payload = node_json_object(body, "the node's answer is")
            return orjson.dumps(self.translate(payload))
        except TranslationError as exc:
            self.error = exc.message
            raise

    def translate(self, payload: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def durations(self) -> dict[str, int]:
        return {"total_duration": self.clock_ns() - self.started_ns, "load_duration": 0}


def _first_choice(payload: dict[str, Any]) -> dict[str, Any]:
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise TranslationError("the node's answer has no choices")
    return choices[0]


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TranslationError(f"the node's {what} is not a string")
    return value


class CompletionTranslator(BodyTranslator):
    """A chat completion or a text completion as `/api/chat` (`message`) or `/api/generate`
    (`response`); both upstream shapes are read, like the streaming translator does."""

    def __init__(self, *, chat: bool, **exchange: Unpack[Exchange]) -> None:
        super().__init__(**exchange)
        self._chat = chat

    def translate(self, payload: dict[str, Any]) -> dict[str, Any]:
        choice = _first_choice(payload)
        self.record_usage(payload.get("usage"))
        message = choice.get("message")
        thinking = None
        calls = None
        if isinstance(message, dict):
            text = _text(message.get("content"), "content")
            thinking = message.get("reasoning_content") or message.get("reasoning")
            calls = message.get("tool_calls")
        elif "text" in choice:
            text = _text(choice.get("text"), "text")
        else:
            raise TranslationError("the node's answer has neither a message nor a text")
        answer: dict[str, Any] = {"model": self.model, "created_at": self.now_rfc3339()}
        if self._chat:
            out_message: dict[str, Any] = {"role": "assistant", "content": text}
            if isinstance(thinking, str) and thinking:
                out_message["thinking"] = thinking
            if calls:
                if not isinstance(calls, list):
                    raise TranslationError("the node's tool_calls are not a list")
                out_message["tool_calls"] = openai_tool_calls_to_ollama(calls)
            answer["message"] = out_message
        else:
            answer["response"] = text
            if isinstance(thinking, str) and thinking:
                answer["thinking"] = thinking
        answer["done"] = True
        answer["done_reason"] = ollama_done_reason(choice.get("finish_reason"))
        answer.update(self.durations())
        if self.prompt_tokens is not None:
            answer["prompt_eval_count"] = self.prompt_tokens
        if self.completion_tokens is not None:
            answer["eval_count"] = self.completion_tokens
        return answer


def _vector(embedding: Any, where: str) -> list[float]:
    """One input's vector. llama.cpp's server answers a model without pooling with one vector
    per token (a list of lists): those are mean-pooled so each input still gets one vector."""
    if not isinstance(embedding, list) or not embedding:
        raise TranslationError(f"{where} is not a list of numbers")
    if isinstance(embedding[0], list):
        rows = embedding
        width = len(rows[0])
        if not all(isinstance(row, list) and len(row) == width for row in rows):
            raise TranslationError(f"{where} has token vectors of different lengths")
        try:
            return [math.fsum(column) / len(rows) for column in zip(*rows, strict=True)]
        except TypeError:
            raise TranslationError(f"{where} is not a list of numbers") from None
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in embedding):
        raise TranslationError(f"{where} is not a list of numbers")
    return embedding


def _normalized(vector: list[float]) -> list[float]:
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


def _embedding_vectors(payload: dict[str, Any]) -> list[list[float]]:
    data = payload.get("data")
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise TranslationError("the node's embeddings answer has no data list")
    indexes = [item.get("index", position) for position, item in enumerate(data)]
    if not all(isinstance(i, int) for i in indexes):
        raise TranslationError("the node's embeddings have an index that is not a number")
    ordered = [item for _, item in sorted(zip(indexes, data, strict=True), key=lambda p: p[0])]
    return [
        _vector(item.get("embedding"), f"data[{i}].embedding") for i, item in enumerate(ordered)
    ]


class EmbedTranslator(BodyTranslator):
    """`/api/embed`: one L2-normalized vector per input, as Ollama returns them (OpenAI's own
    embeddings are unit length already; llama.cpp's are not)."""

    def translate(self, payload: dict[str, Any]) -> dict[str, Any]:
        vectors = [_normalized(v) for v in _embedding_vectors(payload)]
        self.record_usage(payload.get("usage"))
        answer: dict[str, Any] = {"model": self.model, "embeddings": vectors}
        answer.update(self.durations())
        if self.prompt_tokens is not None:
            answer["prompt_eval_count"] = self.prompt_tokens
        return answer


class EmbeddingsTranslator(BodyTranslator):
    """Legacy `/api/embeddings`: one vector, not normalized (Ollama does not normalize here)."""

    def translate(self, payload: dict[str, Any]) -> dict[str, Any]:
        vectors = _embedding_vectors(payload)
        self.record_usage(payload.get("usage"))
        return {"embedding": vectors[0] if vectors else []}


class ShowTranslator(BodyTranslator):
    """`/api/show` from the model's `/v1/models` entry: OpenAI's API says little about a model,
    so most fields are empty. ModelNotFound (404) when the node does not list the model."""

    def __init__(self, *, upstream_model: str, **exchange: Unpack[Exchange]) -> None:
        super().__init__(**exchange)
        self._upstream_model = upstream_model

    def translate(self, payload: dict[str, Any]) -> dict[str, Any]:
        data = payload.get("data")
        if not isinstance(data, list):
            raise TranslationError("the node's model list has no data list")
        entry = next(
            (
                item
                for item in data
                if isinstance(item, dict) and item.get("id") in (self._upstream_model, self.model)
            ),
            None,
        )
        if entry is None:
            raise ModelNotFound(f"model '{self.model}' not found")
        model_id = str(entry.get("id", ""))
        meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
        gguf = model_id.endswith(".gguf") or entry.get("owned_by") == "llamacpp" or bool(meta)
        details: dict[str, Any] = {
            "parent_model": "",
            "format": "gguf" if gguf else "",
            "family": "",
            "families": None,
            "parameter_size": "",
            "quantization_level": "",
        }
        model_info: dict[str, Any] = {}
        params = meta.get("n_params") if isinstance(meta, dict) else None
        if isinstance(params, int) and params > 0:
            details["parameter_size"] = _parameter_size(params)
            model_info["general.parameter_count"] = params
        embedding = "embed" in model_id.lower()
        return {
            "modelfile": "",
            "parameters": "",
            "template": "",
            "details": details,
            "model_info": model_info,
            "capabilities": ["embedding"] if embedding else ["completion"],
        }


def _parameter_size(params: int) -> str:
    """Ollama's style: 135M, 7.2B."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if params >= size:
            return f"{params / size:.1f}".removesuffix(".0") + unit
    return str(params)
