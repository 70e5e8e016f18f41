"""Models across the cluster: `POST /api/pull` and `DELETE /api/delete` on many nodes at once,
and the deployment endpoints (`/api/models/...`). The node work is in routercore.pulls and
routercore.deployments; this module reads requests and writes answers."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson

from routercore import validate as v
from routercore.api.host import ModelsHost
from routercore.errors import ClientError, NotFound, RouterError
from routercore.http.messages import Request, Response
from routercore.model_overrides import has_model, same_model
from routercore.node import Node
from routercore.pulls import (
    FAILED,
    NO_PULL_API,
    Event,
    NodePull,
    no_pull_api_message,
    node_request,
)

if TYPE_CHECKING:
    from routercore.app import App

log = logging.getLogger("routercore.api.models")

NDJSON = [(b"content-type", b"application/x-ndjson")]


def model_field(data: dict[str, Any]) -> str:
    """`model`, or the older `name` Ollama clients still send."""
    model = data.get("model", data.get("name"))
    if model is None:
        raise ClientError("field 'model' is required", code="missing_model")
    if not isinstance(model, str) or not model.strip() or len(model) > 512:
        raise ClientError("field 'model' must be a non-empty string")
    return model.strip()


def node_label(node: Node) -> str:
    return f"{node.custom_name or node.machine_name} ({node.id})"


def failure_summary(action: str, model: str, failed: list[tuple[Node, str]], total: int) -> str:
    parts = "; ".join(f"{node_label(n)}: {reason}" for n, reason in failed)
    return f"{action} of '{model}' failed on {len(failed)} of {total} nodes: {parts}"


def failure_status(codes: list[int]) -> int:
    """501 when no failed node has the API at all, else 502 (504 when all timed out)."""
    if codes and all(c == NO_PULL_API for c in codes):
        return 501
    if codes and all(c == 504 for c in codes):
        return 504
    return 502


class ModelsAPI:
    def __init__(self, svc: ModelsHost) -> None:
        self.svc = svc
        self.registry = svc.registry
        svc.pulls.listeners.append(self._pull_finished)

    def install(self, app: App) -> None:
        app.add("POST", "/api/pull", self.pull, auth="admin")
        app.add("DELETE", "/api/delete", self.delete, auth="admin")
        app.add("POST", "/api/models/deploy", self.deploy, auth="admin")
        app.add("GET", "/api/models/deployments", self.deployments, auth="read")
        app.add("DELETE", "/api/models/deployments/{model}", self.drop_deployment, auth="admin")

    # -- routing follows the nodes at once ---------------------------------------------------

    def _pull_finished(self, node: Node, pull: NodePull) -> None:
        """A node that finished pulling serves the model from now on."""
        if pull.state == FAILED or node.id not in self.registry.nodes:
            return
        self.svc.model_overrides.add(node.id, pull.model)
        if not has_model(node.models, pull.model):
            self.registry.set_models(node, [*node.models, pull.model])

    def _stop_routing(self, node: Node, model: str) -> None:
        self.svc.model_overrides.remove(node.id, model)
        kept = [m for m in node.models if not same_model(m, model)]
        if kept != node.models:
            self.registry.set_models(node, kept)

    # -- pull ----------------------------------------------------------------------------------

    def _pull_targets(self, model: str, data: dict[str, Any]) -> list[Node]:
        ids = v.get_str_list(data, "nodes", max_items=10_000, max_len=64)
        if ids is not None:
            if not ids:
                raise ClientError("field 'nodes' must name at least one agent id")
            return [self.registry.get(node_id) for node_id in ids]
        online = [n for n in self.registry.online() if n.runtime_kind == "ollama"]
        if not online:
            raise RouterError(
                "no online node runs Ollama (runtime_kind ollama), so none can pull; "
                "name nodes with 'nodes' or start an Ollama node",
                status=503,
                code="no_pull_node",
            )
        return [n for n in online if not has_model(n.models, model)]

    async def pull(self, request: Request) -> Response | None:
        data = request.json_object()
        model = model_field(data)
        stream = v.get_bool(data, "stream", default=True)
        targets = self._pull_targets(model, data)
        log.info(
            "event=pull_requested model=%s nodes=%s",
            model,
            ",".join(n.id for n in targets) or "-",
        )
        queue: asyncio.Queue[Event] = asyncio.Queue()
        pulls = [self.svc.pulls.pull(node, model) for node in targets]
        for pull in pulls:
            self.svc.pulls.watch(pull, queue)
        if not stream:
            await asyncio.gather(*(p.done.wait() for p in pulls))
            return self._pull_answer(model, targets, pulls)
        out = request.stream
        assert out is not None
        try:
            await out.start(200, NDJSON)
            left = len(pulls)
            while left:
                _node_id, line = await queue.get()
                if line is None:
                    left -= 1
                    continue
                await out.write(orjson.dumps(line) + b"\n")
            final = self._pull_answer(model, targets, pulls)
            # Each node's own success line went by already: the last line is Ollama's own.
            last = final.body if final.status != 200 else b'{"status":"success"}'
            await out.write(last + b"\n")
            await out.end()
        except ConnectionError:
            log.info("event=pull_client_gone model=%s (the pulls go on)", model)
        finally:
            for pull in pulls:
                self.svc.pulls.unwatch(pull, queue)
        return None

    def _pull_answer(self, model: str, targets: list[Node], pulls: list[NodePull]) -> Response:
        nodes = [
            {"node": p.node_id, "status": "success"}
            if p.state != FAILED
            else {"node": p.node_id, "error": p.error, "status_code": p.code}
            for p in pulls
        ]
        failed = [
            (n, p.error or "failed")
            for n, p in zip(targets, pulls, strict=True)
            if p.state == FAILED
        ]
        if not failed:
            return Response.json({"status": "success", "nodes": nodes})
        codes = [p.code or 502 for p in pulls if p.state == FAILED]
        body = {
            "error": failure_summary("pull", model, failed, len(pulls)),
            "failed_nodes": [n.id for n, _ in failed],
            "nodes": nodes,
        }
        return Response.json(body, failure_status(codes))

    # -- delete --------------------------------------------------------------------------------

    async def delete(self, request: Request) -> Response:
        data = request.json_object()
        model = model_field(data)
        nodes = [n for n in self.registry.nodes.values() if has_model(n.models, model)]
        if not nodes:
            raise NotFound(f"model '{model}' is not on any node", code="model_not_found")
        if self.svc.deployments.drop(model):
            log.info("event=deployment_dropped model=%s reason=deleted", model)
        results = await asyncio.gather(*(self._delete_on(node, model) for node in nodes))
        lines: list[dict[str, Any]] = []
        failed: list[tuple[Node, str]] = []
        codes: list[int] = []
        for node, (error, code) in zip(nodes, results, strict=True):
            if error is None:
                lines.append({"node": node.id, "status": "success"})
            else:
                lines.append({"node": node.id, "error": error, "status_code": code})
                failed.append((node, error))
                codes.append(code)
        log.info("event=model_deleted model=%s nodes=%d failed=%d", model, len(nodes), len(failed))
        if not failed:
            return Response.json({"status": "success", "nodes": lines})
        body = {
            "error": failure_summary("delete", model, failed, len(nodes)),
            "failed_nodes": [n.id for n, _ in failed],
            "nodes": lines,
        }
        return Response.json(body, failure_status(codes))

    async def _delete_on(self, node: Node, model: str) -> tuple[str | None, int]:
        if node.runtime_kind == "openai":
            return no_pull_api_message(node), NO_PULL_API
        self._stop_routing(node, model)  # at once, before the node has answered
        name = node.custom_name or node.machine_name
        try:
            status, body = await node_request(
                self.svc.pool,
                node,
                "DELETE",
                "/api/delete",
                orjson.dumps({"model": model}),
                self.svc.config.connect_timeout + 25.0,
            )
        except TimeoutError:
            return f"node {name} did not answer the delete in time", 504
        except ConnectionError as exc:
            return f"node {name} could not be reached: {exc}", 502
        if status == 200 or (status == 404 and model.encode() in body):
            return None, 200  # a 404 naming the model: it is gone already
        if status in (404, 405, 501):
            return no_pull_api_message(node), NO_PULL_API
        return f"node {name} answered {status}: {body[:200].decode('utf-8', 'replace')}", 502

    # -- deployments ---------------------------------------------------------------------------

    async def deploy(self, request: Request) -> Response:
        data = request.json_object()
        model = model_field(data)
        replicas = data.get("replicas", 1)
        if replicas != "all" and (
            isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 1000
        ):
            raise ClientError("field 'replicas' must be an integer 1-1000 or \"all\"")
        min_gb = data.get("min_memory_gb")
        if min_gb is not None and (
            isinstance(min_gb, bool) or not isinstance(min_gb, int | float) or min_gb < 0
        ):
            raise ClientError("field 'min_memory_gb' must be a number >= 0")
        deployment = await self.svc.deployments.deploy(
            model, replicas, None if min_gb is None else float(min_gb)
        )
        await self.svc.persisted(f"deploy:{model}")
        return Response.json(deployment, 201)

    async def deployments(self, request: Request) -> Response:
        return Response.json(self.svc.deployments.public())

    async def drop_deployment(self, request: Request) -> Response:
        model = unquote(request.params["model"])
        if not self.svc.deployments.drop(model):
            raise NotFound(f"no deployment of model '{model}'")
        await self.svc.persisted(f"undeploy:{model}")
        return Response(204, b"")
