"""What each API handler group uses of the router that hosts it, as one narrow Protocol each.

The handlers used to take the whole `RouterService`, so `routercore.service` and every
`routercore.api` module imported each other (type-only, but a cycle all the same: a reader or a
tool could not tell what a handler touches without reading all of it). Now a handler names the
parts it reads here; `RouterService` satisfies every Protocol structurally and imports the API
modules with plain imports. This module imports the router's parts, never `routercore.service`
or another `routercore.api` module, so the edges only point downwards.

A test can hand a handler any object with these attributes instead of a whole router.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from routercore.agent_logs import AgentLogRequests
from routercore.app import AuthPolicy
from routercore.balancer import Balancer
from routercore.config import RouterConfig
from routercore.deployments import DeploymentManager
from routercore.health import HealthMonitor
from routercore.http.upstream import UpstreamPool
from routercore.logring import LogRing
from routercore.model_overrides import ModelOverrides
from routercore.providers import Providers
from routercore.proxy import Proxy
from routercore.pulls import PullManager
from routercore.registry import NodeRegistry
from routercore.stats import LiveStats
from routercore.store import Store


class Persists(Protocol):
    """Management answers wait until their change is committed (`RouterService.persisted`)."""

    async def persisted(self, what: str) -> None: ...


class ForwardHost(Protocol):
    """`api.inference.forward_inference`: the prefix-affinity setting and the proxy."""

    config: RouterConfig
    proxy: Proxy


class OpenAIHost(ForwardHost, Protocol):
    """`routercore.api.openai`: forward inference, list the online nodes' and providers' models."""

    registry: NodeRegistry
    providers: Providers


class OllamaHost(OpenAIHost, Protocol):
    """`routercore.api.ollama`: as OpenAI, plus the pool for the `/api/tags` and `/api/ps`
    fan-out."""

    pool: UpstreamPool


class NodesHost(Persists, Protocol):
    """`routercore.api.nodes`: registration, heartbeats and node management."""

    config: RouterConfig
    registry: NodeRegistry
    pool: UpstreamPool
    health: HealthMonitor
    model_overrides: ModelOverrides
    agent_logs: AgentLogRequests


class ModelsHost(Persists, Protocol):
    """`routercore.api.models`: pulls, deletes and deployments across nodes."""

    config: RouterConfig
    registry: NodeRegistry
    pool: UpstreamPool
    pulls: PullManager
    deployments: DeploymentManager
    model_overrides: ModelOverrides


class LogsHost(Protocol):
    """`routercore.api.logs`: the router's log ring and agents' logs via heartbeats."""

    config: RouterConfig
    registry: NodeRegistry
    log_ring: LogRing
    agent_logs: AgentLogRequests


class MetricsHost(Protocol):
    """`routercore.api.metrics`: counters and gauges read for one scrape."""

    registry: NodeRegistry
    balancer: Balancer
    stats: LiveStats
    store: Store
    proxy: Proxy


class DashboardHost(Protocol):
    """`routercore.api.dashboard`: snapshots, request history and the live socket's auth."""

    config: RouterConfig
    registry: NodeRegistry
    balancer: Balancer
    stats: LiveStats
    store: Store
    health: HealthMonitor
    auth: AuthPolicy


class KeysHost(Persists, Protocol):
    """`routercore.api.keys`: the key ring hooks into the store's open and close, and into auth."""

    store: Store
    auth: AuthPolicy
    start_hooks: list[Callable[[], None]]
    stop_hooks: list[Callable[[], None]]
