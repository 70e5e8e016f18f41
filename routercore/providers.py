"""Cloud providers reached by model prefix: `openai:gpt-4o-mini` goes to the `openai` provider's
OpenAI-compatible API as `gpt-4o-mini`, with the provider's key instead of the client's.

A provider is not a node: it is always "there" (no heartbeats, no balancer), its models come
from its own `/models` (refreshed every `provider_refresh` seconds; the last good list is kept
when a refresh fails) or from a fixed list, and it is reached over HTTPS with certificate checks.
Its key lives only here and in the outgoing `Authorization` header: never in a log line, a
history row, a metric, a response or an error message (see `Provider.scrub`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from routercore.config import BUILTIN_PROVIDERS, ProviderConfig
from routercore.http.upstream import UpstreamPool

log = logging.getLogger("routercore.providers")

# What a provider's model list may hold (a provider answering megabytes is cut off).
_MAX_LIST_BYTES = 4 * 1024 * 1024
_MAX_MODELS = 5000


@dataclass
class Provider:
    config: ProviderConfig
    host: str = ""
    port: int = 0
    path: str = ""  # the base URL's path, e.g. "/v1"
    tls: ssl.SSLContext | None = None
    models: list[str] = field(default_factory=list)
    refreshed_at: float | None = None
    last_error: str | None = None
    host_header: bytes = b""
    auth_header: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        url = urllib.parse.urlsplit(self.config.base_url)
        self.host = url.hostname or ""
        https = url.scheme == "https"
        self.port = url.port or (443 if https else 80)
        self.path = url.path.rstrip("/")
        if https:
            self.tls = ssl.create_default_context(cafile=self.config.ca_file or None)
        default_port = (https and self.port == 443) or (not https and self.port == 80)
        self.host_header = (self.host if default_port else f"{self.host}:{self.port}").encode()
        self.auth_header = f"Bearer {self.config.api_key}".encode("latin-1")
        self.models = list(self.config.models)

    @property
    def name(self) -> str:
        return self.config.name

    def target(self, suffix: str) -> str:
        """The request target for an API path such as `/chat/completions`."""
        return self.path + suffix

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"host", self.host_header), (b"authorization", self.auth_header)]

    def scrub(self, data: bytes) -> bytes:
        """`data` with the provider's key masked (an error body may echo what it was sent)."""
        key = self.config.api_key.encode("latin-1", "replace")
        return data.replace(key, b"***") if key else data

    def public(self) -> dict[str, Any]:
        """What `GET /api/providers` shows: never the key, only whether one is set."""
        return {
            "name": self.name,
            "base_url": self.config.base_url,
            "api_key_env": self.config.api_key_env,
            "has_key": bool(self.config.api_key),
            "models": [f"{self.name}:{m}" for m in self.models],
            "last_refresh_error": self.last_error,
        }


class Providers:
    """The configured providers by name, and the task that keeps their model lists fresh."""

    def __init__(
        self,
        configs: Iterable[ProviderConfig],
        pool: UpstreamPool,
        *,
        refresh: float = 300.0,
        timeout: float = 10.0,
    ) -> None:
        self.by_name = {c.name: Provider(c) for c in configs}
        self.pool = pool
        self.refresh = refresh
        self.timeout = timeout

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def resolve(self, model: str) -> tuple[Provider, str] | None:
        """(provider, its own model name) when `model` carries a configured provider's prefix."""
        prefix, colon, rest = model.partition(":")
        if not colon or not rest:
            return None
        provider = self.by_name.get(prefix)
        return (provider, rest) if provider is not None else None

    @staticmethod
    def unconfigured_hint(model: str) -> str | None:
        """For `openai:x` etc. with no such provider configured: which variable to set."""
        prefix, colon, rest = model.partition(":")
        builtin = BUILTIN_PROVIDERS.get(prefix)
        if not colon or not rest or builtin is None:
            return None
        key_env, url_env, _ = builtin
        return (
            f"model '{model}' is for the {prefix} provider, which is not configured: set "
            f"{key_env} (and {url_env} for another endpoint) where the router runs"
        )

    def model_names(self) -> list[tuple[str, Provider]]:
        """Every provider model with its prefix, for /v1/models and /api/tags."""
        return [(f"{p.name}:{m}", p) for p in self.by_name.values() for m in p.models]

    async def run(self) -> None:
        """Refresh every provider's model list now and every `refresh` seconds."""
        while True:
            await asyncio.gather(
                *(self.refresh_one(p) for p in self.by_name.values() if not p.config.models)
            )
            await asyncio.sleep(self.refresh)

    async def refresh_one(self, provider: Provider) -> None:
        try:
            models = await self._fetch_models(provider)
        except Exception as exc:  # any failure keeps the last good list
            provider.last_error = provider.scrub(str(exc).encode()).decode()
            log.warning(
                "event=provider_models_failed provider=%s reason=%r kept=%d",
                provider.name,
                provider.last_error,
                len(provider.models),
            )
            return
        provider.models = models
        provider.refreshed_at = time.time()
        provider.last_error = None
        log.info("event=provider_models provider=%s count=%d", provider.name, len(models))

    async def _fetch_models(self, provider: Provider) -> list[str]:
        conn = await self.pool.acquire(provider.host, provider.port, tls=provider.tls)
        try:
            headers = [*provider.headers(), (b"accept", b"application/json")]
            conn.send_request("GET", provider.target("/models"), headers, b"")
            head = await conn.read_head(self.timeout)
            body = b""
            while (piece := await conn.read_body(self.timeout)) is not None:
                body += piece
                if len(body) > _MAX_LIST_BYTES:
                    raise ValueError("model list too large")
        except BaseException:
            conn.abort()
            raise
        self.pool.release(conn)
        if head.status_code != 200:
            raise ValueError(f"GET /models answered {head.status_code}")
        data = orjson.loads(body)
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ValueError("GET /models did not answer an OpenAI model list")
        names = [i["id"] for i in items if isinstance(i, dict) and isinstance(i.get("id"), str)]
        return sorted(set(names))[:_MAX_MODELS]
