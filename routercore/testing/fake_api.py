"""Sans-IO request handling for the fake node: (method, path, body) in, a `Reply` out."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from routercore.testing.fake_bodies import (
    DETAILS,
    MODEL_SIZE,
    MODIFIED_AT,
    PARAMETER_COUNT,
    count_words,
    durations,
    embedding,
    embedding_base64,
    full_text,
    limit_tokens,
    model_object,
    ollama_stream,
    openai_stream,
    pull_stream,
)
from routercore.testing.fake_state import RUNTIME_VERSION, Settings, model_digest
from routercore.timestamps import MICROS, now_rfc3339, rfc3339

JSON = [(b"content-type", b"application/json; charset=utf-8")]
NDJSON = [(b"content-type", b"application/x-ndjson")]
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
# Paths that run "inference": the ones the status500 fault applies to.
INFERENCE_PATHS = frozenset(
    {
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
    }
)
_ids = itertools.count(1)


@dataclass(slots=True)
class Reply:
    """A response: a full `body`, or `chunks` streamed with chunked encoding."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    chunks: Iterator[bytes] | None = None
    delay: float = 0.0  # a full body is sent after this long (simulated generation time)


def json_reply(status: int, obj: Any) -> Reply:
    return Reply(status, JSON, orjson.dumps(obj))


def error_reply(path: str, status: int, message: str, code: str | None = None) -> Reply:
    """Each API's own error shape: /v1 nests an object, Ollama uses a bare string."""
    if path.startswith("/v1"):
        kind = "invalid_request_error" if status < 500 else "server_error"
        return json_reply(status, {"error": {"message": message, "type": kind, "code": code}})
    return json_reply(status, {"error": message})


