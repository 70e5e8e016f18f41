"""CPU per translated chunk on the Ollama-over-OpenAI path (no sockets): one SSE chunk of
llama.cpp's server in, one NDJSON line out. Run: python scripts/bench_translate.py"""

from __future__ import annotations

import time
import timeit
from pathlib import Path

from routercore.translate import ollama_response_translator

FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/translate/llama_chat_stream.sse"


def main() -> None:
    events = FIXTURE.read_bytes().split(b"\n\n")
    chunk = events[2] + b"\n\n"  # one content delta, as the node sends it
    start = time.perf_counter_ns()
    for endpoint in ("api.chat", "api.generate"):
        translator = ollama_response_translator(
            endpoint, model="smollm2", streaming=True, started_ns=start
        )
        assert translator.feed(chunk).endswith(b"\n")
        runs = 200_000
        best = min(timeit.repeat(lambda t=translator: t.feed(chunk), number=runs, repeat=5))
        print(f"{endpoint}: {best / runs * 1e6:.2f} µs per chunk ({len(chunk)} bytes in)")
        split = (chunk[:100], chunk[100:])
        best = min(
            timeit.repeat(
                lambda t=translator, s=split: (t.feed(s[0]), t.feed(s[1])), number=runs, repeat=5
            )
        )
        print(f"{endpoint}: {best / runs * 1e6:.2f} µs per chunk cut in two")


if __name__ == "__main__":
    main()
