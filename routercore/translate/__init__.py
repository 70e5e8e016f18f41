"""Ollama's API on OpenAI-only upstreams (llama.cpp, vLLM, cloud providers), sans-IO.

The proxy asks `ollama_to_openai` for the request to send, feeds the upstream body to the
`ollama_response_translator` and sends what it returns; upstream HTTP errors go through
`openai_error_to_ollama`. Nothing here does I/O or touches asyncio.

Modules: `requests` (Ollama request -> OpenAI request), `sse` (bounded SSE splitting),
`stream` (SSE chunks -> NDJSON lines), `bodies` (whole answers: chat, generate, embed,
embeddings, show), `responses` (picks the translator), `common` (errors, tool-call shapes).

Cost on the hot path, `scripts/bench_translate.py` (one 236-byte SSE chunk of llama.cpp's
server in, one NDJSON line out; best of 5 x 200k on the shared 2-core dev VM at load ~7):
3.0 µs per chunk, 4.4 µs when the chunk arrives cut in two. The floor, orjson.loads + dumps
of the same chunk alone, is 1.6 µs.
"""

from routercore.translate.common import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_NDJSON,
    TranslationError,
    ollama_error_line,
    openai_error_to_ollama,
)
from routercore.translate.requests import (
    ENDPOINTS,
    UpstreamCall,
    ollama_to_openai,
    ollama_wants_stream,
)
from routercore.translate.responses import ollama_response_translator
from routercore.translate.translator import ResponseTranslator

__all__ = [
    "CONTENT_TYPE_JSON",
    "CONTENT_TYPE_NDJSON",
    "ENDPOINTS",
    "ResponseTranslator",
    "TranslationError",
    "UpstreamCall",
    "ollama_error_line",
    "ollama_response_translator",
    "ollama_to_openai",
    "ollama_wants_stream",
    "openai_error_to_ollama",
]
