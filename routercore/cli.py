"""`llm-router serve ...`: parse flags, build the config, run the service on uvloop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from routercore import __version__, logsafe
from routercore.config import ENV_PREFIX, load_config, settings
from routercore.errors import ConfigError
from routercore.logring import FORMAT

# Settings that get their own short, conventional flags (the rest: --setting-name).
_CONTRACT_FLAGS = {"host", "port", "db", "log_level"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-router", description="LLM Router")
    parser.add_argument("--version", action="version", version=f"llm-router {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the router",
        description="Run the router. Every setting can also come from a TOML file (--config, "
        f"or {ENV_PREFIX}CONFIG) or the environment ({ENV_PREFIX}<NAME>); flags win.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument("--config", help="TOML config file", default=None)
    for f in settings():
        flag = "--" + f.name.replace("_", "-")
        env = ENV_PREFIX + f.name.upper()
        default = f.default if not isinstance(f.default, tuple) else ",".join(f.default)
        help_text = f"{f.metadata['help']} [env {env}; default {default!r}]"
        if f.type == "bool":
            serve.add_argument(
                flag,
                dest=f.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=help_text,
            )
        else:
            serve.add_argument(
                flag, dest=f.name, default=None, help=help_text, metavar=f.name.upper()
            )
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=FORMAT,
        stream=sys.stderr,
    )
    logsafe.install()


def install_loop() -> None:
    try:
        import uvloop
    except ImportError:  # Windows, or a platform uvloop does not support
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {f.name: getattr(args, f.name) for f in settings()}
    try:
        config = load_config(config_file=args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"llm-router: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    if not config.access_log:
        logging.getLogger("routercore.access").setLevel(logging.WARNING)
    install_loop()
    from routercore.service import serve

    try:
        asyncio.run(serve(config))
    except OSError as exc:
        logging.getLogger("routercore").error("event=start_failed reason=%r", str(exc))
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
