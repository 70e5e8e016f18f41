"""Picks the response translator for an endpoint (see `ResponseTranslator` for the interface)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from routercore.timestamps import MICROS, now_rfc3339
from routercore.translate.bodies import (
    CompletionTranslator,
    EmbeddingsTranslator,
    EmbedTranslator,
    ShowTranslator,
)
from routercore.translate.stream import StreamTranslator
from routercore.translate.translator import Exchange, ResponseTranslator

# `created_at` as Ollama writes it: UTC now with microseconds.
CREATED_AT = partial(now_rfc3339, MICROS)


def ollama_response_translator(
    endpoint: str,
    *,
    model: str,
    streaming: bool,
    started_ns: int,
    clock_ns: Callable[[], int] = time.perf_counter_ns,
    now_rfc3339: Callable[[], str] = CREATED_AT,
    upstream_model: str | None = None,
) -> ResponseTranslator:
    """The translator for one request. `model` is the name the client asked for (echoed in every
    answer); `upstream_model` the id the node knows it by, when different (only `api.show`
    looks for it in `/v1/models`). `streaming` only matters for chat and generate (see
    `ollama_wants_stream`). Durations: total = clock_ns() at the end - started_ns."""
    exchange: Exchange = {
        "model": model,
        "started_ns": started_ns,
        "clock_ns": clock_ns,
        "now_rfc3339": now_rfc3339,
    }
    if endpoint in ("api.chat", "api.generate"):
        chat = endpoint == "api.chat"
        if streaming:
            return StreamTranslator(chat=chat, **exchange)
        return CompletionTranslator(chat=chat, **exchange)
    if endpoint == "api.embed":
        return EmbedTranslator(**exchange)
    if endpoint == "api.embeddings":
        return EmbeddingsTranslator(**exchange)
    if endpoint == "api.show":
        return ShowTranslator(upstream_model=upstream_model or model, **exchange)
    raise ValueError(f"no translation for endpoint {endpoint!r}")
