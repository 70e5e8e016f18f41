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
import sys
from array import array
from typing import Any, NamedTuple

import orjson

CHUNK_CHARS = 256
# Boundaries kept per request (the newest ones): bounds the work of one pick and of recording
# it. A follow-up's previous prompt ends a few messages (or an answer's worth of chunks) back.
MAX_BOUNDARIES = 64
_SEPARATOR = b"\x1e"  # never inside orjson output (control characters are escaped)
_SYSTEM_ROLES = ("system", "developer")

CHAT_ENDPOINTS = ("chat.completions", "api.chat")
PROMPT_ENDPOINTS = ("completions", "api.generate")


class PromptPrefix(NamedTuple):
    """What the balancer's `pick_affine` takes: boundary hashes (native-endian uint64, shortest
    first) and the anchor. A named tuple rather than a frozen dataclass: one is made per
    proxied request, and a frozen dataclass's __init__ costs half again as much."""

    hashes: bytes
    anchor: int

    @property
    def boundaries(self) -> int:
        return len(self.hashes) // 8


# Seeds without head content (no tools, no system prompt or template: most requests), by
# (model, number of head parts): made once and copied, instead of a new BLAKE2b keyed with the
# model per request. Cleared when full, since clients name models freely.
_SEEDS: dict[tuple[str, int], Any] = {}
_SEEDS_MAX = 1024
# BLAKE2b's digest read little-endian is the boundary's value; on a little-endian machine its
# 8 bytes already are the native uint64 `hashes` holds, so they are joined as they are.
_LITTLE_ENDIAN = sys.byteorder == "little"


def _seeded(model: str, *head: Any) -> Any:
    if head.count(None) != len(head):
        return _new_seed(model, head)
    key = (model, len(head))
    seed = _SEEDS.get(key)
    if seed is None:
        if len(_SEEDS) >= _SEEDS_MAX:
            _SEEDS.clear()
        seed = _SEEDS[key] = _new_seed(model, head)
    return seed.copy()


def _new_seed(model: str, head: tuple[Any, ...]) -> Any:
    hasher = hashlib.blake2b(digest_size=8, person=b"llm-router-pfx")
    hasher.update(model.encode("utf-8", "surrogatepass"))
    for part in head:
        hasher.update(_SEPARATOR)
        if part is not None:
            hasher.update(orjson.dumps(part, option=orjson.OPT_SORT_KEYS))
    return hasher


def _prefix(digests: list[bytes], anchor: bytes) -> PromptPrefix:
    """The PromptPrefix of the kept boundaries' digests and the anchor's."""
    if _LITTLE_ENDIAN:
        hashes = b"".join(digests)
    else:
        hashes = array("Q", [int.from_bytes(d, "little") for d in digests]).tobytes()
    return PromptPrefix(hashes, int.from_bytes(anchor, "little"))


def chat_prefix(model: str, messages: Any, tools: Any = None) -> PromptPrefix | None:
    """Boundaries after each message; None when `messages` is not a non-empty list of objects
    (the node then answers the request as it would anyway)."""
    if not isinstance(messages, list) or not messages:
        return None
    anchor_at = -1
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return None
        if anchor_at < 0 and m.get("role") not in _SYSTEM_ROLES:
            anchor_at = i
    if anchor_at < 0:
        anchor_at = len(messages) - 1
    first_kept = max(anchor_at, len(messages) - MAX_BOUNDARIES)
    kept: list[bytes] = []
    anchor = b""
    try:
        hasher = _seeded(model, tools)
        for i, m in enumerate(messages):
            hasher.update(orjson.dumps(m, option=orjson.OPT_SORT_KEYS))
            hasher.update(_SEPARATOR)
            if i >= first_kept or i == anchor_at:
                digest = hasher.digest()
                if i == anchor_at:
                    anchor = digest
                if i >= first_kept:
                    kept.append(digest)
    except (TypeError, orjson.JSONEncodeError):
        return None
    return _prefix(kept, anchor)


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
    kept: list[bytes] = []
    anchor = b""
    start = 0
    for i, end in enumerate(ends):
        hasher.update(prompt[start:end].encode("utf-8", "surrogatepass"))
        start = end
        if i >= first_kept or i == 0:
            digest = hasher.digest()
            if i == 0:
                anchor = digest
            if i >= first_kept:
                kept.append(digest)
    return _prefix(kept, anchor)


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
