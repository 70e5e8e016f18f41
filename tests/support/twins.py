"""Helpers for the tests that hold a compiled module (ext/*.pyx) against its pure-Python twin:
a fresh interpreter with the extension switches set, and byte mutations for generated input."""

from __future__ import annotations

import os

from hypothesis import strategies as st

from tests.support import commands


def run_python(code: str, env_overrides: dict[str, str]) -> str:
    """Run `code` in a new interpreter with only the given extension switches; its output."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LLM_ROUTER_NO_EXTENSIONS", "LLM_ROUTER_REQUIRE_EXTENSIONS")
    }
    env.update(env_overrides)
    proc = commands.run_python("-c", code, env=env)
    return proc.stdout + proc.stderr


def mutate(draw: st.DrawFn, data: bytes, edge_bytes: bytes) -> bytes:
    """`data` with up to three bytes replaced by, or preceded by, one of `edge_bytes`, or cut."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        if not out:
            break
        at = draw(st.integers(0, len(out) - 1))
        byte = draw(st.sampled_from(edge_bytes))
        kind = draw(st.sampled_from(["replace", "insert", "cut"]))
        if kind == "replace":
            out[at] = byte
        elif kind == "insert":
            out.insert(at, byte)
        else:
            del out[at:]
    return bytes(out)
