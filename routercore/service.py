"""Assembles the router (store, registry, balancer, health, proxy, HTTP server) and runs it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Callable
from typing import Any

from routercore import __version__, logsafe
from routercore.agent_logs import AgentLogRequests
from routercore.api.dashboard import DashboardAPI
from routercore.api.keys import KeysAPI
from routercore.api.logs import LogsAPI
from routercore.api.metrics import MetricsAPI
from routercore.api.models import ModelsAPI
from routercore.api.nodes import NodesAPI
from routercore.api.ollama import OllamaAPI
from routercore.api.openai import OpenAIAPI
from routercore.app import App, AuthPolicy, error_response
from routercore.auth import hash_token, new_token
from routercore.balancer import IMPLEMENTATION, Balancer
from routercore.config import RouterConfig
from routercore.deployment_store import DeploymentStore
from routercore.deployments import DeploymentManager, show_on_node
from routercore.health import HealthMonitor
from routercore.http.server import HTTPServer, ServerLimits
from routercore.http.upstream import UpstreamPool
from routercore.logring import LogRing
from routercore.logsafe import SHOW_SECRET
from routercore.model_overrides import ModelOverrides
from routercore.origins import OriginPolicy
from routercore.provider_proxy import forward_to_provider
from routercore.providers import Providers
from routercore.proxy import Proxy
from routercore.pulls import PullManager
from routercore.registry import NodeRegistry
from routercore.stats import LiveStats
from routercore.store import Store

log = logging.getLogger("routercore.service")

ADMIN_TOKEN_KEY = "admin_token_hash"


class RouterService:
    """One router: built from a RouterConfig, started and stopped as a unit."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.store = Store(
            config.db_path(),
            history_max_rows=config.history_max_rows,
            samples_max_rows=config.samples_max_rows,
        )
        self.balancer = Balancer(
            config.balancer,
            prefix_entries=config.prefix_index_entries,
            affinity_epsilon=config.prefix_affinity_epsilon,
        )
        self.registry = NodeRegistry(
            self.store,
            self.balancer,
            breaker_failures=config.breaker_failures,
            breaker_backoff=config.probe_interval,
            breaker_max_backoff=config.probe_max_interval,
        )
        self.stats = LiveStats()
        self.pool = UpstreamPool(
            connect_timeout=config.connect_timeout, max_idle=config.pool_max_idle
        )
        self.health = HealthMonitor(self.registry, config, pool=self.pool)
        self.providers = Providers(
            config.providers, self.pool, refresh=config.provider_refresh, timeout=10.0
        )
        self.proxy = Proxy(
            config,
            self.registry,
            self.balancer,
            self.pool,
            self.store,
            self.stats,
            retry_after=self.health.retry_after,
            providers=self.providers,
        )
        self.proxy.provider_route = forward_to_provider
        self.health.via = self.proxy.via_token  # probes carry the router's Via, as fan-out does
        self.pulls = PullManager(
            self.pool, connect_timeout=config.connect_timeout, read_timeout=config.read_timeout
        )
        # A pull or delete changes routing at once; heartbeats sent before the node's agent
        # saw the change must not undo it (for a bounded time).
        self.model_overrides = ModelOverrides(ttl=max(30.0, 2 * config.heartbeat_timeout))
        self.deployments = DeploymentManager(
            self.registry,
            self.pulls,
            DeploymentStore(self.store),
            heartbeat_timeout=config.heartbeat_timeout,
            show=lambda node, model: show_on_node(
                self.pool, node, model, config.connect_timeout + 25.0
            ),
        )
        self.log_ring = LogRing(config.log_ring_lines)
        self.agent_logs = AgentLogRequests()
        self.auth = AuthPolicy(
            admin_token_hash="",
            registration_token=config.registration_token,
            api_keys=config.api_keys,
            open_reads=config.open_reads,
        )
        self.app = App(self.auth, OriginPolicy(config.cors_origins))
        # APIs hook in here: start hooks run once the store is open, stop hooks
        # before it closes (e.g. the API key ring loads and flushes its keys).
        self.start_hooks: list[Callable[[], None]] = []
        self.stop_hooks: list[Callable[[], None]] = []
        self.nodes_api = NodesAPI(self)
        for api in (
            self.nodes_api,
            OpenAIAPI(self),
            OllamaAPI(self),
            ModelsAPI(self),
            LogsAPI(self),
            DashboardAPI(self),
            MetricsAPI(self),
            KeysAPI(self),
        ):
            api.install(self.app)
        limits = server_limits(config)
        self.server = HTTPServer(
            self.app.dispatch, limits, error_response, head_check=self.app.head_check
        )
        self.tasks: list[asyncio.Task[Any]] = []
        self.address: tuple[str, int] | None = None
        self.admin_token_generated: str | None = None

    def _admin_token(self) -> None:
        """Configured token, else the stored hash, else a new token printed once."""
        if self.config.admin_token:
            self.auth.admin_token_hash = hash_token(self.config.admin_token)
            return
        stored = self.store.get_meta(ADMIN_TOKEN_KEY)
        if stored:
            self.auth.admin_token_hash = stored
            return
        token = new_token("adm_")
        self.admin_token_generated = token
        self.auth.admin_token_hash = hash_token(token)
        self.store.set_meta(ADMIN_TOKEN_KEY, self.auth.admin_token_hash)
        log.warning(
            "event=admin_token_generated token=%s (shown once; set "
            "LLM_ROUTER_ADMIN_TOKEN to choose your own)",
            token,
            extra=SHOW_SECRET,
        )

    async def start(self) -> tuple[str, int]:
        logsafe.install([self.log_ring])
        logging.getLogger().addHandler(self.log_ring)
        self.store.open()
        self._admin_token()
        for hook in self.start_hooks:
            hook()
        count = self.registry.load()
        self.deployments.load()
        self.address = await self.server.start(self.config.host, self.config.port)
        self.tasks.append(asyncio.get_running_loop().create_task(self.health.run()))
        if self.providers:
            self.tasks.append(asyncio.get_running_loop().create_task(self.providers.run()))
            log.info("event=providers names=%s", ",".join(self.providers.by_name))
        self.tasks.append(asyncio.get_running_loop().create_task(self.deployments.run()))
        host, port = self.address
        log.info(
            "event=ready version=%s nodes_loaded=%d balancer=%s/%s db=%s",
            __version__,
            count,
            self.config.balancer,
            IMPLEMENTATION,
            self.config.db_path(),
        )
        log.info("listening on http://%s:%d", host, port)
        return self.address

    async def persisted(self, what: str) -> None:
        """Hold a management answer until its change is committed, so that a crash right
        after the answer cannot undo it. Past `store_commit_timeout` (a stuck database) the
        change stays in effect in memory, is answered, and is written once the store recovers.
        A timeout of 0 answers at once, as before this wait existed.
        """
        timeout = self.config.store_commit_timeout
        if timeout > 0 and not await self.store.committed(timeout):
            log.warning(
                "event=answered_before_commit change=%s backlog=%d timeout=%.1fs",
                what,
                self.store.backlog,
                timeout,
            )

    async def stop(self) -> None:
        log.info("event=shutdown_started grace=%ss", self.config.shutdown_grace)
        await self.server.shutdown(self.config.shutdown_grace)
        self.proxy.flush_rows()  # the last requests' history rows, before the store closes
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.pulls.stop()
        self.pool.close()
        for hook in self.stop_hooks:
            hook()
        await asyncio.to_thread(self.store.close)
        log.info("event=shutdown_done")
        logging.getLogger().removeHandler(self.log_ring)


async def serve(config: RouterConfig) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully."""
    service = RouterService(config)
    await service.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await service.stop()


def server_limits(config: RouterConfig) -> ServerLimits:
    """The HTTP server's limits are the settings of the same names (`fast_path`: the
    `http_fast_path` setting), so a new limit needs no wiring here."""
    names = {f.name for f in dataclasses.fields(ServerLimits)} - {"fast_path"}
    values = {name: getattr(config, name) for name in names}
    return ServerLimits(fast_path=config.http_fast_path, **values)
