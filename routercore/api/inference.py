"""What the proxy handlers share: forwarding one request by its `model`/`stream`, and fanning
out to online nodes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from routercore.api.host import ForwardHost
from routercore.errors import ClientError
from routercore.http.messages import Request, Response
from routercore.http.upstream import UpstreamPool, UpstreamRequest
from routercore.node import Node
from routercore.prefix import prompt_prefix

log = logging.getLogger("routercore.api")

FANOUT_MAX_BYTES = 16 * 1024 * 1024  # one node's answer to a fan-out GET


def forward_inference(
    host: ForwardHost, request: Request, api: str, endpoint: str, stream_default: bool
) -> Awaitable[Response | None]:
    """One inference request of either API to the proxy: its model, whether it streams, and
    (with prefix affinity on) the hash of its prompt's prefix.

    A plain function that hands back the proxy's coroutine instead of awaiting it: every
    coroutine level between the handler and the proxy costs its creation and a pass-through
    on each resume, per request. A body the router refuses raises here, at the handler's
    call, which `App.dispatch` answers the same way."""
    data = request.json_object()
    model, stream = model_and_stream(data, stream_default=stream_default)
    prefix = prompt_prefix(endpoint, model, data) if host.config.prefix_affinity else None
    return host.proxy.forward(request, api, endpoint, model, stream, prefix)


def inference_handler(
    host: ForwardHost, api: str, endpoint: str, *, stream_default: bool
) -> Callable[[Request], Awaitable[Response | None]]:
    """The route handler of one inference endpoint of either API: `forward_inference` with
    these values, its coroutine returned, not awaited."""

    def handle(request: Request) -> Awaitable[Response | None]:
        return forward_inference(host, request, api, endpoint, stream_default)

    return handle


def model_and_stream(data: dict[str, Any], *, stream_default: bool) -> tuple[str, bool]:
    """`model` (required string) and `stream` (bool) of a parsed request body."""
    model = data.get("model")
    if model is None:
        raise ClientError("field 'model' is required", code="missing_model")
    if not isinstance(model, str) or not model.strip():
        raise ClientError("field 'model' must be a non-empty string")
    stream = data.get("stream", stream_default)
    if stream is None:
        stream = stream_default
    if not isinstance(stream, bool):
        raise ClientError("field 'stream' must be true or false")
    return model, stream


async def fetch_json(
    pool: UpstreamPool, node: Node, path: str, timeout: float, via: tuple[bytes, bytes]
) -> Any:
    """GET a small JSON document from a node, or None when it fails (logged). `via` marks the
    request as this router's, so a node that is the router itself answers 508, not a loop."""
    host = f"{node.ip_address}:{node.upstream_port}".encode()
    headers = [(b"host", host), (b"accept", b"application/json"), via]
    if node.relay_auth is not None:
        headers.append(node.relay_auth)
    try:
        req = UpstreamRequest(node.ip_address, node.upstream_port, "GET", path, headers)
        return await pool.get_json(req, timeout=timeout, max_body=FANOUT_MAX_BYTES)
    except (ConnectionError, TimeoutError, orjson.JSONDecodeError) as exc:
        log.info("event=fanout_failed node=%s path=%s reason=%r", node.id, path, str(exc))
        return None


async def fan_out(
    pool: UpstreamPool,
    nodes: list[Node],
    path: str,
    timeout: float,
    *,
    via: tuple[bytes, bytes],
    concurrency: int,
    deadline: float,
) -> list[Any]:
    """The same GET on every node, at most `concurrency` at a time and for at most `deadline`
    seconds in all; answers in node order (None for failures and for nodes not reached).

    A fixed set of workers walks the node list, so 5,000 nodes cost `concurrency` sockets and
    tasks, not 5,000 of each.
    """
    answers: list[Any] = [None] * len(nodes)
    todo = iter(enumerate(nodes))

    async def worker() -> None:
        for i, node in todo:
            answers[i] = await fetch_json(pool, node, path, timeout, via)

    loop = asyncio.get_running_loop()
    workers = [loop.create_task(worker()) for _ in range(min(concurrency, len(nodes)))]
    if not workers:
        return answers
    _, late = await asyncio.wait(workers, timeout=deadline)
    for task in late:
        task.cancel()
    if late:
        await asyncio.wait(late)
        log.info("event=fanout_deadline path=%s nodes=%d", path, len(nodes))
    return answers
