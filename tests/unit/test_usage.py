"""Token counts from the tail of an answer: the last count the node wrote, found from the end,
is what a regex scan of the whole tail finds."""

from __future__ import annotations

import re

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from routercore.usage import TailScanner

_TAIL_BYTES = 16 * 1024
_KEYS = {
    "openai": (rb'"prompt_tokens"\s*:\s*(\d+)', rb'"completion_tokens"\s*:\s*(\d+)'),
    "ollama": (rb'"prompt_eval_count"\s*:\s*(\d+)', rb'"eval_count"\s*:\s*(\d+)'),
}


def scanned(api: str, pieces: list[bytes]) -> tuple[int | None, int | None]:
    """The plain way: findall over the joined last four pieces, the last match wins."""
    if not pieces:
        return None, None
    tail = b"".join(pieces[-4:])[-_TAIL_BYTES:]
    found = [re.findall(pattern, tail) for pattern in _KEYS[api]]
    return tuple(int(f[-1]) if f else None for f in found)  # type: ignore[return-value]


# Pieces made of the keys' fragments, so keys with and without numbers, split keys, quotes
# and whitespace meet often.
fragments = st.sampled_from(
    [
        b'"prompt_tokens"', b'"completion_tokens"', b'"prompt_eval_count"', b'"eval_count"',
        b'"', b":", b" ", b"\n", b"\t", b"0", b"7", b"42", b"null", b"prompt", b"_tokens",
        b"eval_count", b'"prompt_', b',', b"{", b"}", b"x" * 5000,
    ]
)  # fmt: skip
pieces = st.lists(st.lists(fragments, max_size=12).map(b"".join), max_size=7)


@settings(max_examples=500, deadline=None)
@given(api=st.sampled_from(["openai", "ollama"]), body=pieces)
def test_counts_match_a_scan_of_the_whole_tail(api: str, body: list[bytes]) -> None:
    scanner = TailScanner(api)
    for piece in body:
        scanner.feed(piece)
    assert scanner.usage() == scanned(api, body)


def test_an_openai_answer_and_an_ollama_stream() -> None:
    answer = orjson.dumps(
        {
            "choices": [{"message": {"content": '"prompt_tokens": 999'}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28},
        }
    )
    scanner = TailScanner("openai")
    scanner.feed(answer[:50])
    scanner.feed(answer[50:])
    assert scanner.usage() == (12, 16)
    ollama = TailScanner("ollama")
    for line in (b'{"done":false}\n', b'{"done":true,"prompt_eval_count":3,"eval_count":9}\n'):
        ollama.feed(line)
    assert ollama.usage() == (3, 9)
    assert TailScanner("openai").usage() == (None, None)
    null = TailScanner("openai")
    null.feed(b'{"usage":{"prompt_tokens":5}} {"usage":{"prompt_tokens":null}}')
    assert null.usage() == (5, None)
