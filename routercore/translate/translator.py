"""What every response translator shares: the interface the proxy drives and the timings."""

from __future__ import annotations

from collections.abc import Callable


class ResponseTranslator:
    """Turns one upstream OpenAI answer into the client's Ollama answer, one per request.

    The proxy feeds the upstream body as it arrives and sends whatever comes back at once:
    `feed(bytes) -> bytes` (maybe b""), then `finish() -> bytes` when the body ended.
    `usage()` gives the token counts for the router's history. `error` is set when the answer
    was an error or could not be read (a streaming translator then ends the stream with
    Ollama's `{"error": ...}` line; a non-streaming one raises `TranslationError`, a 502).
    """

    content_type: bytes = b"application/json; charset=utf-8"

    def __init__(
        self,
        *,
        model: str,
        started_ns: int,
        clock_ns: Callable[[], int],
        now_rfc3339: Callable[[], str],
    ) -> None:
        self.model = model
        self.started_ns = started_ns
        self.clock_ns = clock_ns
        self.now_rfc3339 = now_rfc3339
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
