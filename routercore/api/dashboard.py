"""Dashboard surface: the static page, its JSON snapshots and the WebSocket feed.

Everything here reads in-memory state (registry, live stats, balancer) or awaits the store's
reader thread, so no handler blocks the event loop. A snapshot is built at most once per
second (or per node change) and shared by every WebSocket client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from routercore import __version__
from routercore.api.host import DashboardHost
from routercore.api.metrics import affinity_totals
from routercore.auth import bearer, token_matches
from routercore.errors import ClientError, NotFound, Unauthorized
from routercore.http.messages import Request, Response, WebSocketAccept
from routercore.node import OFFLINE, ONLINE, UNREACHABLE, Node
from routercore.store import OUTCOMES
from routercore.timestamps import rfc3339

if TYPE_CHECKING:
    from routercore.app import App
    from routercore.http.websocket import WebSocket

log = logging.getLogger("routercore.api.dashboard")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# The only files served: URL path -> (file name, content type). Nothing else is reachable.
# The page's ES modules: dashboard.js is the entry, the rest are what it imports.
SCRIPTS = (
    "dashboard.js", "state.js", "dom.js", "api.js", "charts.js", "nodes.js",
    "node_detail.js", "history.js", "chat.js", "models.js",
)  # fmt: skip
STATIC_FILES = {
    "/dashboard": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard/": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    **{f"/dashboard/{name}": (name, "text/javascript; charset=utf-8") for name in SCRIPTS},
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

PUSH_INTERVAL = 1.0
COALESCE = 0.05  # seconds to gather node changes into one push
RATE_WINDOW = 10  # seconds behind requests/s, tokens/s
SERIES_SECONDS = 3600
SERIES_STEP = 10  # chart resolution in seconds: 360 points for the hour
SERIES_TOP_NODES = 8  # per-node chart lines: the busiest nodes of the hour
HISTORY_MAX_LIMIT = 500
NODE_RECENT = 25


def _query_int(query: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ClientError(f"query parameter '{name}' must be an integer") from None
    if not lo <= value <= hi:
        raise ClientError(f"query parameter '{name}' must be between {lo} and {hi}")
    return value


def _gpu_count(device: Any) -> int:
    count = device.get("count") if isinstance(device, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1


def _json_safe(row: dict[str, Any]) -> bool:
    """orjson can write the row (a stored value outside what JSON carries fails it)."""
    try:
        orjson.dumps(row)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return False
    return True


def status_filter(raw: str) -> tuple[str | None, int | None]:
    """`status` is an outcome (ok, error, cancelled, rejected) or an HTTP status code."""
    if not raw:
        return None, None
    if raw in OUTCOMES:
        return raw, None
    if raw.isdigit() and 100 <= int(raw) <= 599:
        return None, int(raw)
    raise ClientError(
        f"query parameter 'status' must be one of {', '.join(OUTCOMES)} or an HTTP status code"
    )


def affinity_summary(hits: int, picks: int) -> dict[str, Any]:
    """Prefix-affinity picks of a node or of the router: hits, picks, and the hit rate."""
    return {"hits": hits, "picks": picks, "hit_rate": round(hits / picks, 4) if picks else None}


class StaticFile:
    """One packaged file held in memory (read once at start-up) with its ETag."""

    def __init__(self, name: str, content_type: str) -> None:
        self.body = (STATIC_DIR / name).read_bytes()
        self.content_type = content_type
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'

    def response(self, request: Request) -> Response:
        headers = [
            ("etag", self.etag),
            ("cache-control", "no-cache"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
        ]
        if self.content_type.startswith("text/html"):
            headers += [("content-security-policy", CSP), ("x-frame-options", "DENY")]
        if request.header(b"if-none-match") == self.etag:
            return Response(304, b"", headers, self.content_type)
        return Response(200, self.body, headers, self.content_type)


class SnapshotBuilder:
    """Builds the JSON the page renders; cached per second and per node-change version."""

    def __init__(self, svc: DashboardHost) -> None:
        self.svc = svc
        self.version = 0
        self._cached: tuple[tuple[int, int], str] | None = None
        self._reported: set[str] = set()  # broken nodes already logged (once each)

    def node_row(self, node: Node) -> dict[str, Any]:
        """One node's row; a node whose record cannot be shown becomes a row that says so,
        instead of failing the snapshot for every viewer."""
        try:
            return self._node_row(node)
        except Exception as exc:
            return self._broken_row(node, exc)

    def _broken_row(self, node: Node, exc: BaseException) -> dict[str, Any]:
        node_id = str(getattr(node, "id", "?"))
        if node_id not in self._reported:
            self._reported.add(node_id)
            log.warning("event=node_row_failed id=%s reason=%r", node_id, str(exc)[:200])
        name = getattr(node, "machine_name", None)
        return {
            "id": node_id,
            "machine_name": name if isinstance(name, str) else node_id,
            "display_name": name if isinstance(name, str) else node_id,
            "status": node.status if node.status in (ONLINE, OFFLINE, UNREACHABLE) else OFFLINE,
            "enabled": False,
            "models": [],
            "tags": [],
            "metrics": {},
            "stats": {},
            "problem": f"this node's record cannot be shown: {str(exc)[:200]}",
        }

    def _node_row(self, node: Node) -> dict[str, Any]:
        """What the node table needs, built by hand: `to_public()` deep-copies through
        `dataclasses.asdict`, which costs too much for hundreds of nodes every second."""
        m, st = node.metrics, node.stats
        return {
            "id": node.id,
            "machine_name": node.machine_name,
            "custom_name": node.custom_name,
            "display_name": node.custom_name or node.machine_name,
            "ip_address": node.ip_address,
            "runtime_port": node.runtime_port,
            "runtime_version": node.runtime_version,
            "runtime_kind": node.runtime_kind,
            "status": node.status,
            "enabled": node.enabled,
            "runtime_up": node.runtime_up,
            "online_since": node.online_since,
            "last_seen": node.last_seen,
            "models": node.models,
            "tags": node.tags,
            "gpu_count": sum(_gpu_count(d) for d in node.gpu_devices),
            "max_concurrency": node.max_concurrency,
            "metrics": {
                "cpu_usage": m.cpu_usage,
                "memory_usage": m.memory_usage,
                "gpu_usage": m.gpu_usage,
                "gpu_memory_usage": m.gpu_memory_usage,
                "active_requests": m.active_requests,
            },
            "stats": {
                "total_requests": st.total_requests,
                "failed_requests": st.failed_requests,
                "avg_latency_ms": st.avg_latency_ms,
            },
            "in_flight": self.svc.balancer.in_flight(node.id),
            "affinity": self._affinity(node.id),
            "error_rate": (
                round(st.failed_requests / st.total_requests, 4) if st.total_requests else None
            ),
            "health": self.svc.health.describe(node),
            "problem": node.problem,
        }

    def _affinity(self, node_id: str) -> dict[str, Any]:
        return affinity_summary(*self.svc.balancer.affinity(node_id))

    def node_detail_row(self, node: Node) -> dict[str, Any]:
        """The full public record (system, GPUs, notes) plus the table's derived fields."""
        try:
            row = node.to_public()
            compact = self._node_row(node)
            for key in (
                "display_name", "gpu_count", "in_flight", "affinity", "error_rate", "health"
            ):  # fmt: skip
                row[key] = compact[key]
            if not _json_safe(row):
                raise TypeError("a field holds a value JSON cannot carry")
            return row
        except Exception as exc:
            return self._broken_row(node, exc)

    def overview(self) -> dict[str, Any]:
        svc, stats = self.svc, self.svc.stats
        nodes = list(svc.registry.nodes.values())
        counts = {ONLINE: 0, OFFLINE: 0, UNREACHABLE: 0}
        for node in nodes:
            counts[node.status] = counts.get(node.status, 0) + 1
        req, err, tok = stats.window(RATE_WINDOW)
        total = stats.total()
        ok = stats.outcomes.get("ok", 0)
        errors = stats.outcomes.get("error", 0) + stats.outcomes.get("rejected", 0)
        models = sorted({m for n in svc.registry.online() if n.runtime_up for m in n.models})
        now = time.time()
        return {
            "time": rfc3339(now),
            "server_time_ms": int(now * 1000),
            "version": __version__,
            "uptime_s": round(now - stats.started, 1),
            "nodes": {
                "total": len(nodes),
                "online": counts[ONLINE],
                "offline": counts[OFFLINE],
                "unreachable": counts[UNREACHABLE],
                "disabled": sum(1 for n in nodes if not n.enabled),
            },
            "requests": {
                "total": total,
                "ok": ok,
                "errors": errors,
                "cancelled": stats.outcomes.get("cancelled", 0),
                "rejected": stats.outcomes.get("rejected", 0),
                "in_flight": stats.in_flight,
                "queued": stats.queued,
            },
            "success_rate": round(ok / total, 4) if total else None,
            "rates": {
                "window_s": RATE_WINDOW,
                "requests_per_s": round(req / RATE_WINDOW, 3),
                "errors_per_s": round(err / RATE_WINDOW, 3),
                "tokens_per_s": round(tok / RATE_WINDOW, 3),
            },
            "latency_ms": {"p50": stats.percentile(0.50), "p95": stats.percentile(0.95)},
            "models": models,
            "affinity": {
                "enabled": svc.config.prefix_affinity,
                **affinity_summary(*affinity_totals(svc.balancer.affinity_stats())),
            },
        }

    def series(self) -> dict[str, Any]:
        """The last hour in SERIES_STEP buckets: overall and for the busiest nodes."""
        now = int(time.time())
        end = now - now % SERIES_STEP + SERIES_STEP  # exclusive end of the current step
        points = SERIES_SECONDS // SERIES_STEP
        start = end - points * SERIES_STEP
        req = [0] * points
        lat = [0.0] * points
        node_req: dict[str, list[int]] = {}
        node_lat: dict[str, list[float]] = {}
        for b in self.svc.stats.recent(end - start):
            i = (b.second - start) // SERIES_STEP
            if not 0 <= i < points:
                continue
            req[i] += b.requests
            lat[i] += b.latency_ms_sum
            for node_id, count in b.by_node.items():
                nr = node_req.get(node_id)
                if nr is None:
                    nr = node_req[node_id] = [0] * points
                    node_lat[node_id] = [0.0] * points
                nr[i] += count
                node_lat[node_id][i] += b.latency_ms_by_node.get(node_id, 0.0)

        def means(sums: list[float], counts: list[int]) -> list[float | None]:
            return [round(s / c, 1) if c else None for s, c in zip(sums, counts, strict=True)]

        busiest = sorted(node_req, key=lambda n: -sum(node_req[n]))[:SERIES_TOP_NODES]
        # Counts per step, not rates: integers keep the pushed JSON small.
        return {
            "start_ms": start * 1000,
            "step_s": SERIES_STEP,
            "requests": req,
            "latency_ms": means(lat, req),
            "nodes": {
                n: {"requests": node_req[n], "latency_ms": means(node_lat[n], node_req[n])}
                for n in busiest
            },
        }

    def snapshot(self, *, checked: bool = False) -> dict[str, Any]:
        """`checked`: each row is tried alone first, so a row JSON cannot carry is replaced."""
        nodes = sorted(
            self.svc.registry.nodes.values(),
            key=lambda n: (str(n.custom_name or n.machine_name).lower(), str(n.id)),
        )
        rows = [self.node_row(n) for n in nodes]
        if checked:
            for i, (node, row) in enumerate(zip(nodes, rows, strict=True)):
                if not _json_safe(row):
                    rows[i] = self._broken_row(node, TypeError("a value JSON cannot carry"))
        return {
            "type": "snapshot",
            "overview": self.overview(),
            "nodes": rows,
            "series": self.series(),
            "picks": self.svc.balancer.picks(),
        }

    def snapshot_text(self) -> str:
        key = (int(time.time()), self.version)
        if self._cached is None or self._cached[0] != key:
            try:
                text = orjson.dumps(self.snapshot()).decode()
            except TypeError:  # orjson.JSONEncodeError: some node's row; find it, show the rest
                text = orjson.dumps(self.snapshot(checked=True)).decode()
            self._cached = (key, text)
        return self._cached[1]


