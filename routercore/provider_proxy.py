"""Forwarding one request to a cloud provider: the model's prefix is stripped, the client's
credentials are replaced by the provider's key, Ollama-API requests are translated to the
provider's OpenAI-compatible API, and the answer is relayed (an error answer passed through with
its status and `Retry-After`, the key masked if the provider echoes it).

There is no failover: a provider is one endpoint. A connection-level failure is a 502 (504 for
a timeout) that names the provider, never its key.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import orjson

from routercore.accounting import Attempt
from routercore.error_answer import pass_error_answer
from routercore.errors import UpstreamError, UpstreamTimeout
from routercore.hop_headers import SAFETY_HEADERS
from routercore.http.messages import Request
from routercore.http.upstream import UpstreamRequest
from routercore.proxy import AttemptFailed
from routercore.translate import ResponseTranslator, ollama_response_translator, ollama_to_openai

if TYPE_CHECKING:
    from routercore.providers import Provider
    from routercore.proxy import Proxy

log = logging.getLogger("routercore.providers")

_OPENAI_PATHS = {
    "chat.completions": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}


async def forward_to_provider(
    proxy: Proxy,
    request: Request,
    att: Attempt,
    *,
    provider: Provider,
    upstream_model: str,
) -> None:
    """Send `request` to `provider` as `upstream_model` and relay the answer to the client."""
    api, endpoint, model = att.api, att.endpoint, att.model
    deadline = att.started + proxy.cfg.request_timeout
    att.node_id = f"provider:{provider.name}"
    data = request.json_object()
    translator: ResponseTranslator | None = None
    if api == "openai":
        method, path = "POST", _OPENAI_PATHS[endpoint]
        body = orjson.dumps({**data, "model": upstream_model})
    else:
        call = ollama_to_openai(endpoint, data, upstream_model)
        # The call names a node's path (/v1/...); a provider's base URL already ends in it.
        method, path, body = call.method, call.path.removeprefix("/v1"), call.body
        translator = ollama_response_translator(
            endpoint,
            model=model,
            streaming=att.streaming,
            started_ns=int(att.started * 1e9),
        )
    headers = provider.headers()
    if body:
        headers.append((b"content-type", b"application/json"))
    headers.append((b"content-length", b"%d" % len(body)))
    headers.append((b"accept", b"text/event-stream, application/json"))
    req = UpstreamRequest(
        provider.host, provider.port, method, provider.target(path), headers, body
    )
    try:
        conn, head = await proxy.send_upstream(req, deadline, tls=provider.tls)
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
            att.outcome = "error"
            att.error = f"provider answered {head.status_code}"
            log.info(
                "event=provider_error_answer provider=%s status=%d",
                provider.name,
                head.status_code,
            )
            att.sent_to_client = True
            await pass_error_answer(
                conn,
                head,
                stream,
                node_header,
                deadline,
                to_ollama=api == "ollama",
                scrub=provider.scrub,
                extra=SAFETY_HEADERS,
            )
            return
        out_headers = [node_header, *SAFETY_HEADERS]
        if translator is not None:
            out_headers.append((b"content-type", translator.content_type))
        else:
            out_headers += [(k, v) for k, v in head.headers if k == b"content-type"]
        await proxy.relay(conn, stream, att, out_headers, True, deadline, translator=translator)
    except BaseException:
        conn.abort()
        raise
    proxy.pool.release(conn)
    att.outcome = "ok"
