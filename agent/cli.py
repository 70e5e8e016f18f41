"""`llm-router-agent`: parse flags, build the config, run with a tray or headless.

SIGINT/SIGTERM (or Quit in the tray) stop the loops, stop a runtime the agent started, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent.autostart import for_platform, launch_command
from agent.config import EDITABLE, AgentConfig, load_config
from agent.install import InstallError
from agent.service import AgentService
from routercore.errors import ConfigError

log = logging.getLogger("agent")


def _switch(p: argparse.ArgumentParser, flag: str, text: str) -> None:
    """An on-switch that is None when not given, so the config file's value stands."""
    p.add_argument(flag, action="store_true", default=None, help=text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llm-router-agent",
        description="Register this machine's LLM runtime with an LLM Router and keep it informed.",
    )
    p.add_argument(
        "--router",
        metavar="URL",
        action="append",
        help="router URL; repeat or comma-separate for several",
    )
    p.add_argument(
        "--runtime-url", metavar="URL", help="the local runtime (default http://127.0.0.1:11434)"
    )
    p.add_argument(
        "--name", metavar="NAME", help="node name shown by the router (default: host name)"
    )
    p.add_argument("--no-tray", action="store_true", help="run headless, without a tray icon")
    p.add_argument(
        "--config", metavar="FILE", help="TOML config file (default: per-user agent.toml)"
    )
    p.add_argument("--registration-token", metavar="TOKEN", help="sent as bearer token on register")
    p.add_argument("--runtime-kind", choices=("auto", "ollama", "openai"))
    _switch(p, "--manage-runtime", "start/restart the runtime as a child process")
    p.add_argument("--runtime-command", metavar="CMD", help="command line that starts the runtime")
    p.add_argument(
        "--install-url", metavar="URL", help="where to download the runtime when missing"
    )
    p.add_argument("--install-sha256", metavar="HEX", help="expected SHA-256 of that download")
    _switch(
        p,
        "--allow-unverified",
        "install the runtime even without a checksum (a warning names the risk)",
    )
    _switch(
        p,
        "--relay",
        "keep the runtime on loopback; the router reaches it through the agent's relay",
    )
    p.add_argument("--relay-port", metavar="PORT", help="the relay's port (default 11435)")
    p.add_argument(
        "--relay-host", metavar="IP", help="the relay's listen address (default 0.0.0.0)"
    )
    p.add_argument(
        "--ip-address", metavar="IP", help="address to register (default: as the router sees us)"
    )
    p.add_argument(
        "--pull-model", metavar="MODEL", help="pull this model through the runtime at start"
    )
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), type=str.upper)
    p.add_argument(
        "--install-runtime",
        action="store_true",
        help="download and install the runtime into the per-user directory, then exit",
    )
    p.add_argument(
        "--autostart",
        choices=("enable", "disable", "status"),
        help="start the agent at login (or stop doing so, or show whether it does), then exit",
    )
    p.add_argument("--version", action="version", version=f"llm-router-agent {__version__}")
    return p


def flags_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Only what was given on the command line: None leaves lower layers in charge."""
    flags: dict[str, Any] = {
        "router_url": ",".join(args.router) if args.router else None,
        "runtime_url": args.runtime_url,
        "node_name": args.name,
        "registration_token": args.registration_token,
        "runtime_kind": args.runtime_kind,
        "manage_runtime": args.manage_runtime,
        "runtime_command": args.runtime_command,
        "install_url": args.install_url,
        "install_sha256": args.install_sha256,
        "allow_unverified": args.allow_unverified,
        "relay": args.relay,
        "relay_port": args.relay_port,
        "relay_host": args.relay_host,
        "ip_address": args.ip_address,
        "default_model": args.pull_model,
        "pull_default_model": True if args.pull_model else None,
        "log_level": args.log_level,
    }
    if args.no_tray:
        flags["tray"] = False
    return flags


def has_display(env: Mapping[str, str], platform: str = sys.platform) -> bool:
    """Windows and macOS give a logged-in user a desktop; on X11/Wayland check for one."""
    if platform in ("win32", "darwin"):
        return True
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def autostart_command(config: AgentConfig) -> list[str]:
    command = launch_command()
    if config.config_path.is_file():
        command += ["--config", str(config.config_path)]
    return command


def _install_signal_handlers(service: AgentService, extra: Any = None) -> None:
    def handler(signum: int, _frame: object) -> None:
        log.info("signal_received signal=%s", signal.Signals(signum).name)
        service.request_stop()
        if extra is not None:
            extra()

    signal.signal(signal.SIGINT, handler)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, handler)
    if hasattr(signal, "SIGBREAK"):  # Ctrl+Break in a Windows console
        signal.signal(signal.SIGBREAK, handler)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    if sys.platform != "win32":
        try:
            import uvloop  # type: ignore[import-not-found,unused-ignore]

            return uvloop.new_event_loop()  # type: ignore[no-any-return,unused-ignore]
        except ImportError:
            pass
    return asyncio.new_event_loop()


def run_service(service: AgentService, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Run the service to the end on `loop` (a new one by default) in the calling thread."""
    loop = loop or _new_event_loop()
    try:
        loop.run_until_complete(service.run())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


