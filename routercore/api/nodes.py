"""Node management API: register, heartbeat, list, get, patch, delete, disconnect."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from routercore import validate as v
from routercore.api.host import NodesHost
from routercore.auth import bearer
from routercore.errors import ClientError, PayloadTooLarge, RouterError
from routercore.http.messages import Request, Response
from routercore.node import RUNTIME_KINDS, Node, NodeMetrics
from routercore.runtime_kind import detect_runtime_kind

if TYPE_CHECKING:
    from routercore.app import App

log = logging.getLogger("routercore.api.nodes")

# The relay token goes into a header the router sends: token68 characters only (RFC 9110).
_RELAY_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}")


def _relay(data: dict[str, Any]) -> tuple[int | None, str]:
    """`relay_port` + `relay_token`: both or neither (the agent relays to its runtime)."""
    port = v.get_int(data, "relay_port", minimum=1, maximum=65535)
    token = v.get_str(data, "relay_token", max_len=512)
    if port is None and not token:
        return None, ""
    if port is None or not token:
        raise ClientError("fields 'relay_port' and 'relay_token' go together: give both or neither")
    if not _RELAY_TOKEN.fullmatch(token):
        raise ClientError(
            "field 'relay_token' must be 16 to 512 characters of A-Z a-z 0-9 . _ ~ + / = -"
        )
    return port, token


# What one node may make the router store and serve to every dashboard viewer.
MAX_MODELS = 1024
MAX_MODEL_NAME = 256
MAX_GPU_DEVICES = 64


def _normalise_ip(text: str, field: str) -> str:
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ClientError(f"field '{field}' must be an IP address") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


def _runtime_kind(data: dict[str, Any]) -> str | None:
    """`ollama` (speaks both APIs) or `openai` (only /v1: Ollama's API gets translated)."""
    kind = v.get_str(data, "runtime_kind", max_len=16)
    if kind is not None and kind not in RUNTIME_KINDS:
        raise ClientError(f"field 'runtime_kind' must be one of {', '.join(RUNTIME_KINDS)}")
    return kind


class NodesAPI:
    def __init__(self, svc: NodesHost) -> None:
        self.svc = svc
        self.registry = svc.registry
        self._detecting: dict[str, asyncio.Task[None]] = {}
        self._asked_at: dict[str, float] = {}  # node id -> when its runtime was last asked
        self.retry_kind_after = 30.0  # seconds before a heartbeat asks a silent runtime again

    def install(self, app: App) -> None:
        app.add("POST", "/api/agents/register", self.register, auth="register")
        app.add("POST", "/api/health", self.heartbeat, auth="agent")
        app.add("GET", "/api/agents", self.list_nodes, auth="read")
        app.add("GET", "/api/agents/{id}", self.get_node, auth="read")
        app.add("PATCH", "/api/agents/{id}", self.patch_node, auth="admin")
        app.add("DELETE", "/api/agents/{id}", self.delete_node, auth="admin")
        app.add("POST", "/api/agents/{id}/disconnect", self.disconnect_node, auth="admin")
        app.add("GET", "/healthz", self.healthz)

    async def healthz(self, request: Request) -> Response:
        return Response.json({"status": "ok"})

    def _node_body(self, request: Request) -> dict[str, Any]:
        """Registration and heartbeat bodies are small; a large one is refused unparsed."""
        limit = self.svc.config.max_node_body_bytes
        if len(request.body) > limit:
            raise PayloadTooLarge(f"a registration or heartbeat body may hold {limit} bytes")
        return request.json_object()

    async def register(self, request: Request) -> Response:
        data = self._node_body(request)
        machine_name = v.get_str(data, "machine_name", required=True, max_len=255)
        assert machine_name is not None
        peer = _normalise_ip(request.peer or "127.0.0.1", "peer")
        claimed = v.get_str(data, "ip_address", max_len=64)
        ip = peer
        if claimed:
            claimed_ip = _normalise_ip(claimed, "ip_address")
            allowed = self.svc.config.allowed_node_addresses
            if claimed_ip != peer and claimed_ip not in allowed:
                log.warning(
                    "event=register_refused machine=%s peer=%s claimed=%s",
                    machine_name,
                    peer,
                    claimed_ip,
                )
                raise ClientError(
                    f"field 'ip_address' ({claimed_ip}) must equal the address this request "
                    f"comes from ({peer}) unless an admin allow-listed it",
                    status=403,
                    code="address_not_allowed",
                )
            ip = claimed_ip
        port = v.get_int(data, "runtime_port", default=11434, minimum=1, maximum=65535)
        assert port is not None
        relay_port, relay_token = _relay(data)
        details: dict[str, Any] = {
            "relay_port": relay_port,
            "relay_token": relay_token,
            "runtime_version": v.get_str(data, "runtime_version", max_len=128),
            "agent_version": v.get_str(data, "agent_version", max_len=128),
            "gpu_devices": v.get_object_list(
                data, "gpu_devices", v.GPU_DEVICE, max_items=MAX_GPU_DEVICES
            ),
            "models": v.get_str_list(data, "models", max_items=MAX_MODELS, max_len=MAX_MODEL_NAME),
            "max_concurrency": v.get_int(data, "max_concurrency", minimum=0, maximum=1 << 20),
            "system": v.get_object(data, "system", v.SYSTEM),
            "runtime_kind": _runtime_kind(data),
        }
        if (
            len(self.registry.nodes) >= self.svc.config.max_nodes
            and self.registry.find(machine_name, ip, port) is None
        ):
            log.warning(
                "event=register_refused machine=%s peer=%s reason='max_nodes (%d) reached'",
                machine_name,
                peer,
                self.svc.config.max_nodes,
            )
            raise RouterError(
                f"this router holds its maximum of {self.svc.config.max_nodes} nodes "
                "(max_nodes); delete unused nodes to make room",
                status=503,
                code="node_limit_reached",
                headers=[("retry-after", "60")],
            )
        node, created, token = self.registry.register(
            machine_name=machine_name, ip_address=ip, runtime_port=port, details=details
        )
        if relay_port:
            log.info("event=node_relayed id=%s relay=%s:%s", node.id, ip, relay_port)
        if details["runtime_kind"] is None:
            self._detect_kind(node, force=True)
        await self.svc.persisted(f"register:{node.id}")
        body = {
            "agent_id": node.id,
            "status": "registered" if created else "updated",
            "agent_token": token,
            "heartbeat_interval_secs": self.svc.config.heartbeat_interval,
        }
        return Response.json(body, 201 if created else 200)

    async def heartbeat(self, request: Request) -> Response:
        data = self._node_body(request)
        agent_id = v.get_str(data, "agent_id", required=True, max_len=64)
        assert agent_id is not None
        node = self.registry.check_token(agent_id, bearer(request))
        metrics = NodeMetrics(
            cpu_usage=v.get_percent(data, "cpu_usage"),
            memory_usage=v.get_percent(data, "memory_usage"),
            gpu_usage=v.get_percent(data, "gpu_usage"),
            gpu_memory_usage=v.get_percent(data, "gpu_memory_usage"),
            active_requests=v.get_int(data, "active_requests", default=0, minimum=0) or 0,
        )
        runtime_up = v.get_bool(data, "runtime_up", default=True)
        models = v.get_str_list(data, "models", max_items=MAX_MODELS, max_len=MAX_MODEL_NAME)
        if models is not None:
            models = self.svc.model_overrides.apply(node.id, models)
        kind = _runtime_kind(data)
        if kind is not None:
            node.runtime_kind = kind
        elif node.runtime_kind is None and runtime_up:
            self._detect_kind(node)
        status = self.registry.heartbeat(node, metrics, models, bool(runtime_up))
        # A log request rides on the answer; a log sent on request rides on the heartbeat.
        return Response.json({"status": status, **self.svc.agent_logs.on_heartbeat(node.id, data)})

    def detecting(self) -> int:
        """Runtime-kind questions still waiting for an answer."""
        return len(self._detecting)

    def _detect_kind(self, node: Node, *, force: bool = False) -> None:
        """The agent did not say what its runtime speaks: ask the runtime (in the background,
        so the registration is not held up by a slow runtime). A runtime that did not answer
        is asked again by a later heartbeat, at most every `retry_kind_after` seconds."""
        now = time.monotonic()
        last = self._asked_at.get(node.id)
        recent = last is not None and now - last < self.retry_kind_after
        if node.id in self._detecting or (recent and not force):
            return
        self._asked_at[node.id] = now

        async def run() -> None:
            try:
                kind = await detect_runtime_kind(
                    self.svc.pool, node, self.svc.config.connect_timeout
                )
                if kind is not None and kind != node.runtime_kind:
                    self.registry.update(node, {"runtime_kind": kind})
            finally:
                self._detecting.pop(node.id, None)

        self._detecting[node.id] = asyncio.get_running_loop().create_task(run())

    async def list_nodes(self, request: Request) -> Response:
        describe = self.svc.health.describe
        return Response.json([n.to_public(describe(n)) for n in self.registry.nodes.values()])

    async def get_node(self, request: Request) -> Response:
        node = self.registry.get(request.params["id"])
        return Response.json(node.to_public(self.svc.health.describe(node)))

    async def patch_node(self, request: Request) -> Response:
        node = self.registry.get(request.params["id"])
        data = request.json_object()
        known = {"custom_name", "enabled", "max_concurrency", "tags", "notes"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ClientError(f"unknown field '{unknown[0]}'; allowed: {', '.join(sorted(known))}")
        changes: dict[str, Any] = {}
        if "custom_name" in data:
            changes["custom_name"] = v.get_str(data, "custom_name", max_len=255) or None
        if "enabled" in data:
            enabled = v.get_bool(data, "enabled")
            if enabled is None:
                raise ClientError("field 'enabled' must be true or false")
            changes["enabled"] = enabled
        if "max_concurrency" in data:
            changes["max_concurrency"] = v.get_int(data, "max_concurrency", minimum=0) or None
        if "tags" in data:
            changes["tags"] = v.get_str_list(data, "tags", max_items=64, max_len=64) or []
        if "notes" in data:
            changes["notes"] = v.get_str(data, "notes", max_len=10_000) or ""
        updated = self.registry.update(node, changes)
        await self.svc.persisted(f"update:{node.id}")
        return Response.json(updated.to_public(self.svc.health.describe(updated)))

    async def delete_node(self, request: Request) -> Response:
        self.registry.delete(request.params["id"])
        await self.svc.persisted(f"delete:{request.params['id']}")
        return Response(204, b"")

    async def disconnect_node(self, request: Request) -> Response:
        node = self.registry.disconnect(request.params["id"])
        await self.svc.persisted(f"disconnect:{node.id}")
        return Response.json(node.to_public(self.svc.health.describe(node)))
