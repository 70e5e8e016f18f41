"""Find out whether the local LLM runtime answers, what it is, and which models it has and runs.

Ollama answers `/api/tags` (models) and `/api/ps` (loaded models); llama.cpp's server and vLLM
answer the OpenAI `/v1/models`. With `runtime_kind = "auto"` the first one that answers wins.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from agent.httpjson import TransportError, request_json

log = logging.getLogger(__name__)

OLLAMA = "ollama"
OPENAI = "openai"


@dataclass(frozen=True)
class RuntimeStatus:
    up: bool
    kind: str | None = None
    version: str | None = None
    models: tuple[str, ...] = ()
    running_models: tuple[str, ...] = ()


DOWN = RuntimeStatus(up=False)


def parse_ollama_models(body: Any) -> tuple[str, ...] | None:
    """Names from an Ollama `/api/tags` or `/api/ps` body; None when it is not that shape."""
    if not isinstance(body, dict) or not isinstance(body.get("models"), list):
        return None
    names = []
    for item in body["models"]:
        if isinstance(item, dict):
            name = item.get("name") or item.get("model")
            if isinstance(name, str) and name:
                names.append(name)
    return tuple(dict.fromkeys(names))


def parse_openai_models(body: Any) -> tuple[str, ...] | None:
    """Ids from an OpenAI `/v1/models` body; None when it is not that shape."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return None
    ids = [item["id"] for item in body["data"] if isinstance(item, dict) and item.get("id")]
    return tuple(dict.fromkeys(str(i) for i in ids))


class RuntimeProbe:
    """Blocking probe of one runtime URL; remembers the detected kind once found."""

    def __init__(self, base_url: str, kind: str = "auto", timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.configured_kind = kind
        self.detected_kind: str | None = None if kind == "auto" else kind
        self.timeout = timeout

    def _get(self, path: str) -> Any:
        resp = request_json("GET", self.base_url + path, timeout=self.timeout)
        return resp.body if resp.ok else None

    def _probe_ollama(self) -> RuntimeStatus | None:
        models = parse_ollama_models(self._get("/api/tags"))
        if models is None:
            return None
        running: tuple[str, ...] = ()
        version = None
        try:
            running = parse_ollama_models(self._get("/api/ps")) or ()
            info = self._get("/api/version")
            if isinstance(info, dict) and isinstance(info.get("version"), str):
                version = info["version"]
        except TransportError:
            pass  # the model list is what matters; these two are extras
        return RuntimeStatus(True, OLLAMA, version, models, running)

    def _probe_openai(self) -> RuntimeStatus | None:
        models = parse_openai_models(self._get("/v1/models"))
        if models is None:
            return None
        # llama.cpp and vLLM serve exactly the models they loaded.
        return RuntimeStatus(True, OPENAI, None, models, models)

    def probe(self) -> RuntimeStatus:
        """One round of requests; any transport failure or unknown answer means 'down'."""
        order = [self.detected_kind] if self.detected_kind else [OLLAMA, OPENAI]
        try:
            for kind in order:
                status = self._probe_ollama() if kind == OLLAMA else self._probe_openai()
                if status is not None:
                    if self.detected_kind is None:
                        log.info("runtime_detected kind=%s url=%s", kind, self.base_url)
                    self.detected_kind = status.kind if self.configured_kind == "auto" else kind
                    return status
            if self.configured_kind == "auto":
                self.detected_kind = None  # a different runtime may have taken the port
        except TransportError as exc:
            log.debug("runtime_unreachable url=%s error=%s", self.base_url, exc)
        return DOWN