def run_headless(service: AgentService) -> int:
    _install_signal_handlers(service)
    run_service(service)
    return 1 if service.failure else 0


def settings_reloader(
    flags: Mapping[str, Any], env: Mapping[str, str]
) -> Callable[[Path], AgentConfig]:
    """Re-read the config after the settings window saved.

    The start-up flags still apply, except for the settings the window edits: what the user just
    saved must win over a `--router` given when the agent was started.
    """
    kept = {k: v for k, v in flags.items() if k not in EDITABLE}
    return lambda path: load_config(kept, env, path)


def run_with_tray(
    service: AgentService,
    config: AgentConfig,
    env: Mapping[str, str],
    flags: Mapping[str, Any] | None = None,
) -> int:
    """The tray's loop on the main thread (macOS requires it), the service on a worker thread.

    If the tray fails after all (no system tray on this desktop, a broken backend), the agent
    carries on headless instead of dying: serving matters more than the icon.
    """
    from agent.tray import TrayApp

    tray = TrayApp(
        service,
        for_platform(env=env, command=autostart_command(config)),
        reload_config=settings_reloader(flags or {}, env),
    )
    try:
        tray.build()
    except Exception:  # e.g. the X server refused the connection
        log.exception("tray_failed; running headless")
        return run_headless(service)
    failure: list[BaseException] = []
    loop = _new_event_loop()  # made here: importing uvloop late in a thread can race exit

    def loop_thread() -> None:
        try:
            run_service(service, loop)
        except BaseException as exc:
            log.exception("agent_loop_crashed")
            failure.append(exc)

    worker = threading.Thread(target=loop_thread, name="agent-loop", daemon=True)

    def loop_ended() -> None:
        worker.join()
        tray.stop()  # the service stopped on a signal: take the icon down too

    _install_signal_handlers(service, tray.stop)
    worker.start()
    threading.Thread(target=loop_ended, daemon=True).start()

    def setup(icon: Any) -> None:
        icon.visible = True

    try:
        tray.run(setup=setup)
    except Exception:
        log.exception("tray_failed; running headless")
        while worker.is_alive():  # join in slices so signal handlers still run
            worker.join(0.5)
    service.request_stop()
    worker.join(timeout=30)
    return 1 if failure or service.failure else 0


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = flags_from_args(args)
    try:
        config = load_config(flags, env, args.config)
    except ConfigError as exc:
        print(f"llm-router-agent: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )

    if args.autostart:
        backend = for_platform(env=env, command=autostart_command(config))
        if args.autostart == "enable":
            backend.enable()
        elif args.autostart == "disable":
            backend.disable()
        print("enabled" if backend.is_enabled() else "disabled")
        return 0

    service = AgentService(config, env=env)
    if args.install_runtime:
        try:
            command = service.install()
        except InstallError as exc:
            print(f"llm-router-agent: error: {exc}", file=sys.stderr)
            return 1
        print(f"runtime installed: {command[0]}")
        return 0

    if config.tray and has_display(env):
        from agent.tray import pystray_available

        if pystray_available():
            return run_with_tray(service, config, env, flags)
    log.info("running_headless")
    return run_headless(service)


if __name__ == "__main__":
    sys.exit(main())
