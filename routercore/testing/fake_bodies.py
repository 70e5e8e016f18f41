"""Response bodies for the fake node: deterministic tokens and embeddings, stream generators.

Pure functions, no I/O. Streams are generators so each chunk is built only when the server
sends it, which keeps the timings in Ollama's final chunk real.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

import orjson

from routercore.testing.fake_state import model_digest

SSE_DONE = b"data: [DONE]\n\n"

MODEL_SIZE = 1_234_567_890
MODIFIED_AT = "2024-01-01T00:00:00Z"
DETAILS = {
    "parent_model": "",
    "format": "gguf",
    "family": "fake",
    "families": ["fake"],
    "parameter_size": "1B",
    "quantization_level": "Q4_0",
}


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


def limit_tokens(requested: Any, configured: int) -> tuple[int, str]:
    """Tokens to produce and the finish reason, honouring a smaller client limit."""
    valid = isinstance(requested, int) and not isinstance(requested, bool)
    if valid and 0 <= requested < configured:
        return requested, "length"
    return configured, "stop"


def durations(total_ns: int, prompt_ns: int) -> dict[str, int]:
    load = min(100_000, total_ns)
    return {
        "total_duration": total_ns,
        "load_duration": load,
        "prompt_eval_duration": max(prompt_ns, 1),
        "eval_duration": max(total_ns - load - prompt_ns, 1),
    }


def ollama_stream(
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
    last.update(done=True, done_reason=reason, **durations(total, first_ns or total), **stats)
    yield dumps(last) + b"\n"


def openai_stream(
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


PARAMETER_COUNT = 1_000_000_000  # "1B" in DETAILS; /api/show's general.parameter_count


def pull_stream(model: str, on_done: Callable[[], None] | None = None) -> Iterator[bytes]:
    """Ollama's pull progress: manifest, a few progress lines for one layer, success.

    `on_done` runs just before the success line: like Ollama, the model is listed only once
    its manifest is written, so a pull cut short leaves no model behind."""
    digest = "sha256:" + model_digest(model)
    total = MODEL_SIZE
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
    if on_done is not None:
        on_done()
    yield b'{"status":"success"}\n'


def model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1704067200, "owned_by": "fakenode"}


def embedding_base64(vector: tuple[float, ...]) -> str:
    """OpenAI's `encoding_format: base64`: little-endian float32s, what the client defaults to."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
