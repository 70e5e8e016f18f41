"""Logs over the API: the router's recent log (`GET /api/logs`) and an agent's
(`GET /api/agents/{id}/logs`), every line masked (routercore.logring)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from routercore.api.host import LogsHost
from routercore.errors import ClientError, RouterError
from routercore.http.messages import Request, Response
from routercore.logring import parse_level

if TYPE_CHECKING:
    from routercore.app import App

log = logging.getLogger("routercore.api.logs")

DEFAULT_LINES = 100
MAX_LINES = 5000


def lines_param(request: Request) -> int:
    raw = request.query.get("lines")
    if raw is None or raw == "":
        return DEFAULT_LINES
    try:
        lines = int(raw)
    except ValueError:
        raise ClientError("query parameter 'lines' must be an integer") from None
    if not 1 <= lines <= MAX_LINES:
        raise ClientError(f"query parameter 'lines' must be between 1 and {MAX_LINES}")
    return lines


class LogsAPI:
    def __init__(self, svc: LogsHost) -> None:
        self.svc = svc

    def install(self, app: App) -> None:
        app.add("GET", "/api/logs", self.router_logs, auth="admin")
        app.add("GET", "/api/agents/{id}/logs", self.agent_logs, auth="admin")

    async def router_logs(self, request: Request) -> Response:
        lines = lines_param(request)
        try:
            level = parse_level(request.query.get("level"))
        except ValueError as exc:
            raise ClientError(f"query parameter 'level': {exc}") from None
        return Response.json({"lines": self.svc.log_ring.tail(lines, level)})

    async def agent_logs(self, request: Request) -> Response:
        node = self.svc.registry.get(request.params["id"])
        lines = lines_param(request)
        # The question goes out with the agent's next heartbeat answer, the log comes back in
        # the heartbeat right after it: one interval, plus the round trips.
        timeout = self.svc.config.heartbeat_interval + 2.0
        try:
            got = await self.svc.agent_logs.fetch(node.id, lines, timeout)
        except TimeoutError:
            name = node.custom_name or node.machine_name
            log.warning("event=agent_log_timeout node=%s waited=%.1fs", node.id, timeout)
            raise RouterError(
                f"agent {name} ({node.id}) did not send its log within {timeout:g}s "
                f"(it is {node.status}; fake nodes and agents older than this router never do)",
                status=504,
                code="agent_log_timeout",
            ) from None
        return Response.json({"agent_id": node.id, "lines": got})
