"""Prompt prefixes for affinity routing: hashes of a request's prompt at its natural boundaries.

A runtime keeps the prompt it last processed (llama.cpp's slot, with `--cache` a RAM cache of
several; vLLM and SGLang a prefix cache), so a request whose prompt starts with a prompt the node
already holds skips most of its prefill. The balancer's prefix index maps these hashes to the
node that served them; this module only computes them, without I/O.

- Chat (`messages`): one boundary after each message. A conversation's next turn is the previous
  prompt plus the answer plus a new message, so the previous request's last boundary is one of
  the next request's boundaries, and the longest one the index knows names the node.
- Raw prompts (`prompt`): one boundary every CHUNK_CHARS characters and one at the end.

Each boundary's hash covers everything before it (one running BLAKE2b), seeded with the model
and what a runtime puts in front of the messages (tools, a system prompt, a template), so equal
hashes mean equal prompt prefixes. The anchor names the conversation for rendezvous hashing:
the boundary after its first non-system message (chat) or after the first chunk (raw), which is
the same in every later turn, so every router replica sends a new conversation to the same node.
Chat boundaries before the anchor (the system prompt alone) are left out: one system prompt is
shared by many conversations, and matching on it would pull them all onto one node.
The request body itself is never changed.
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass
from typing import Any

import orjson

CHUNK_CHARS = 256
# Boundaries kept per request (the newest ones): bounds the work of one pick and of recording
# it. A follow-up's previous prompt ends a few messages (or an answer's worth of chunks) back.
MAX_BOUNDARIES = 64
_SEPARATOR = b"\x1e"  # never inside orjson output (control characters are escaped)
_SYSTEM_ROLES = ("system", "developer")

CHAT_ENDPOINTS = ("chat.completions", "api.chat")
PROMPT_ENDPOINTS = ("completions", "api.generate")


@dataclass(frozen=True, slots=True)
class PromptPrefix:
    """What the balancer's `pick_affine` takes: boundary hashes (native-endian uint64, shortest
    first) and the anchor."""

    hashes: bytes
    anchor: int

    @property
    def boundaries(self) -> int:
        return len(self.hashes) // 8


def _digest(hasher: Any) -> int:
    return int.from_bytes(hasher.digest(), "little")


def _seeded(model: str, *head: Any) -> Any:
    hasher = hashlib.blake2b(digest_size=8, person=b"llm-router-pfx")
    hasher.update(model.encode("utf-8", "surrogatepass"))
    for part in head:
        hasher.update(_SEPARATOR)
        if part is not None:
            hasher.update(orjson.dumps(part, option=orjson.OPT_SORT_KEYS))
    return hasher


def chat_prefix(model: str, messages: Any, tools: Any = None) -> PromptPrefix | None:
    """Boundaries after each message; None when `messages` is not a non-empty list of objects
    (the node then answers the request as it would anyway)."""
    if not isinstance(messages, list) or not messages:
        return None
    if not all(isinstance(m, dict) for m in messages):
        return None
    try:
        hasher = _seeded(model, tools)
        pieces = [orjson.dumps(m, option=orjson.OPT_SORT_KEYS) for m in messages]
    except (TypeError, orjson.JSONEncodeError):
        return None
    anchor_at = next(
        (i for i, m in enumerate(messages) if m.get("role") not in _SYSTEM_ROLES),
        len(messages) - 1,
    )
    first_kept = max(anchor_at, len(messages) - MAX_BOUNDARIES)
    kept: list[int] = []
    anchor = 0
    for i, piece in enumerate(pieces):
        hasher.update(piece)
        hasher.update(_SEPARATOR)
        if i >= first_kept or i == anchor_at:
            value = _digest(hasher)
            if i == anchor_at:
                anchor = value
            if i >= first_kept:
                kept.append(value)
    return PromptPrefix(array("Q", kept).tobytes(), anchor)


def text_prefix(model: str, prompt: Any, *head: Any) -> PromptPrefix | None:
    """Boundaries every CHUNK_CHARS characters and at the end; `head` is what a runtime puts
    before the prompt (system prompt, template). None for an empty or non-string prompt."""
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        return None
    try:
        hasher = _seeded(model, *head)
    except (TypeError, orjson.JSONEncodeError):
        return None
    ends = list(range(CHUNK_CHARS, len(prompt), CHUNK_CHARS))
    ends.append(len(prompt))
    first_kept = max(0, len(ends) - MAX_BOUNDARIES)
    kept: list[int] = []
    anchor = 0
    start = 0
    for i, end in enumerate(ends):
        hasher.update(prompt[start:end].encode("utf-8", "surrogatepass"))
        start = end
        if i >= first_kept or i == 0:
            value = _digest(hasher)
            if i == 0:
                anchor = value
            if i >= first_kept:
                kept.append(value)
    return PromptPrefix(array("Q", kept).tobytes(), anchor)


def prompt_prefix(endpoint: str, model: str, data: dict[str, Any]) -> PromptPrefix | None:
    """The prefix of one proxied request body, or None for endpoints without a prompt
    (embeddings, show) and for prompts in shapes it does not read (token arrays, batches)."""
    if endpoint in CHAT_ENDPOINTS:
        return chat_prefix(model, data.get("messages"), data.get("tools"))
    if endpoint == "completions":
        return text_prefix(model, data.get("prompt"))
    if endpoint == "api.generate":
        return text_prefix(model, data.get("prompt"), data.get("system"), data.get("template"))
    return None
