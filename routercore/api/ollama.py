"""Ollama surface: /api/chat, /api/generate, /api/embed(dings), /api/show, /api/tags, /api/ps,
/api/version."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson

from routercore import __version__
from routercore.api.host import OllamaHost
from routercore.api.inference import fan_out, inference_handler
from routercore.http.messages import Request, Response

if TYPE_CHECKING:
    from routercore.app import App


# One model entry a node returned is kept when its JSON is at most this long (else its name).
LISTING_ITEM_MAX = 4096


class NodeListing:
    """The merged `/api/tags` or `/api/ps` of the online nodes. Names come from the registry
    (what heartbeats reported, already bounded at registration); details from one fan-out of
    bounded concurrency, reused for `fanout_cache_seconds`. Callers arriving during a refresh
    share it, so a burst of calls contacts each node once."""

    def __init__(self, svc: OllamaHost, path: str, *, all_listed: bool) -> None:
        self.svc = svc
        self.path = path
        self.all_listed = all_listed  # tags: every listed model, answered for or not
        self._value: list[dict[str, Any]] | None = None
        self._expires = 0.0
        self._refresh: asyncio.Task[list[dict[str, Any]]] | None = None

    async def get(self) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        if self._value is not None and loop.time() < self._expires:
            return self._value
        if self._refresh is None:
            self._refresh = loop.create_task(self._build())
            self._refresh.add_done_callback(self._built)
        return await asyncio.shield(self._refresh)

    def _built(self, task: asyncio.Task[list[dict[str, Any]]]) -> None:
        self._refresh = None
        if not task.cancelled() and task.exception() is None:
            self._value = task.result()
            self._expires = task.get_loop().time() + self.svc.config.fanout_cache_seconds

    async def _build(self) -> list[dict[str, Any]]:
        svc, cfg = self.svc, self.svc.config
        nodes = svc.registry.online()
        answers = await fan_out(
            svc.pool,
            nodes,
            self.path,
            cfg.connect_timeout,
            via=svc.proxy.via_header,
            concurrency=cfg.fanout_concurrency,
            deadline=cfg.connect_timeout,  # nodes not reached by then: their heartbeat names
        )
        merged: dict[str, dict[str, Any]] = {}
        for node, answer in zip(nodes, answers, strict=True):
            listed = set(node.models)
            items = answer.get("models") if isinstance(answer, dict) else None
            for item in items if isinstance(items, list) else ():
                name = item.get("name") if isinstance(item, dict) else None
                if isinstance(name, str) and name in listed and name not in merged:
                    small = len(orjson.dumps(item)) <= LISTING_ITEM_MAX
                    merged[name] = item if small else {"name": name, "model": name}
            if self.all_listed:
                for name in node.models:
                    merged.setdefault(name, {"name": name, "model": name})
        return [merged[name] for name in sorted(merged)]


class OllamaAPI:
    def __init__(self, svc: OllamaHost) -> None:
        self.svc = svc
        self.tag_listing = NodeListing(svc, "/api/tags", all_listed=True)
        self.ps_listing = NodeListing(svc, "/api/ps", all_listed=False)

    def install(self, app: App) -> None:
        svc = self.svc
        for path, endpoint, stream_default in (
            ("/api/chat", "api.chat", True),
            ("/api/generate", "api.generate", True),
            ("/api/embed", "api.embed", False),
            ("/api/embeddings", "api.embeddings", False),
            ("/api/show", "api.show", False),
        ):
            handler = inference_handler(svc, "ollama", endpoint, stream_default=stream_default)
            app.add("POST", path, handler, auth="api")
        app.add("GET", "/api/tags", self.tags, auth="api")
        app.add("GET", "/api/ps", self.ps, auth="api")
        app.add("GET", "/api/version", self.version, auth="api")

    async def tags(self, request: Request) -> Response:
        self.svc.proxy.check_loop(request)
        models = list(await self.tag_listing.get())
        for name, provider in self.svc.providers.model_names():
            models.append(
                {
                    "name": name,
                    "model": name,
                    "size": 0,
                    "digest": "",
                    "details": {"family": provider.name},
                }
            )
        return Response.json({"models": models})

    async def ps(self, request: Request) -> Response:
        self.svc.proxy.check_loop(request)
        return Response.json({"models": await self.ps_listing.get()})

    async def version(self, request: Request) -> Response:
        nodes = self.svc.registry.online()
        versions = [n.runtime_version for n in nodes if n.runtime_version]
        return Response.json(
            {"version": versions[0] if versions else __version__, "router_version": __version__}
        )
