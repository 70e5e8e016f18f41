"""Blocking JSON-over-HTTP calls on urllib, run in worker threads by the async loops.

Router and runtime calls go direct (no proxy): both are on the node's own network, and a corporate
proxy in the environment would otherwise swallow them. Downloads use `agent.download` instead.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class TransportError(Exception):
    """The peer could not be reached or the connection broke (no HTTP status to act on)."""


@dataclass(frozen=True)
class JsonResponse:
    status: int
    body: Any  # parsed JSON, or None when the body was empty or not JSON

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _request(
    method: str, url: str, payload: Any, headers: Mapping[str, str] | None
) -> urllib.request.Request:
    data = None if payload is None else orjson.dumps(payload)
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    return req


def _parse(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def request_json(
    method: str,
    url: str,
    payload: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> JsonResponse:
    """Send one request; HTTP error statuses are returned, not raised (callers branch on them)."""
    req = _request(method, url, payload, headers)
    try:
        with _DIRECT.open(req, timeout=timeout) as resp:
            return JsonResponse(resp.status, _parse(resp.read()))
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read()
        except (OSError, http.client.HTTPException):
            body = b""
        finally:
            exc.close()
        return JsonResponse(exc.code, _parse(body))
    except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise TransportError(f"{method} {url}: {reason}") from exc


def stream_ndjson(
    method: str,
    url: str,
    payload: Any = None,
    *,
    timeout: float = 60.0,
) -> Iterator[Any]:
    """Yield each JSON line of a streamed response (Ollama's pull progress, for one)."""
    req = _request(method, url, payload, None)
    try:
        resp = _DIRECT.open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        body = _parse(exc.read())
        exc.close()
        message = body.get("error") if isinstance(body, dict) else None
        raise TransportError(f"{method} {url}: HTTP {exc.code} {message or ''}".strip()) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise TransportError(f"{method} {url}: {getattr(exc, 'reason', exc)}") from exc
    with resp:
        try:
            for line in resp:
                line = line.strip()
                if line:
                    parsed = _parse(line)
                    if parsed is not None:
                        yield parsed
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"{method} {url}: stream broke: {exc}") from exc
