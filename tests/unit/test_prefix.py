"""Prompt boundaries: what a follow-up shares with the turn before it, and what it does not."""

from __future__ import annotations

from typing import Any

from routercore.prefix import (
    CHUNK_CHARS,
    MAX_BOUNDARIES,
    PromptPrefix,
    chat_prefix,
    prompt_prefix,
    text_prefix,
)


def hashes(prefix: PromptPrefix | None) -> list[int]:
    assert prefix is not None
    return list(memoryview(prefix.hashes).cast("Q"))


def chat(*contents: str, system: str | None = "be brief") -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for i, text in enumerate(contents):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return messages


def test_a_follow_up_contains_the_previous_prompt_as_a_boundary() -> None:
    first = chat_prefix("m", chat("hello"))
    second = chat_prefix("m", chat("hello", "hi there", "how are you?"))
    assert hashes(first)[-1] in hashes(second)
    assert hashes(second)[: len(hashes(first))] == hashes(first)
    assert first is not None and second is not None and first.anchor == second.anchor


def test_the_system_prompt_alone_is_no_boundary() -> None:
    """Conversations that share only a system prompt share no boundary (else one node would
    attract every conversation), and the anchor is the first user message."""
    a = chat_prefix("m", chat("question A"))
    b = chat_prefix("m", chat("question B"))
    assert not set(hashes(a)) & set(hashes(b))
    assert a is not None and b is not None and a.anchor != b.anchor
    assert a.anchor == hashes(a)[0]


def test_what_changes_the_prompt_changes_the_hashes() -> None:
    base = hashes(chat_prefix("m", chat("hello")))
    assert hashes(chat_prefix("other-model", chat("hello"))) != base
    assert hashes(chat_prefix("m", chat("hello", system="be long"))) != base
    assert hashes(chat_prefix("m", chat("hello"), tools=[{"type": "function"}])) != base
    # Key order inside a message is not part of the prompt.
    reordered = [{"content": m["content"], "role": m["role"]} for m in chat("hello")]
    assert hashes(chat_prefix("m", reordered)) == base


def test_long_conversations_keep_the_newest_boundaries() -> None:
    long = chat(*[f"message {i}" for i in range(200)])
    kept = hashes(chat_prefix("m", long))
    assert len(kept) == MAX_BOUNDARIES
    shorter = hashes(chat_prefix("m", long[:-2]))
    assert shorter[-1] in kept


def test_raw_prompts_are_cut_in_fixed_chunks() -> None:
    prompt = "x" * (CHUNK_CHARS * 3 + 10)
    first = text_prefix("m", prompt)
    follow_up = text_prefix("m", prompt + " the answer. Next question?" + "y" * CHUNK_CHARS)
    assert len(hashes(first)) == 4  # three whole chunks and the end
    assert hashes(first)[:3] == hashes(follow_up)[:3]
    assert first is not None and follow_up is not None and first.anchor == follow_up.anchor
    assert hashes(text_prefix("m", "short")) == [text_prefix("m", "short").anchor]  # type: ignore[union-attr]
    assert hashes(text_prefix("m", prompt, "system A")) != hashes(first)


def test_endpoints_and_shapes_without_a_prompt_give_none() -> None:
    assert prompt_prefix("embeddings", "m", {"input": "x"}) is None
    assert prompt_prefix("api.embed", "m", {"input": "x"}) is None
    assert prompt_prefix("api.show", "m", {}) is None
    assert prompt_prefix("chat.completions", "m", {"messages": "nope"}) is None
    assert prompt_prefix("chat.completions", "m", {"messages": []}) is None
    assert prompt_prefix("chat.completions", "m", {"messages": [1, 2]}) is None
    assert prompt_prefix("completions", "m", {"prompt": [1, 2, 3]}) is None  # token ids
    assert prompt_prefix("completions", "m", {"prompt": ["a", "b"]}) is None  # a batch
    assert prompt_prefix("api.generate", "m", {"prompt": ""}) is None  # Ollama's model load
    assert prompt_prefix("completions", "m", {"prompt": ["one"]}) == text_prefix("m", "one")
    assert prompt_prefix("api.chat", "m", {"messages": chat("hi")}) == chat_prefix("m", chat("hi"))
    # A lone surrogate is valid JSON text; it must not break routing.
    assert prompt_prefix("api.generate", "m", {"prompt": "\ud800"}) is not None
    assert prompt_prefix("chat.completions", "m", {"messages": [{"content": "\ud800"}]}) is None