class DashboardFeed:
    """Pushes snapshots to WebSocket clients every second and at once on node changes."""

    def __init__(self, snapshots: SnapshotBuilder) -> None:
        self.snapshots = snapshots
        self.sessions: set[asyncio.Event] = set()

    def on_node_change(self, _node_id: str, _node: Node) -> None:
        self.snapshots.version += 1
        for changed in self.sessions:
            changed.set()

    async def run(self, ws: WebSocket) -> None:
        changed = asyncio.Event()
        self.sessions.add(changed)
        reader = asyncio.get_running_loop().create_task(self._read_until_closed(ws, changed))
        log.debug(
            "event=dashboard_feed_open peer=%s clients=%d", ws.request.peer, len(self.sessions)
        )
        try:
            while not ws.closed and not reader.done():
                changed.clear()
                await ws.send_text(self.snapshots.snapshot_text())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), PUSH_INTERVAL)
                    # A burst of changes (every node going offline at once) becomes one push.
                    await asyncio.sleep(COALESCE)
        except ConnectionError:
            pass
        finally:
            log.debug("event=dashboard_feed_closed peer=%s", ws.request.peer)
            self.sessions.discard(changed)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    @staticmethod
    async def _read_until_closed(ws: WebSocket, changed: asyncio.Event) -> None:
        """Clients send nothing we need; reading notices the close and wakes the session."""
        while await ws.receive() is not None:
            pass
        changed.set()


