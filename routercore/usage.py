"""Token counts from the tail of a response, without re-parsing what the node sent.

OpenAI puts `usage` last (in the body, or in the last SSE event when the client asked for it);
Ollama puts `prompt_eval_count`/`eval_count` in its last object or NDJSON line. Keeping
references to the last few body pieces and scanning only them at the end is enough.
"""

from __future__ import annotations

import re
from collections import deque

_TAIL_PIECES = 4
_TAIL_BYTES = 16 * 1024


def _count(name: bytes) -> tuple[bytes, re.Pattern[bytes]]:
    """A token count's quoted key and its pattern, which starts with the key: a match starts
    exactly where the key does."""
    key = b'"' + name + b'"'
    return key, re.compile(re.escape(key) + rb"\s*:\s*(\d+)")


# Per API: the prompt count, then the completion count.
_PATTERNS = {
    "openai": (_count(b"prompt_tokens"), _count(b"completion_tokens")),
    "ollama": (_count(b"prompt_eval_count"), _count(b"eval_count")),
}


class TailScanner:
    """Feed body pieces; `usage()` reads token counts from the last ones. One is made per
    proxied request: its deque is made with positional arguments (`maxlen=` costs three
    times as much)."""

    __slots__ = ("api", "pieces")

    def __init__(self, api: str) -> None:
        self.api = api
        self.pieces: deque[bytes] = deque((), _TAIL_PIECES)  # noqa: RUF037 (see above)

    def feed(self, piece: bytes) -> None:
        self.pieces.append(piece)

    def usage(self) -> tuple[int | None, int | None]:
        """(prompt tokens, completion tokens), None where the answer does not say (the shape
        of ResponseTranslator.usage)."""
        if not self.pieces:
            return None, None
        tail = b"".join(self.pieces)[-_TAIL_BYTES:]
        (prompt_key, prompt_re), (completion_key, completion_re) = _PATTERNS[self.api]
        return (
            _last_int(prompt_key, prompt_re, tail),
            _last_int(completion_key, completion_re, tail),
        )


def _last_int(key: bytes, pattern: re.Pattern[bytes], data: bytes) -> int | None:
    """The number of the last match of `pattern` in `data`, as the last of `findall` gives it.

    Searched from the end: `rfind` for the key (a C search, and the count is usually in the
    last few hundred bytes), then the pattern tried right there; a key without a number after
    it (`"prompt_tokens": null`) sends the search further back. Matches cannot overlap (each
    is the quoted key, then `:` and digits), so this is the match `findall` would end with.
    """
    end = len(data)
    while (at := data.rfind(key, 0, end)) >= 0:
        found = pattern.match(data, at)
        if found is not None:
            return int(found.group(1))
        end = at + len(key) - 1  # the next key to try starts before this one
    return None


def error_event(api: str, message: str) -> bytes:
    """CONTRACT's in-stream error: an SSE `data:` event for /v1, a final NDJSON line for /api."""
    import orjson

    if api == "openai":
        payload = {
            "error": {"message": message, "type": "upstream_error", "code": "upstream_error"}
        }
        return b"data: " + orjson.dumps(payload) + b"\n\n"
    return orjson.dumps({"error": message}) + b"\n"
