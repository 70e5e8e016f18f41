"""Which API a node's runtime speaks, asked of the runtime itself when its agent did not say.

Ollama answers `GET /api/tags` with a JSON object holding `models`; llama.cpp's server and vLLM
answer it with a 404 (or some other non-Ollama body). So a JSON answer of that shape means
`ollama`, any other HTTP answer means `openai`, and no answer at all means "unknown yet".
"""

from __future__ import annotations

import logging

import orjson

from routercore.http.upstream import UpstreamPool
from routercore.node import RUNTIME_KINDS, Node

log = logging.getLogger("routercore.runtime_kind")

OLLAMA, OPENAI = RUNTIME_KINDS
_MAX_BODY = 4 * 1024 * 1024


def kind_from_tags_answer(status: int, body: bytes) -> str:
    """`ollama` when `/api/tags` answered 200 with `{"models": [...]}`, else `openai`."""
    if status != 200:
        return OPENAI
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return OPENAI
    if isinstance(data, dict) and isinstance(data.get("models"), list):
        return OLLAMA
    return OPENAI


async def detect_runtime_kind(pool: UpstreamPool, node: Node, timeout: float) -> str | None:
    """Ask the node's runtime; None when it could not be reached (try again later)."""
    try:
        conn = await pool.acquire(node.ip_address, node.runtime_port, fresh=True)
    except ConnectionError as exc:
        log.info("event=runtime_kind_unknown node=%s reason=%r", node.id, str(exc))
        return None
    try:
        host = f"{node.ip_address}:{node.runtime_port}".encode()
        conn.send_request("GET", "/api/tags", [(b"host", host), (b"accept", b"*/*")], b"")
        head = await conn.read_head(timeout)
        body = b""
        while len(body) <= _MAX_BODY:
            piece = await conn.read_body(timeout)
            if piece is None:
                break
            body += piece
        conn.close()
    except (ConnectionError, TimeoutError) as exc:
        conn.abort()
        log.info("event=runtime_kind_unknown node=%s reason=%r", node.id, str(exc) or "timeout")
        return None
    kind = kind_from_tags_answer(head.status_code, body)
    log.info("event=runtime_kind_detected node=%s kind=%s", node.id, kind)
    return kind
