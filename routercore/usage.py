"""Token counts from the tail of a response, without re-parsing what the node sent.

OpenAI puts `usage` last (in the body, or in the last SSE event when the client asked for it);
Ollama puts `prompt_eval_count`/`eval_count` in its last object or NDJSON line. Keeping
references to the last few body pieces and scanning only them at the end is enough.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

_TAIL_PIECES = 4
_TAIL_BYTES = 16 * 1024

_PATTERNS = {
    "openai": (
        re.compile(rb'"prompt_tokens"\s*:\s*(\d+)'),
        re.compile(rb'"completion_tokens"\s*:\s*(\d+)'),
    ),
    "ollama": (
        re.compile(rb'"prompt_eval_count"\s*:\s*(\d+)'),
        re.compile(rb'"eval_count"\s*:\s*(\d+)'),
    ),
}


@dataclass(slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class TailScanner:
    """Feed body pieces; `usage()` reads token counts from the last ones."""

    __slots__ = ("api", "pieces")

    def __init__(self, api: str) -> None:
        self.api = api
        self.pieces: deque[bytes] = deque(maxlen=_TAIL_PIECES)

    def feed(self, piece: bytes) -> None:
        self.pieces.append(piece)

    def usage(self) -> Usage:
        if not self.pieces:
            return Usage()
        tail = b"".join(self.pieces)[-_TAIL_BYTES:]
        prompt_re, completion_re = _PATTERNS[self.api]
        return Usage(_last_int(prompt_re, tail), _last_int(completion_re, tail))


def _last_int(pattern: re.Pattern[bytes], data: bytes) -> int | None:
    found = pattern.findall(data)
    return int(found[-1]) if found else None


def error_event(api: str, message: str) -> bytes:
    """CONTRACT's in-stream error: an SSE `data:` event for /v1, a final NDJSON line for /api."""
    import orjson

    if api == "openai":
        payload = {
            "error": {"message": message, "type": "upstream_error", "code": "upstream_error"}
        }
        return b"data: " + orjson.dumps(payload) + b"\n\n"
    return orjson.dumps({"error": message}) + b"\n"
