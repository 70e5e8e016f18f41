"""Ollama surface: /api/chat, /api/generate, /api/embed(dings), /api/show, /api/tags, /api/ps,
/api/version."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from routercore import __version__
from routercore.api.inference import fan_out, routing_fields
from routercore.http.messages import Request, Response

if TYPE_CHECKING:
    from routercore.app import App
    from routercore.service import RouterService


class OllamaAPI:
    def __init__(self, svc: RouterService) -> None:
        self.svc = svc

    def install(self, app: App) -> None:
        app.add("POST", "/api/chat", self.chat, auth="api")
        app.add("POST", "/api/generate", self.generate, auth="api")
        app.add("POST", "/api/embed", self.embed, auth="api")
        app.add("POST", "/api/embeddings", self.embeddings, auth="api")
        app.add("POST", "/api/show", self.show, auth="api")
        app.add("GET", "/api/tags", self.tags, auth="api")
        app.add("GET", "/api/ps", self.ps, auth="api")
        app.add("GET", "/api/version", self.version, auth="api")

    async def _forward(
        self, request: Request, endpoint: str, stream_default: bool
    ) -> Response | None:
        model, stream = routing_fields(request, stream_default=stream_default)
        return await self.svc.proxy.forward(
            request, api="ollama", endpoint=endpoint, model=model, streaming=stream
        )

    async def chat(self, request: Request) -> Response | None:
        return await self._forward(request, "api.chat", True)

    async def generate(self, request: Request) -> Response | None:
        return await self._forward(request, "api.generate", True)

    async def embed(self, request: Request) -> Response | None:
        return await self._forward(request, "api.embed", False)

    async def embeddings(self, request: Request) -> Response | None:
        return await self._forward(request, "api.embeddings", False)

    async def show(self, request: Request) -> Response | None:
        return await self._forward(request, "api.show", False)

    async def _merged(self, path: str, key: str) -> list[dict[str, Any]]:
        """Each online node's list under `key`, merged by model name (first node wins)."""
        nodes = self.svc.registry.online()
        answers = await fan_out(self.svc.pool, nodes, path, self.svc.config.connect_timeout)
        merged: dict[str, dict[str, Any]] = {}
        for node, answer in zip(nodes, answers, strict=True):
            items = answer.get(key) if isinstance(answer, dict) else None
            if not isinstance(items, list):
                if path == "/api/tags":  # fall back to what the node's heartbeat reported
                    items = [{"name": m, "model": m} for m in node.models]
                else:
                    continue
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    merged.setdefault(item["name"], item)
        return [merged[name] for name in sorted(merged)]

    async def tags(self, request: Request) -> Response:
        models = await self._merged("/api/tags", "models")
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
        return Response.json({"models": await self._merged("/api/ps", "models")})

    async def version(self, request: Request) -> Response:
        nodes = self.svc.registry.online()
        versions = [n.runtime_version for n in nodes if n.runtime_version]
        return Response.json(
            {"version": versions[0] if versions else __version__, "router_version": __version__}
        )
