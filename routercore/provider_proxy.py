"""Forwarding one request to a cloud provider: the model's prefix is stripped, the client's
credentials are replaced by the provider's key, Ollama-API requests are translated to the
provider's OpenAI-compatible API, and the answer is relayed (an error answer passed through with
its status and `Retry-After`, the key masked if the provider echoes it).

There is no failover: a provider is one endpoint. A connection-level failure is a 502 (504 for
a timeout) that names the provider, never its key.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import orjson

from routercore.errors import UpstreamError, UpstreamTimeout
from routercore.http.messages import Request, ResponseStream
from routercore.http.upstream import ResponseHead, UpstreamConnection
from routercore.proxy import SAFETY_HEADERS, Attempt, AttemptFailed, BodyTranslator

if TYPE_CHECKING:
    from routercore.providers import Provider
    from routercore.proxy import Proxy

log = logging.getLogger("routercore.providers")

_OPENAI_PATHS = {
    "chat.completions": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}
_PASSED_ERROR_HEADERS = (b"retry-after", b"x-ratelimit-reset-requests", b"x-ratelimit-reset-tokens")
_MAX_ERROR_BODY = 64 * 1024


async def forward_to_provider(
    proxy: Proxy,
    request: Request,
    att: Attempt,
    *,
    api: str,
    endpoint: str,
    model: str,
    streaming: bool,
    provider: Provider,
    upstream_model: str,
    started: float,
) -> None:
    """Send `request` to `provider` as `upstream_model` and relay the answer to the client."""
    deadline = started + proxy.cfg.request_timeout
    att.node_id = f"provider:{provider.name}"
    data = request.json_object()
    translator: BodyTranslator | None = None
    if api == "openai":
        method, path = "POST", _OPENAI_PATHS[endpoint]
        body = orjson.dumps({**data, "model": upstream_model})
    else:
        from routercore.translate import ollama_response_translator, ollama_to_openai

        call = ollama_to_openai(endpoint, data, upstream_model)
        method, path, body = call.method, call.path, call.body
        translator = ollama_response_translator(
            endpoint,
            model=model,
            streaming=streaming,
            started_ns=int(started * 1e9),
        )
    headers = provider.headers()
    if body:
        headers.append((b"content-type", b"application/json"))
    headers.append((b"content-length", b"%d" % len(body)))
    headers.append((b"accept", b"text/event-stream, application/json"))
    try:
        conn, head = await proxy.send_upstream(
            provider.host,
            provider.port,
            method,
            provider.target(path),
            headers,
            body,
            deadline,
            tls=provider.tls,
        )
    except AttemptFailed as failed:
        reason = provider.scrub(failed.reason.encode()).decode()
        log.warning("event=provider_failed provider=%s reason=%r", provider.name, reason)
        error = UpstreamTimeout if failed.timeout else UpstreamError
        raise error(f"provider '{provider.name}' could not be reached: {reason}") from None
    stream = request.stream
    assert stream is not None
    node_header = (b"x-router-node", att.node_id.encode())
    att.status = head.status_code
    try:
        if head.status_code >= 400:
            await _pass_error(conn, head, stream, att, api, provider, node_header, deadline)
            return
        out_headers = [node_header, *SAFETY_HEADERS]
        if translator is not None:
            out_headers.append((b"content-type", translator.content_type))
        else:
            out_headers += [(k, v) for k, v in head.headers if k == b"content-type"]
        await proxy.relay(
            conn,
            stream,
            att,
            out_headers,
            api,
            True,
            started,
            deadline,
            translator=translator,
        )
    except BaseException:
        conn.abort()
        raise
    proxy.pool.release(conn)
    att.outcome = "ok"


async def _pass_error(
    conn: UpstreamConnection,
    head: ResponseHead,
    stream: ResponseStream,
    att: Attempt,
    api: str,
    provider: Provider,
    node_header: tuple[bytes, bytes],
    deadline: float,
) -> None:
    """The provider's error answer, passed through: status, rate-limit fields, its body (the
    key masked; in Ollama's error shape for the Ollama API)."""
    body = b""
    end = time.perf_counter() + 10.0
    while len(body) < _MAX_ERROR_BODY:
        left = min(end, deadline) - time.perf_counter()
        piece = await conn.read_body(max(0.1, left))
        if piece is None:
            break
        body += piece
    body = provider.scrub(body[:_MAX_ERROR_BODY])
    headers = [node_header, *SAFETY_HEADERS]
    headers += [(k, v) for k, v in head.headers if k in _PASSED_ERROR_HEADERS]
    if api == "ollama":
        from routercore.translate import openai_error_to_ollama

        body = openai_error_to_ollama(head.status_code, body)
        headers.append((b"content-type", b"application/json; charset=utf-8"))
    else:
        headers += [(k, v) for k, v in head.headers if k == b"content-type"]
    att.outcome = "error"
    att.error = f"provider answered {head.status_code}"
    log.info("event=provider_error_answer provider=%s status=%d", provider.name, head.status_code)
    headers.append((b"content-length", b"%d" % len(body)))
    await stream.start(head.status_code, headers)
    att.sent_to_client = True
    await stream.write(body)
    await stream.end()
    conn.close()