class FakeAPI:
    """Routes requests against the node's `Settings`; caches the bodies that rarely change."""

    def __init__(self, settings: Settings, on_models_changed: Callable[[], None]) -> None:
        self.settings = settings
        self.loaded: dict[str, float] = {}  # model -> time it last served (for /api/ps)
        self._on_models_changed = on_models_changed
        self._cache: dict[str, bytes] = {}

    def invalidate(self) -> None:
        """Forget pre-encoded bodies after the model list or API changed."""
        self._cache.clear()

    def _cached(self, key: str, build: Callable[[], Any]) -> Reply:
        body = self._cache.get(key)
        if body is None:
            body = self._cache[key] = orjson.dumps(build())
        return Reply(200, JSON, body)

    # -- routing ----------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: bytes) -> Reply:
        """Answer one request; `path` has no query string."""
        s = self.settings
        if path == "/" and method in ("GET", "HEAD"):
            text = b"Ollama is running" if s.api != "openai" else b"fakenode is running"
            return Reply(200, TEXT, text)
        if path.startswith("/api/"):
            if not s.serves("ollama"):
                return error_reply(path, 404, "404 page not found")
            return self._ollama(method, path, body)
        if path.startswith("/v1/"):
            if not s.serves("openai"):
                return error_reply(path, 404, f"unknown path {path}", "not_found")
            return self._openai(method, path, body)
        return Reply(404, TEXT, b"404 page not found")

    def _parse(self, path: str, body: bytes) -> dict[str, Any] | Reply:
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return error_reply(path, 400, f"invalid JSON body: {exc}", "invalid_json")
        if not isinstance(req, dict):
            return error_reply(path, 400, "request body must be a JSON object", "invalid_json")
        return req

    def _with_body(self, handler: _Handler, path: str, body: bytes) -> Reply:
        """`handler` with the parsed JSON object body; a body that is none answers 400."""
        req = self._parse(path, body)
        return req if isinstance(req, Reply) else handler(self, path, req)

    def _model(self, path: str, req: dict[str, Any], key: str = "model") -> str | Reply:
        """The requested model name, or the 400/404 reply for a missing or unknown one."""
        model = req.get(key)
        if not isinstance(model, str) or not model:
            return error_reply(path, 400, "model is required", "missing_model")
        if self.settings.resolve(model) is None:
            if path.startswith("/v1"):
                msg = f"The model `{model}` does not exist."
                return error_reply(path, 404, msg, "model_not_found")
            return error_reply(path, 404, f'model "{model}" not found, try pulling it first')
        self.loaded[model] = time.time()
        return model

    # -- Ollama -----------------------------------------------------------------------------

    def _ollama(self, method: str, path: str, body: bytes) -> Reply:
        if method == "GET":
            if path == "/api/tags":
                return self._cached("tags", lambda: {"models": self._tags()})
            if path == "/api/version":
                return self._cached("version", lambda: {"version": RUNTIME_VERSION})
            if path == "/api/ps":
                return json_reply(200, {"models": self._ps()})
        elif method == "POST":
            handler = _OLLAMA_POST.get(path)
            if handler is not None:
                return self._with_body(handler, path, body)
        elif method == "DELETE" and path == "/api/delete":
            return self._with_body(FakeAPI._ollama_delete, path, body)
        if method in ("GET", "POST"):
            return error_reply(path, 404, "404 page not found")
        return error_reply(path, 405, "405 method not allowed")

    def _tags(self) -> list[dict[str, Any]]:
        return [
            {
                "name": m,
                "model": m,
                "modified_at": MODIFIED_AT,
                "size": MODEL_SIZE,
                "digest": model_digest(m),
                "details": DETAILS,
            }
            for m in self.settings.models
        ]

    def _ps(self) -> list[dict[str, Any]]:
        out = []
        for model, used in self.loaded.items():
            name = self.settings.resolve(model)
            if name is None:
                continue
            out.append(
                {
                    "name": name,
                    "model": name,
                    "size": MODEL_SIZE,
                    "digest": model_digest(name),
                    "details": DETAILS,
                    "expires_at": rfc3339(used + 300, digits=0),  # 5 minutes after use
                    "size_vram": MODEL_SIZE,
                }
            )
        return out

    def _ollama_generate(self, path: str, req: dict[str, Any]) -> Reply:
        chat = path == "/api/chat"
        model = self._model(path, req)
        if isinstance(model, Reply):
            return model
        if chat:
            messages = req.get("messages")
            if messages is not None and not isinstance(messages, list):
                return error_reply(path, 400, "messages must be a list")
            prompt_words = sum(
                count_words(m.get("content")) for m in messages or [] if isinstance(m, dict)
            )
            empty = not messages
        else:
            prompt = req.get("prompt")
            prompt_words = count_words(prompt) + count_words(req.get("system"))
            empty = not prompt
        s = self.settings
        options = req.get("options")
        num_predict = options.get("num_predict") if isinstance(options, dict) else None
        n, reason = limit_tokens(num_predict, s.tokens)
        if empty:  # like Ollama: no prompt only loads the model
            n, reason = 0, "load"
        base: dict[str, Any] = {"model": model, "created_at": now_rfc3339(MICROS)}
        t0 = time.perf_counter_ns()
        stats = {
            "prompt_eval_count": max(prompt_words, 1),
            "eval_count": n,
        }
        if req.get("stream", True) is False:
            planned = s.first_token_delay + n * s.token_delay
            total = int(planned * 1e9) + 1000
            text = full_text(n)
            obj = {
                **base,
                **({"message": {"role": "assistant", "content": text}} if chat else {}),
                **({} if chat else {"response": text}),
                "done": True,
                "done_reason": reason,
                **durations(total, int(s.first_token_delay * 1e9)),
                **stats,
            }
            return Reply(200, JSON, orjson.dumps(obj), delay=planned if n else 0.0)
        return Reply(200, NDJSON, chunks=ollama_stream(base, chat, n, reason, stats, t0))

    def _ollama_embed(self, path: str, req: dict[str, Any]) -> Reply:
        model = self._model(path, req)
        if isinstance(model, Reply):
            return model
        dim = self.settings.embedding_dim
        if path == "/api/embeddings":
            prompt = req.get("prompt", "")
            if not isinstance(prompt, str):
                return error_reply(path, 400, "prompt must be a string")
            return json_reply(200, {"embedding": embedding(prompt, dim)})
        inputs = req.get("input", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            return error_reply(path, 400, "input must be a string or a list of strings")
        dims = req.get("dimensions")
        if isinstance(dims, int) and not isinstance(dims, bool) and dims > 0:
            dim = dims
        return json_reply(
            200,
            {
                "model": model,
                "embeddings": [embedding(i, dim) for i in inputs],
                "total_duration": 1_000_000,
                "load_duration": 100_000,
                "prompt_eval_count": sum(max(count_words(i), 1) for i in inputs),
            },
        )

    def _ollama_pull(self, path: str, req: dict[str, Any]) -> Reply:
        model = req.get("model") or req.get("name")
        if not isinstance(model, str) or not model:
            return error_reply(path, 400, "model is required")

        def done() -> None:
            if self.settings.add_model(model):
                self._on_models_changed()

        if req.get("stream", True) is False:
            done()
            return json_reply(200, {"status": "success"})
        return Reply(200, NDJSON, chunks=pull_stream(model, done))

    def _ollama_delete(self, path: str, req: dict[str, Any]) -> Reply:
        """Ollama's DELETE /api/delete: 200 with an empty body, or 404 for an unknown model."""
        model = req.get("model") or req.get("name")
        if not isinstance(model, str) or not model:
            return error_reply(path, 400, "model is required")
        if not self.settings.remove_model(model):
            return error_reply(path, 404, f"model '{model}' not found")
        self.loaded.pop(model, None)
        self._on_models_changed()
        return Reply(200, JSON, b"")

    def _ollama_show(self, path: str, req: dict[str, Any]) -> Reply:
        if "model" not in req and "name" in req:
            req["model"] = req["name"]
        model = self._model(path, req)
        if isinstance(model, Reply):
            return model
        return json_reply(
            200,
            {
                "modelfile": f"FROM {model}\n",
                "parameters": "temperature 0.7",
                "template": "{{ .Prompt }}",
                "details": DETAILS,
                "model_info": {
                    "general.architecture": "fake",
                    "general.parameter_count": PARAMETER_COUNT,
                    "fake.context_length": 4096,
                },
                "capabilities": ["completion", "embedding"],
                "modified_at": MODIFIED_AT,
            },
        )

    # -- OpenAI -----------------------------------------------------------------------------

    def _openai(self, method: str, path: str, body: bytes) -> Reply:
        if method == "GET":
            if path == "/v1/models":
                return self._cached(
                    "models",
                    lambda: {
                        "object": "list",
                        "data": [model_object(m) for m in self.settings.models],
                    },
                )
            if path.startswith("/v1/models/"):
                name = path[len("/v1/models/") :]
                if self.settings.resolve(name) is None:
                    msg = f"The model `{name}` does not exist."
                    return error_reply(path, 404, msg, "model_not_found")
                return json_reply(200, model_object(name))
        elif method == "POST":
            handler = _OPENAI_POST.get(path)
            if handler is not None:
                return self._with_body(handler, path, body)
        return error_reply(path, 404, f"unknown path {path}", "not_found")

    def _openai_generate(self, path: str, req: dict[str, Any]) -> Reply:
        chat = path == "/v1/chat/completions"
        model = self._model(path, req)
        if isinstance(model, Reply):
            return model
        if chat:
            messages = req.get("messages")
            if not isinstance(messages, list):
                return error_reply(path, 400, "messages must be a list", "invalid_messages")
            prompt_tokens = sum(
                count_words(m.get("content")) for m in messages if isinstance(m, dict)
            )
        else:
            prompt = req.get("prompt")
            prompt_tokens = count_words(prompt) if isinstance(prompt, str) else len(prompt or [])
        s = self.settings
        limit = req.get("max_completion_tokens", req.get("max_tokens"))
        n, reason = limit_tokens(limit, s.tokens)
        prompt_tokens = max(prompt_tokens, 1)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n,
            "total_tokens": prompt_tokens + n,
        }
        base: dict[str, Any] = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-fake{next(_ids)}",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
        }
        if req.get("stream") is True:
            opts = req.get("stream_options")
            with_usage = isinstance(opts, dict) and opts.get("include_usage") is True
            return Reply(
                200,
                SSE,
                chunks=openai_stream(base, chat, n, reason, usage if with_usage else None),
            )
        text = full_text(n)
        if chat:
            base["object"] = "chat.completion"
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": reason,
                "logprobs": None,
            }
        else:
            choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
        obj = {**base, "choices": [choice], "usage": usage}
        planned = s.first_token_delay + n * s.token_delay
        return Reply(200, JSON, orjson.dumps(obj), delay=planned)

    def _openai_embed(self, path: str, req: dict[str, Any]) -> Reply:
        model = self._model(path, req)
        if isinstance(model, Reply):
            return model
        inputs = req.get("input")
        if isinstance(inputs, str) or (
            isinstance(inputs, list) and inputs and isinstance(inputs[0], int)
        ):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            return error_reply(path, 400, "input must be a string or a non-empty list", None)
        dim = self.settings.embedding_dim
        dims = req.get("dimensions")
        if isinstance(dims, int) and not isinstance(dims, bool) and dims > 0:
            dim = dims
        as_base64 = req.get("encoding_format") == "base64"
        data = []
        words = 0
        for i, item in enumerate(inputs):
            text = item if isinstance(item, str) else orjson.dumps(item).decode()
            words += max(count_words(text), 1)
            vec: Any = embedding(text, dim)
            if as_base64:
                vec = embedding_base64(vec)
            data.append({"object": "embedding", "index": i, "embedding": vec})
        usage = {"prompt_tokens": words, "total_tokens": words}
        return json_reply(200, {"object": "list", "data": data, "model": model, "usage": usage})


_Handler = Callable[[FakeAPI, str, dict[str, Any]], Reply]
_OLLAMA_POST: dict[str, _Handler] = {
    "/api/chat": FakeAPI._ollama_generate,
    "/api/generate": FakeAPI._ollama_generate,
    "/api/embed": FakeAPI._ollama_embed,
    "/api/embeddings": FakeAPI._ollama_embed,
    "/api/pull": FakeAPI._ollama_pull,
    "/api/show": FakeAPI._ollama_show,
}
_OPENAI_POST: dict[str, _Handler] = {
    "/v1/chat/completions": FakeAPI._openai_generate,
    "/v1/completions": FakeAPI._openai_generate,
    "/v1/embeddings": FakeAPI._openai_embed,
}
