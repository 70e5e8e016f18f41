"""What every response translator shares: the interface the proxy drives and the timings."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict, Unpack


class Exchange(TypedDict):
    """What every translator is made with, as keyword arguments: `model`, the name the client
    asked for (echoed in every answer); `started_ns` and `clock_ns`, for the durations Ollama
    reports (total = clock_ns() at the end - started_ns); `now_rfc3339`, for `created_at`.
    Named once here, so a subclass adds only its own arguments."""

    model: str
    started_ns: int
    clock_ns: Callable[[], int]
    now_rfc3339: Callable[[], str]


class ResponseTranslator:
    """Turns one upstream OpenAI answer into the client's Ollama answer, one per request.

    The proxy feeds the upstream body as it arrives and sends whatever comes back at once:
    `feed(bytes) -> bytes` (maybe b""), then `finish() -> bytes` when the body ended.
    `usage()` gives the token counts for the router's history. `error` is set when the answer
    was an error or could not be read (a streaming translator then ends the stream with
    Ollama's `{"error": ...}` line; a non-streaming one raises `TranslationError`, a 502).
    """

    content_type: bytes = b"application/json; charset=utf-8"

    def __init__(self, **exchange: Unpack[Exchange]) -> None:
        self.model = exchange["model"]
        self.started_ns = exchange["started_ns"]
        self.clock_ns = exchange["clock_ns"]
        self.now_rfc3339 = exchange["now_rfc3339"]
        self.error: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None

    def feed(self, data: bytes) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        raise NotImplementedError

    def usage(self) -> tuple[int | None, int | None]:
        return self.prompt_tokens, self.completion_tokens

    def record_usage(self, usage: object) -> None:
        """OpenAI's `usage` object, when it is one."""
        if not isinstance(usage, dict):
            return
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        if isinstance(prompt, int) and not isinstance(prompt, bool):
            self.prompt_tokens = prompt
        if isinstance(completion, int) and not isinstance(completion, bool):
            self.completion_tokens = completion
