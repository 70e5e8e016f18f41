"""Property: prompt prefixes are what the plain algorithm gives (one BLAKE2b per request,
seeded afresh; boundary values as ints), so seed caching and joined digests change no hash and
no affinity decision."""

from __future__ import annotations

import hashlib
from array import array
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from routercore import prefix
from routercore.prefix import MAX_BOUNDARIES, prompt_prefix


def _seeded(model: str, *head: Any) -> Any:
    hasher = hashlib.blake2b(digest_size=8, person=b"llm-router-pfx")
    hasher.update(model.encode("utf-8", "surrogatepass"))
    for part in head:
        hasher.update(b"\x1e")
        if part is not None:
            hasher.update(orjson.dumps(part, option=orjson.OPT_SORT_KEYS))
    return hasher


def _value(hasher: Any) -> int:
    return int.from_bytes(hasher.digest(), "little")


def oracle_chat(model: str, messages: Any, tools: Any) -> tuple[bytes, int] | None:
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
        (i for i, m in enumerate(messages) if m.get("role") not in ("system", "developer")),
        len(messages) - 1,
    )
    first_kept = max(anchor_at, len(messages) - MAX_BOUNDARIES)
    kept, anchor = [], 0
    for i, piece in enumerate(pieces):
        hasher.update(piece)
        hasher.update(b"\x1e")
        if i == anchor_at:
            anchor = _value(hasher)
        if i >= first_kept:
            kept.append(_value(hasher))
    return array("Q", kept).tobytes(), anchor


def oracle_text(model: str, prompt: Any, *head: Any) -> tuple[bytes, int] | None:
    text = prompt[0] if isinstance(prompt, list) and len(prompt) == 1 else prompt
    if not (isinstance(text, str) and text):
        return None
    try:
        hasher = _seeded(model, *head)
    except (TypeError, orjson.JSONEncodeError):
        return None
    chunk = prefix.CHUNK_CHARS
    values = []
    for start in range(0, len(text), chunk):
        hasher.update(text[start : start + chunk].encode("utf-8", "surrogatepass"))
        values.append(_value(hasher))
    return array("Q", values[-MAX_BOUNDARIES:]).tobytes(), values[0]


# What a runtime puts before a raw prompt, by endpoint.
_HEADS: dict[str, tuple[str, ...]] = {"completions": (), "api.generate": ("system", "template")}


def oracle(endpoint: str, model: str, data: dict[str, Any]) -> tuple[bytes, int] | None:
    if endpoint in ("chat.completions", "api.chat"):
        return oracle_chat(model, data.get("messages"), data.get("tools"))
    if endpoint in _HEADS:
        return oracle_text(model, data.get("prompt"), *(data.get(k) for k in _HEADS[endpoint]))
    return None


text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(["\ud800"])
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", None])
message = st.one_of(
    st.fixed_dictionaries({"role": roles, "content": text}, optional={"name": text}),
    st.dictionaries(text, text, max_size=3),
    st.integers(),  # not an object: no prefix
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "messages": st.lists(message, max_size=70) | st.just("nope"),
        "tools": json_value,
        "prompt": st.one_of(
            text,
            st.text(min_size=200, max_size=20_000).map(lambda t: t * 3),
            st.lists(text, max_size=2),
            st.lists(st.integers(0, 9), max_size=3),
        ),
        "system": json_value,
        "template": json_value,
    },
)
endpoints = st.sampled_from(["chat.completions", "api.chat", "completions", "api.generate", "x"])


@settings(max_examples=400, deadline=None)
@given(endpoint=endpoints, model=st.sampled_from(["m", "bench", "other", "\ud800x"]), body=bodies)
def test_prefixes_match_the_plain_algorithm(
    endpoint: str, model: str, body: dict[str, Any]
) -> None:
    got = prompt_prefix(endpoint, model, body)
    want = oracle(endpoint, model, body)
    assert (None if got is None else (got.hashes, got.anchor)) == want
    # A second call copies the cached seed again: nothing of the first request stays in it.
    again = prompt_prefix(endpoint, model, body)
    assert again == got


def test_the_seed_cache_is_bounded_and_still_right_after_clearing() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}]}
    for i in range(prefix._SEEDS_MAX + 5):
        got = prompt_prefix("chat.completions", f"model-{i}", body)
        assert got is not None
        assert (got.hashes, got.anchor) == oracle("chat.completions", f"model-{i}", body)
    assert len(prefix._SEEDS) <= prefix._SEEDS_MAX
