"""OpenAI-compatible surface: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from routercore.api.host import OpenAIHost
from routercore.api.inference import inference_handler
from routercore.errors import ModelNotFound
from routercore.http.messages import Request, Response
from routercore.timestamps import rfc3339_seconds

if TYPE_CHECKING:
    from routercore.app import App


def _created(iso: str | None) -> int:
    if not iso:
        return int(time.time())
    try:
        return rfc3339_seconds(iso)
    except ValueError:
        return int(time.time())


class OpenAIAPI:
    def __init__(self, svc: OpenAIHost) -> None:
        self.svc = svc

    def install(self, app: App) -> None:
        svc = self.svc
        for path, endpoint in (
            ("/v1/chat/completions", "chat.completions"),
            ("/v1/completions", "completions"),
            ("/v1/embeddings", "embeddings"),
        ):
            handler = inference_handler(svc, "openai", endpoint, stream_default=False)
            app.add("POST", path, handler, auth="api")
        app.add("GET", "/v1/models", self.models, auth="api")
        app.add("GET", "/v1/models/{id}", self.model, auth="api")

    def _model_entries(self) -> dict[str, dict[str, Any]]:
        entries: dict[str, dict[str, Any]] = {}
        for node in self.svc.registry.online():
            for name in node.models:
                entry = entries.get(name)
                if entry is None:
                    entries[name] = {
                        "id": name,
                        "object": "model",
                        "created": _created(node.registered_at),
                        "owned_by": "llm-router",
                        "nodes": [node.id],
                    }
                else:
                    entry["nodes"].append(node.id)
        for name, provider in self.svc.providers.model_names():
            entries.setdefault(
                name,
                {"id": name, "object": "model", "created": 0, "owned_by": provider.name},
            )
        return entries

    async def models(self, request: Request) -> Response:
        data = sorted(self._model_entries().values(), key=lambda e: e["id"])
        return Response.json({"object": "list", "data": data})

    async def model(self, request: Request) -> Response:
        entry = self._model_entries().get(request.params["id"])
        if entry is None:
            raise ModelNotFound(f"model '{request.params['id']}' is not served by any online node")
        return Response.json(entry)
