"""The agent's main loop: watch the runtime, keep every router informed, stop cleanly.

Runs on one asyncio loop (the main thread when headless, a worker thread under the tray); all
blocking work (HTTP, nvidia-smi, downloads) goes to worker threads. Other threads talk to it only
through the thread-safe methods `request_stop`, `set_paused` and `apply_config`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from agent import __version__
from agent.backoff import Backoff
from agent.config import AgentConfig
from agent.download import Downloader, ProxyError, ProxySettings
from agent.install import InstallError, find_runtime, install_runtime
from agent.logtail import LogTail
from agent.metrics import LoadSample, MetricsCollector, system_info, total_memory_bytes
from agent.models import PullError, choose_default_model, has_model, pull_model
from agent.progress import ConsoleProgress, fan_out, percent
from agent.relay import Relay, new_relay_token
from agent.router_client import RouterClient, RouterSession
from agent.runtime import DOWN, OLLAMA, RuntimeProbe, RuntimeStatus
from agent.state import AgentState
from agent.supervisor import RuntimeProcess

log = logging.getLogger(__name__)


@dataclass
class _SampleCache:
    at: float = 0.0
    sample: LoadSample | None = None


class AgentService:
    """Owns the runtime watcher, one RouterClient per router, and the child runtime if any."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        env: Mapping[str, str],
        state: AgentState | None = None,
        collector: MetricsCollector | None = None,
    ) -> None:
        self.config = config
        self.env = dict(env)
        self.state = state or AgentState(config.router_url)
        self.collector = collector or MetricsCollector()
        self.process = RuntimeProcess(config.install_dir / "runtime.log")
        self.runtime: RuntimeStatus = DOWN
        self.clients: list[RouterClient] = []
        self._probe = RuntimeProbe(config.runtime_url, config.runtime_kind, config.request_timeout)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._router_tasks: list[asyncio.Task[None]] = []
        self._restart_backoff = Backoff(1.0, 60.0)
        self._restart_at = 0.0
        self._install_failed = False
        self._pull_task: asyncio.Task[None] | None = None
        self._pull_done = False
        self._samples = _SampleCache()
        self._gpu_devices: list[dict[str, object]] | None = None
        # Tells worker threads (downloads, pulls) to give up when the agent stops.
        self._cancel = threading.Event()
        self._stop_requested = threading.Event()
        # The relay (config.relay): a new secret each start, handed to routers at registration.
        self.relay: Relay | None = None
        self.relay_token = new_relay_token()
        self.failure: str | None = None  # why run() gave up (the exit code says so)
        self.log_tail = LogTail()  # what a router gets when it asks for this agent's log

    # --- thread-safe controls -----------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loop to stop (from a signal handler, the tray, or another thread)."""
        self._stop_requested.set()  # seen by run() if the loop has not started yet
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)

    def set_paused(self, paused: bool) -> None:
        """Pause serving: heartbeats go on but report `runtime_up: false` and `paused: true`."""
        self.state.update(paused=paused)
        log.info("serving_%s", "paused" if paused else "resumed")
        self._call_in_loop(self._poke_routers)

    def apply_config(self, config: AgentConfig) -> None:
        """Switch to new settings (from the settings window): routers re-register at once."""
        self._call_in_loop(lambda: self._reconfigure(config))

    def _call_in_loop(self, fn: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn)

    # --- payloads -----------------------------------------------------------------------------

    async def _sample(self) -> LoadSample:
        # Several routers heartbeat at about the same time: share one sample between them.
        now = time.monotonic()
        if self._samples.sample is None or now - self._samples.at > 1.0:
            self._samples.sample = await asyncio.to_thread(self.collector.sample)
            self._samples.at = now
        return self._samples.sample

    async def registration_payload(self) -> dict[str, Any]:
        if self._gpu_devices is None:
            self._gpu_devices = await asyncio.to_thread(self.collector.gpu_devices)
        payload: dict[str, Any] = {
            "machine_name": self.config.node_name,
            "runtime_port": self.config.runtime_port,
            "agent_version": __version__,
            "gpu_devices": self._gpu_devices,
            "models": list(self.runtime.models),
            "system": await asyncio.to_thread(system_info),
        }
        if self.runtime.version:
            payload["runtime_version"] = self.runtime.version
        if self.runtime.kind:
            payload["runtime_kind"] = self.runtime.kind  # "openai": the router translates /api
        if self.config.ip_address:
            payload["ip_address"] = self.config.ip_address
        if self.config.max_concurrency:
            payload["max_concurrency"] = self.config.max_concurrency
        if self.relay is not None and self.relay.address is not None:
            payload["relay_port"] = self.relay.address[1]
            payload["relay_token"] = self.relay_token
        return payload

    async def heartbeat_payload(self) -> dict[str, Any]:
        sample = await self._sample()
        paused = self.state.snapshot.paused
        payload: dict[str, Any] = {
            "cpu_usage": sample.cpu_usage,
            "memory_usage": sample.memory_usage,
            "gpu_usage": sample.gpu_usage,
            "gpu_memory_usage": sample.gpu_memory_usage,
            "active_requests": 0,
            "models": list(self.runtime.models),
            "running_models": list(self.runtime.running_models),
            **({"runtime_kind": self.runtime.kind} if self.runtime.kind else {}),
            "runtime_up": self.runtime.up and not paused,
            "paused": paused,
        }
        if self.runtime.kind:
            payload["runtime_kind"] = self.runtime.kind
        return payload

    # --- runtime ------------------------------------------------------------------------------

    def _runtime_env(self) -> dict[str, str]:
        env = dict(self.env)
        host = urlsplit(self.config.runtime_url).hostname or "127.0.0.1"
        # Ollama reads its listen address from OLLAMA_HOST (others ignore it). The router
        # connects from another machine, so a loopback runtime_url still means listen on all;
        # with the relay the runtime stays on loopback and the relay is the way in.
        if host in ("127.0.0.1", "localhost", "::1") and not self.config.relay:
            host = "0.0.0.0"
        env.setdefault("OLLAMA_HOST", f"{host}:{self.config.runtime_port}")
        return env

    def _downloader(self) -> Downloader:
        c = self.config
        try:
            proxies = ProxySettings.resolve(c.http_proxy, c.https_proxy, c.no_proxy, self.env)
        except ProxyError as exc:
            raise InstallError(str(exc)) from None
        return Downloader(
            proxies=proxies,
            retries=c.download_retries,
            timeout=c.download_timeout,
            cancel=self._cancel,
            cafile=str(c.ca_file) if c.ca_file else None,
        )

    def _activity_progress(self, label: str) -> Any:
        def report(done: int, total: int | None) -> None:
            pct = percent(done, total)
            text = f"{label} {pct}%" if pct is not None else f"{label} {done // (1024 * 1024)} MiB"
            if self.state.snapshot.activity != text:
                self.state.update(activity=text)

        return report

    def install(self) -> list[str]:
        """Blocking: download and unpack the runtime; returns the command that starts it."""
        c = self.config
        if not c.install_url:
            raise InstallError("no runtime found and no install_url configured")
        console = ConsoleProgress("runtime")
        try:
            exe = install_runtime(
                c.install_url,
                c.install_dir,
                c.runtime_binary,
                self._downloader(),
                sha256=c.install_sha256,
                sha256_url=c.install_sha256_url,
                allow_unverified=c.allow_unverified,
                progress=fan_out(console, self._activity_progress("installing runtime")),
            )
        finally:
            console.finish()
            self.state.update(activity=None)
        return [str(exe), *c.runtime_args]

    async def _runtime_command(self) -> list[str] | None:
        c = self.config
        if c.runtime_command:
            return list(c.runtime_command)
        exe = await asyncio.to_thread(find_runtime, c.install_dir, c.runtime_binary)
        if exe is not None:
            return [str(exe), *c.runtime_args]
        if self._install_failed:
            return None
        try:
            return await asyncio.to_thread(self.install)
        except InstallError as exc:
            # Not retried in a loop: a bad URL or checksum will not fix itself.
            self._install_failed = True
            log.error("runtime_install_failed error=%s", exc)
            self.state.update(activity=f"runtime install failed: {exc}"[:100])
            return None

    async def _ensure_child(self) -> None:
        """Start the runtime, or restart it with backoff after it died."""
        if self.process.running():
            return  # still starting up, or answering on another address: leave it
        code = self.process.forget()
        now = time.monotonic()
        if code is not None:
            delay = self._restart_backoff.next_delay()
            self._restart_at = now + delay
            log.warning("runtime_exited code=%s restart_in=%.1fs", code, delay)
        if now < self._restart_at:
            return
        command = await self._runtime_command()
        if command is None:
            return
        try:
            self.process.start(command, self._runtime_env())
        except OSError as exc:
            log.error("runtime_start_failed command=%s error=%s", command, exc)
            self._restart_at = time.monotonic() + self._restart_backoff.next_delay()
            return
        self.state.update(runtime_started_by_agent=True)

    def _set_runtime(self, status: RuntimeStatus) -> None:
        old, self.runtime = self.runtime, status
        if (old.up, old.models) != (status.up, status.models):
            log.info(
                "runtime_%s kind=%s models=%d",
                "up" if status.up else "down",
                status.kind,
                len(status.models),
            )
            self.state.update(runtime_up=status.up, runtime_kind=status.kind, models=status.models)
            self._poke_routers()

    async def check_runtime(self) -> RuntimeStatus:
        """One probe, plus starting or restarting the child runtime when we manage it."""
        status = await asyncio.to_thread(self._probe.probe)
        if self.config.manage_runtime and not status.up:
            await self._ensure_child()
        elif status.up:
            self._restart_backoff.reset()
        self._set_runtime(status)
        if status.up and status.kind == OLLAMA and self.config.pull_default_model:
            self._maybe_pull_default()
        return status

    def _maybe_pull_default(self) -> None:
        if self._pull_done or self._pull_task is not None:
            return
        self._pull_task = asyncio.get_running_loop().create_task(self._pull_default())

    def model_memory_bytes(self) -> int:
        """Memory a model can use: the GPUs' total when there are GPUs, else system RAM."""
        devices = (
            self._gpu_devices if self._gpu_devices is not None else self.collector.gpu_devices()
        )
        vram = 0
        for d in devices:
            mem, count = d.get("memory_bytes"), d.get("count", 1)
            if isinstance(mem, int) and isinstance(count, int):
                vram += mem * count
        return vram or total_memory_bytes()

    async def _pull_default(self) -> None:
        name = self.config.default_model
        if name is None:
            memory = await asyncio.to_thread(self.model_memory_bytes)
            name = choose_default_model(memory, self.config.model_table)
            log.info("default_model_chosen model=%s memory_gib=%.1f", name, memory / 2**30)
        if has_model(self.runtime.models, name):
            self._pull_done = True
            self._pull_task = None
            return
        await self._pull(name)

    async def _pull(self, name: str) -> None:
        console = ConsoleProgress(f"model {name}")
        progress = fan_out(console, self._activity_progress(f"pulling {name}"))
        try:
            await asyncio.to_thread(
                pull_model,
                self.config.runtime_url,
                name,
                progress=progress,
                timeout=600.0,
                cancel=self._cancel,
            )
            self._pull_done = True
        except PullError as exc:
            # pull_model already retried with backoff; trying again every poll would hammer
            # the runtime, so give up until the next start (or settings change).
            self._pull_done = True
            log.error("model_pull_failed model=%s error=%s", name, exc)
        finally:
            console.finish()
            self.state.update(activity=None)
            self._pull_task = None

    async def _watch_runtime(self, stop: asyncio.Event) -> None:
        first = True
        while not stop.is_set():
            if not first:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.config.runtime_poll_interval)
                if stop.is_set():
                    break
            first = False
            try:
                await self.check_runtime()
            except Exception:  # one bad round must not end the watcher
                log.exception("runtime_check_failed")

    # --- routers ------------------------------------------------------------------------------

    def _poke_routers(self) -> None:
        for client in self.clients:
            client.poke()

    def log_lines(self, lines: int) -> list[str]:
        """The newest log lines, for a router that asked for them."""
        return self.log_tail.tail(lines)

    def on_router_change(self, session: RouterSession) -> None:
        self.state.update_router(
            session.url,
            registered=session.registered,
            agent_id=session.agent_id,
            error=session.last_error,
            last_heartbeat=session.last_heartbeat,
        )

    def _start_routers(self, stop: asyncio.Event) -> None:
        c = self.config
        self.state.set_routers(c.router_url)
        self.clients = [
            RouterClient(
                RouterSession(
                    url,
                    registration_token=c.registration_token,
                    default_interval=c.heartbeat_interval,
                    backoff=Backoff(c.register_backoff_initial, c.register_backoff_max),
                ),
                self,
                timeout=c.request_timeout,
            )
            for url in c.router_url
        ]
        loop = asyncio.get_running_loop()
        self._router_tasks = [loop.create_task(cl.run(stop)) for cl in self.clients]

    async def _stop_routers(self) -> None:
        for task in self._router_tasks:
            task.cancel()
        await asyncio.gather(*self._router_tasks, return_exceptions=True)
        self._router_tasks = []

    def _reconfigure(self, config: AgentConfig) -> None:
        async def switch() -> None:
            await self._stop_routers()
            self.config = config
            if self.relay is not None:
                try:
                    self.relay.set_runtime(config.runtime_url)
                except ValueError as exc:
                    log.error("relay_runtime_unchanged error=%s", exc)
            self._probe = RuntimeProbe(
                config.runtime_url, config.runtime_kind, config.request_timeout
            )
            self._install_failed = False
            self._pull_done = False
            self._gpu_devices = None
            await self.check_runtime()
            if self._stop is not None and not self._stop.is_set():
                self._start_routers(self._stop)
            log.info(
                "settings_applied routers=%s runtime=%s",
                ",".join(config.router_url),
                config.runtime_url,
            )

        asyncio.get_running_loop().create_task(switch())

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until `request_stop()`; then stop the loops and a runtime the agent started."""
        self._loop = asyncio.get_running_loop()
        logging.getLogger().addHandler(self.log_tail)
        stop = self._stop = asyncio.Event()
        if self._stop_requested.is_set():
            stop.set()
        log.info(
            "agent_start version=%s name=%s routers=%s runtime=%s",
            __version__,
            self.config.node_name,
            ",".join(self.config.router_url),
            self.config.runtime_url,
        )
        watcher: asyncio.Task[None] | None = None
        try:
            if self.config.relay and not await self._start_relay():
                stop.set()
            # Probe first, so the registration already lists the runtime's models. Starting
            # or installing the runtime is left to the watcher: a long download must not keep
            # the node from registering (it shows up with runtime_up false meanwhile).
            self._set_runtime(await asyncio.to_thread(self._probe.probe))
            if not stop.is_set():
                self._start_routers(stop)
                watcher = self._loop.create_task(self._watch_runtime(stop))
            await stop.wait()
        finally:
            stop.set()
            self._cancel.set()
            await self._stop_routers()
            tasks = [t for t in (watcher, self._pull_task) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.process.started:
                await asyncio.to_thread(self.process.stop)
            if self.relay is not None:
                await self.relay.stop()
            log.info("agent_stopped")
            logging.getLogger().removeHandler(self.log_tail)

    async def _start_relay(self) -> bool:
        """Listen on relay_host:relay_port; False (logged, `failure` set) when that fails.

        Without its relay a relay-mode node is unreachable (its runtime is on loopback), so the
        agent stops instead of registering a node nobody can use.
        """
        c = self.config
        try:
            self.relay = Relay(
                c.runtime_url, self.relay_token, read_timeout=max(300.0, c.request_timeout)
            )
            await self.relay.start(c.relay_host, c.relay_port)
        except (OSError, ValueError) as exc:
            self.failure = f"relay cannot listen on {c.relay_host}:{c.relay_port}: {exc}"
            log.error("relay_start_failed error=%s", self.failure)
            self.relay = None
            return False
        return True
