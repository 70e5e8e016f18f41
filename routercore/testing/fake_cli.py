"""The `llm-router-fakenode` command line: flags -> FakeNode, a ready line, clean signals."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from routercore.errors import ConfigError
from routercore.testing.fake_runtime import FakeNode, new_event_loop
from routercore.testing.fake_state import FAULTS


def parse_fault(text: str) -> tuple[str, Any]:
    """`status500`, `hang`, `drop_after=3`, `refuse` -> (name, value)."""
    name, sep, raw = text.partition("=")
    name = name.strip().replace("-", "_")
    if name not in FAULTS:
        raise argparse.ArgumentTypeError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
    if name == "drop_after":
        if not sep or not raw.strip().isdigit():
            raise argparse.ArgumentTypeError("drop_after needs a count: drop_after=N")
        return name, int(raw)
    if sep and raw.strip().lower() not in ("1", "true", "yes", "on"):
        return name, False
    return name, True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llm-router-fakenode",
        description="A fake LLM runtime speaking the Ollama and OpenAI protocols.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=11434, help="0 picks a free port")
    p.add_argument("--models", default=None, help="comma-separated model names")
    p.add_argument("--api", choices=("both", "ollama", "openai"), default="both")
    p.add_argument("--tokens", type=int, default=8, help="tokens per reply")
    p.add_argument("--token-delay", type=float, default=0.0, help="seconds between chunks")
    p.add_argument("--first-token-delay", type=float, default=0.0)
    p.add_argument("--embedding-dim", type=int, default=8)
    p.add_argument("--register", metavar="ROUTER_URL", default=None)
    p.add_argument("--name", default=None, help="machine_name when registering")
    p.add_argument("--registration-token", default=None)
    p.add_argument("--max-concurrency", type=int, default=None)
    p.add_argument(
        "--fault",
        action="append",
        type=parse_fault,
        default=[],
        help="refuse | status500 | drop_after=N | hang | garbage (repeatable)",
    )
    p.add_argument("--log-level", default="INFO")
    return p


async def _serve(args: argparse.Namespace) -> None:
    node = FakeNode(
        host=args.host,
        port=args.port,
        models=args.models,
        api=args.api,
        tokens=args.tokens,
        token_delay=args.token_delay,
        first_token_delay=args.first_token_delay,
        embedding_dim=args.embedding_dim,
        faults=dict(args.fault),
        register=args.register,
        name=args.name,
        registration_token=args.registration_token,
        max_concurrency=args.max_concurrency,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await node.start()
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"fakenode listening on http://{host}:{node.port}", flush=True)
    try:
        await stop.wait()
    finally:
        await node.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Console script entry point; SIGINT/SIGTERM exit 0."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(_serve(args))
    except KeyboardInterrupt:
        pass
    except ConfigError as exc:
        print(f"llm-router-fakenode: {exc}", file=sys.stderr)
        return 2
    return 0
