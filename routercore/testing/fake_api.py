"""Sans-IO request handling for the fake node: (method, path, body) in, a `Reply` out.

Bodies are built with orjson; streamed bodies are generators so each chunk is produced only
when the server is ready to send it (after its delay), and timings in the last chunk are real.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import math
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from routercore.testing.fake_state import RUNTIME_VERSION, Settings, model_digest

JSON = [(b"content-type", b"application/json; charset=utf-8")]
NDJSON = [(b"content-type", b"application/x-ndjson")]
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
SSE_DONE = b"data: [DONE]\n\n"
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
_MODEL_SIZE = 1_234_567_890
_MODIFIED_AT = "2024-01-01T00:00:00Z"
_DETAILS = {
    "parent_model": "",
    "format": "gguf",
    "family": "fake",
    "families": ["fake"],
    "parameter_size": "1B",
    "quantization_level": "Q4_0",
}


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


@lru_cache(maxsize=64)
def token_texts(n: int) -> tuple[str, ...]:
    """The deterministic reply split into streamed pieces: "tok0", " tok1", ..."""
    return tuple(f"tok{i}" if i == 0 else f" tok{i}" for i in range(n))


@lru_cache(maxsize=64)
def full_text(n: int) -> str:
    return "".join(token_texts(n))


@lru_cache(maxsize=4096)
def embedding(text: str, dim: int) -> tuple[float, ...]:
    """A unit vector derived from a hash of `text`: same input, same vector, on every node."""
    raw: list[int] = []
    block = 0
    data = text.encode()
    while len(raw) < dim:
        digest = hashlib.blake2b(data, digest_size=64, salt=block.to_bytes(16, "little")).digest()
        raw.extend(struct.unpack("<16I", digest))
        block += 1
    values = [v / 2147483648.0 - 1.0 for v in raw[:dim]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return tuple(round(v / norm, 6) for v in values)


def count_words(text: Any) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _limit(requested: Any, configured: int) -> tuple[int, str]:
    """Tokens to produce and the finish reason, honouring a smaller client limit."""
    valid = isinstance(requested, int) and not isinstance(requested, bool)
    if valid and 0 <= requested < configured:
        return requested, "length"
    return configured, "stop"


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
                req = self._parse(path, body)
                if isinstance(req, Reply):
                    return req
                return handler(self, path, req)
        return error_reply(path, 404 if method in ("GET", "POST") else 405, "404 page not found")

    def _tags(self) -> list[dict[str, Any]]:
        return [
            {
                "name": m,
                "model": m,
                "modified_at": _MODIFIED_AT,
                "size": _MODEL_SIZE,
                "digest": model_digest(m),
                "details": _DETAILS,
            }
            for m in self.settings.models
        ]

    def _ps(self) -> list[dict[str, Any]]:
        out = []
        for model, used in self.loaded.items():
            name = self.settings.resolve(model)
            if name is None:
                continue
            expires = datetime.fromtimestamp(used, UTC) + timedelta(minutes=5)
            out.append(
                {
                    "name": name,
                    "model": name,
                    "size": _MODEL_SIZE,
                    "digest": model_digest(name),
                    "details": _DETAILS,
                    "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "size_vram": _MODEL_SIZE,
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
        n, reason = _limit(num_predict, s.tokens)
        if empty:  # like Ollama: no prompt only loads the model
            n, reason = 0, "load"
        base: dict[str, Any] = {"model": model, "created_at": _now_rfc3339()}
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
                **_durations(total, int(s.first_token_delay * 1e9)),
                **stats,
            }
            return Reply(200, JSON, orjson.dumps(obj), delay=planned if n else 0.0)
        return Reply(200, NDJSON, chunks=_ollama_stream(base, chat, n, reason, stats, t0))

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
        if self.settings.add_model(model):
            self._on_models_changed()
        if req.get("stream", True) is False:
            return json_reply(200, {"status": "success"})
        return Reply(200, NDJSON, chunks=_pull_stream(model))

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
                "details": _DETAILS,
                "model_info": {"general.architecture": "fake", "fake.context_length": 4096},
                "capabilities": ["completion", "embedding"],
                "modified_at": _MODIFIED_AT,
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
                        "data": [_model_obj(m) for m in self.settings.models],
                    },
                )
            if path.startswith("/v1/models/"):
                name = path[len("/v1/models/") :]
                if self.settings.resolve(name) is None:
                    msg = f"The model `{name}` does not exist."
                    return error_reply(path, 404, msg, "model_not_found")
                return json_reply(200, _model_obj(name))
        elif method == "POST":
            handler = _OPENAI_POST.get(path)
            if handler is not None:
                req = self._parse(path, body)
                if isinstance(req, Reply):
                    return req
                return handler(self, path, req)
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
        n, reason = _limit(limit, s.tokens)
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
                chunks=_openai_stream(base, chat, n, reason, usage if with_usage else None),
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
                vec = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vec})
        usage = {"prompt_tokens": words, "total_tokens": words}
        return json_reply(200, {"object": "list", "data": data, "model": model, "usage": usage})


def _durations(total_ns: int, prompt_ns: int) -> dict[str, int]:
    load = min(100_000, total_ns)
    return {
        "total_duration": total_ns,
        "load_duration": load,
        "prompt_eval_duration": max(prompt_ns, 1),
        "eval_duration": max(total_ns - load - prompt_ns, 1),
    }


def _ollama_stream(
    base: dict[str, Any], chat: bool, n: int, reason: str, stats: dict[str, int], t0: int
) -> Iterator[bytes]:
    """NDJSON lines: one per token, then the `done` line with counts and real timings."""
    first_ns = 0
    dumps = orjson.dumps
    for i, piece in enumerate(token_texts(n)):
        if chat:
            line = {**base, "message": {"role": "assistant", "content": piece}, "done": False}
        else:
            line = {**base, "response": piece, "done": False}
        if i == 0:
            first_ns = time.perf_counter_ns() - t0
        yield dumps(line) + b"\n"
    total = time.perf_counter_ns() - t0
    last: dict[str, Any] = {**base}
    if chat:
        last["message"] = {"role": "assistant", "content": ""}
    else:
        last["response"] = ""
    last.update(done=True, done_reason=reason, **_durations(total, first_ns or total), **stats)
    yield dumps(last) + b"\n"


def _openai_stream(
    base: dict[str, Any], chat: bool, n: int, reason: str, usage: dict[str, int] | None
) -> Iterator[bytes]:
    """SSE events: one per token, a finish event, usage when asked for, then [DONE]."""
    dumps = orjson.dumps
    for i, piece in enumerate(token_texts(n)):
        if chat:
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
        else:
            choice = {"index": 0, "text": piece, "finish_reason": None, "logprobs": None}
        yield b"data: " + dumps({**base, "choices": [choice]}) + b"\n\n"
    if chat:
        choice = {"index": 0, "delta": {}, "finish_reason": reason}
    else:
        choice = {"index": 0, "text": "", "finish_reason": reason, "logprobs": None}
    if usage is None:
        yield b"data: " + dumps({**base, "choices": [choice]}) + b"\n\n" + SSE_DONE
    else:
        yield b"data: " + dumps({**base, "choices": [choice]}) + b"\n\n"
        yield b"data: " + dumps({**base, "choices": [], "usage": usage}) + b"\n\n" + SSE_DONE


def _pull_stream(model: str) -> Iterator[bytes]:
    """Ollama's pull progress: manifest, a few progress lines for one layer, success."""
    digest = "sha256:" + model_digest(model)
    total = _MODEL_SIZE
    yield b'{"status":"pulling manifest"}\n'
    for step in range(5):
        completed = total * step // 4
        line = {
            "status": f"pulling {digest[7:19]}",
            "digest": digest,
            "total": total,
            "completed": completed,
        }
        yield orjson.dumps(line) + b"\n"
    yield b'{"status":"verifying sha256 digest"}\n'
    yield b'{"status":"writing manifest"}\n'
    yield b'{"status":"success"}\n'


def _model_obj(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1704067200, "owned_by": "fakenode"}


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
