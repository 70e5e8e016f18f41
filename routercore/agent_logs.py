"""Asking an agent for its log: the router cannot call the agent, so the question rides on the
agent's next heartbeat answer and the log comes back in the heartbeat right after it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from routercore.logring import mask_secrets

log = logging.getLogger("routercore.agent_logs")

MAX_LINES = 5000
_MAX_LINE_CHARS = 8192


class AgentLogRequests:
    """Pending log requests per node; filled by `on_heartbeat`."""

    def __init__(self) -> None:
        self.wanted: dict[str, int] = {}  # node id -> lines asked for
        self.waiters: dict[str, list[asyncio.Future[list[str]]]] = {}

    async def fetch(self, node_id: str, lines: int, timeout: float) -> list[str]:
        """The node's newest `lines` log lines (masked); TimeoutError when it did not send them
        within `timeout` seconds."""
        self.wanted[node_id] = max(lines, self.wanted.get(node_id, 0))
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(node_id, []).append(future)
        try:
            got = await asyncio.wait_for(future, timeout)
        finally:
            waiting = self.waiters.get(node_id, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self.waiters.pop(node_id, None)
                self.wanted.pop(node_id, None)
        return got[-lines:]

    def on_heartbeat(self, node_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """Take a log the heartbeat carries; return what to add to the heartbeat's answer."""
        sent = data.get("logs")
        if isinstance(sent, list) and node_id in self.waiters:
            lines = [mask_secrets(str(line)[:_MAX_LINE_CHARS]) for line in sent[-MAX_LINES:]]
            log.info("event=agent_log_received node=%s lines=%d", node_id, len(lines))
            for future in self.waiters.pop(node_id, []):
                if not future.done():
                    future.set_result(lines)
            self.wanted.pop(node_id, None)
            return {}
        lines_wanted = self.wanted.get(node_id)
        if lines_wanted:
            return {"send_logs": {"lines": lines_wanted}}
        return {}
