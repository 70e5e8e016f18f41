"""Talking to the router under test as a node would: register, and record the node's reply.

One `register` for every section (plain nodes, OpenAI-only ones, nodes behind a relay): the
benchmark's upstreams (bare.py) send no heartbeats, so the routers run with a long heartbeat
timeout and each node is registered once.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from routercore.bench.settings import CHAT_BODY, PATH


def register(router_port: int, name: str, port: int, models: list[str], **fields: Any) -> str:
    """Register `name` (runtime on `port`, serving `models`); extra fields go into the body as
    they are (`runtime_kind`, `relay_port`, ...). Returns the node's id."""
    body = {"machine_name": name, "runtime_port": port, "models": models, **fields}
    req = urllib.request.Request(
        f"http://127.0.0.1:{router_port}/api/agents/register",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["agent_id"])


def fetch_reply(port: int) -> dict[str, Any]:
    """The fake node's exact answer to the benchmark request, for the bare server to replay."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{PATH}",
        data=CHAT_BODY.encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        headers = [
            [k.lower(), v]
            for k, v in resp.headers.items()
            if k.lower() not in ("connection", "date")
        ]
        return {"status": resp.status, "headers": headers, "body": resp.read().decode("latin-1")}