class DashboardAPI:
    def __init__(self, svc: DashboardHost) -> None:
        self.svc = svc
        self.snapshots = SnapshotBuilder(svc)
        self.feed = DashboardFeed(self.snapshots)
        self.files = {path: StaticFile(name, ctype) for path, (name, ctype) in STATIC_FILES.items()}
        svc.registry.listeners.append(self.feed.on_node_change)

    def install(self, app: App) -> None:
        for path in self.files:
            app.add("GET", path, self.static)
        app.add("GET", "/ws/dashboard", self.websocket)
        app.add("GET", "/api/dashboard/overview", self.overview, auth="read")
        app.add("GET", "/api/dashboard/snapshot", self.snapshot, auth="read")
        app.add("GET", "/api/dashboard/request-history", self.request_history, auth="read")
        app.add("GET", "/api/dashboard/requests/{id}", self.request_detail, auth="read")
        app.add("GET", "/api/dashboard/nodes/{id}", self.node_detail, auth="read")

    async def static(self, request: Request) -> Response:
        return self.files[request.path].response(request)

    async def websocket(self, request: Request) -> WebSocketAccept:
        """Same read rule as the JSON endpoints; browsers cannot set headers, so `?token=`."""
        auth = self.svc.auth
        if not auth.open_reads:
            token = request.query.get("token") or bearer(request)
            if not token or not token_matches(token, auth.admin_token_hash):
                raise Unauthorized("the dashboard feed needs the admin token (?token=)")
        return WebSocketAccept(self.feed.run)

    async def overview(self, request: Request) -> Response:
        return Response.json(self.snapshots.overview())

    async def snapshot(self, request: Request) -> Response:
        """What the WebSocket pushes, for pages that fall back to polling."""
        return Response(
            200, self.snapshots.snapshot_text().encode(), [("cache-control", "no-store")]
        )

    async def request_history(self, request: Request) -> Response:
        q = request.query
        limit = _query_int(q, "limit", 50, 1, HISTORY_MAX_LIMIT)
        offset = _query_int(q, "offset", 0, 0, 10**9)
        outcome, status_code = status_filter(q.get("status", ""))
        rows, total = await self.svc.store.query_requests(
            limit=limit,
            offset=offset,
            node_id=q.get("agent_id") or None,
            model=q.get("model") or None,
            outcome=outcome,
            status_code=status_code,
        )
        return Response.json({"items": rows, "total": total, "limit": limit, "offset": offset})

    async def request_detail(self, request: Request) -> Response:
        row = await self.svc.store.request_by_id(request.params["id"])
        if row is None:
            raise NotFound(f"request {request.params['id']} not found")
        node = self.svc.registry.nodes.get(row.get("node_id") or "")
        row["node_name"] = (node.custom_name or node.machine_name) if node else None
        return Response.json(row)

    async def node_detail(self, request: Request) -> Response:
        """System info, CPU/memory history of the last hour, recent requests and errors."""
        node = self.svc.registry.get(request.params["id"])
        store = self.svc.store
        since = rfc3339(time.time() - SERIES_SECONDS)
        samples, (recent, _), (errors, _) = await asyncio.gather(
            store.node_samples(node.id, since=since, limit=SERIES_SECONDS),
            store.query_requests(limit=NODE_RECENT, node_id=node.id),
            store.query_requests(limit=NODE_RECENT, node_id=node.id, outcome="error"),
        )
        return Response.json(
            {
                "node": self.snapshots.node_detail_row(node),
                "samples": [
                    {
                        "ts": s["ts"],
                        "cpu": s["cpu"],
                        "memory": s["memory"],
                        "gpu": s["gpu"],
                        "gpu_memory": s["gpu_memory"],
                        "active_requests": s["active_requests"],
                    }
                    for s in samples
                ],
                "recent_requests": recent,
                "recent_errors": errors,
                "since": since,
                "until": rfc3339(time.time()),
            }
        )
