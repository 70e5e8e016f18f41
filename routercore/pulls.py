"""Model pulls on nodes: one task per (node, model), its progress shared by everyone watching.

A pull started by `POST /api/pull` and one started by a deployment for the same node and
model are the same pull. It runs to its end even when the client that asked goes away (as
`ollama pull` does on the node), and its outcome changes routing at once: a node that
finishes serves the model from that moment, without waiting for its next heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from routercore.http.upstream import UpstreamPool, UpstreamRequest
from routercore.node import Node

log = logging.getLogger("routercore.pulls")

PULLING, READY, FAILED = "pulling", "ready", "failed"
NO_PULL_API = 501
_MAX_LINE = 1024 * 1024

# (node id, the line as Ollama sent it plus "node") or (node id, None) when that pull ended.
Event = tuple[str, "dict[str, Any] | None"]


class LineSplitter:
    """Sans-IO NDJSON framing: bytes in, complete JSON objects out (bad lines skipped)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        if len(self._buf) > _MAX_LINE:
            raise ValueError("a progress line longer than 1 MiB")
        out: list[dict[str, Any]] = []
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out


def no_pull_api_message(node: Node) -> str:
    name = node.custom_name or node.machine_name
    return (
        f"node {name} ({node.id}) runs an OpenAI-only runtime (llama.cpp, vLLM): it has no "
        "pull or delete API; put the model on that machine by hand"
    )


@dataclass
class NodePull:
    """One model being pulled on one node, and what came of it."""

    node_id: str
    model: str
    state: str = PULLING
    status: str = "starting"
    total: int | None = None
    completed: int | None = None
    error: str | None = None
    code: int | None = None  # 501: the node has no pull API
    watchers: list[asyncio.Queue[Event]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def progress(self) -> float | None:
        """Percent of the current layer, as Ollama reports it (None before the first layer)."""
        if not self.total or self.completed is None:
            return 100.0 if self.state == READY else None
        return round(min(100.0, 100.0 * self.completed / self.total), 1)

    def current_line(self) -> dict[str, Any]:
        """A line that says where this pull stands, for a watcher that joins late."""
        if self.state == FAILED:
            return {"node": self.node_id, "error": self.error, "status_code": self.code}
        line: dict[str, Any] = {"status": self.status, "node": self.node_id}
        if self.total is not None:
            line.update(total=self.total, completed=self.completed or 0)
        return line


Finished = Callable[[Node, NodePull], None]


class PullManager:
    """Starts pulls, fans their progress out, and tells `listeners` how each one ended."""

    def __init__(self, pool: UpstreamPool, *, connect_timeout: float, read_timeout: float):
        self.pool = pool
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.active: dict[tuple[str, str], NodePull] = {}
        self.listeners: list[Finished] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def pull(self, node: Node, model: str) -> NodePull:
        """The running pull of `model` on `node`, or a new one."""
        key = (node.id, model)
        running = self.active.get(key)
        if running is not None:
            return running
        pull = NodePull(node.id, model)
        self.active[key] = pull
        task = asyncio.get_running_loop().create_task(self._run(node, pull))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return pull

    def watch(self, pull: NodePull, queue: asyncio.Queue[Event]) -> None:
        """Send `pull`'s lines to `queue` from now on, starting with where it stands."""
        if pull.done.is_set():
            queue.put_nowait((pull.node_id, pull.current_line()))
            queue.put_nowait((pull.node_id, None))
            return
        if pull.status != "starting":
            queue.put_nowait((pull.node_id, pull.current_line()))
        pull.watchers.append(queue)

    def unwatch(self, pull: NodePull, queue: asyncio.Queue[Event]) -> None:
        if queue in pull.watchers:
            pull.watchers.remove(queue)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- one pull ----------------------------------------------------------------------------

    def _send(self, pull: NodePull, line: dict[str, Any]) -> None:
        line["node"] = pull.node_id
        for queue in pull.watchers:
            queue.put_nowait((pull.node_id, line))

    def _finish(
        self, node: Node, pull: NodePull, error: str | None, code: int | None, *, tell: bool = True
    ) -> None:
        """Record the outcome, tell the listeners (routing, deployments) unless `tell` is
        false, and end every watcher's stream."""
        if error is None:
            pull.state, pull.status = READY, "success"
            log.info("event=pull_done node=%s model=%s", node.id, pull.model)
        else:
            pull.state, pull.error, pull.code = FAILED, error, code
            self._send(pull, {"error": error, "status_code": code or 502})
            log.warning("event=pull_failed node=%s model=%s reason=%r", node.id, pull.model, error)
        self.active.pop((node.id, pull.model), None)
        for listener in list(self.listeners) if tell else ():
            try:
                listener(node, pull)
            except Exception:
                log.exception("event=pull_listener_failed")
        for queue in pull.watchers:
            queue.put_nowait((pull.node_id, None))
        pull.watchers.clear()
        pull.done.set()

    async def _run(self, node: Node, pull: NodePull) -> None:
        error: str | None
        code: int | None = None
        if node.runtime_kind == "openai":
            error, code = no_pull_api_message(node), NO_PULL_API
        else:
            try:
                error, code = await self._pull_on_node(node, pull)
            except asyncio.CancelledError:
                # Not an outcome: a deployment keeps the replica as it was and pulls again
                # after the restart; only the clients watching learn why their stream ends.
                self._finish(node, pull, "the router is shutting down", 503, tell=False)
                raise
            except Exception as exc:  # a bug must still end the pull for its watchers
                log.exception("event=pull_crashed node=%s", node.id)
                error = f"pull failed: {exc!r}"
        self._finish(node, pull, error, code)

    async def _pull_on_node(self, node: Node, pull: NodePull) -> tuple[str | None, int | None]:
        """Run the node's own `/api/pull`; returns (error, status) with error None on success."""
        name = node.custom_name or node.machine_name
        try:
            conn = await self.pool.acquire(node.ip_address, node.runtime_port, fresh=True)
        except ConnectionError as exc:
            return f"node {name} could not be reached: {exc}", 502
        try:
            body = orjson.dumps({"model": pull.model, "stream": True})
            host = f"{node.ip_address}:{node.runtime_port}".encode()
            headers = [(b"host", host), (b"content-type", b"application/json")]
            conn.send_request("POST", "/api/pull", headers, body)
            head = await conn.read_head(self.read_timeout)
            splitter = LineSplitter()
            if head.status_code in (404, 405, 501):
                return no_pull_api_message(node), NO_PULL_API
            if head.status_code >= 400:
                text = b""
                while (piece := await conn.read_body(self.read_timeout)) is not None:
                    text += piece
                    if len(text) > 4096:
                        break
                return f"node {name} answered {head.status_code}: {_error_text(text)}", 502
            while (piece := await conn.read_body(self.read_timeout)) is not None:
                for line in splitter.feed(piece):
                    if "error" in line:
                        return f"node {name}: {line['error']}", 502
                    status = line.get("status")
                    if isinstance(status, str):
                        pull.status = status
                    total, completed = line.get("total"), line.get("completed")
                    if isinstance(total, int):
                        pull.total = total
                        pull.completed = completed if isinstance(completed, int) else 0
                    self._send(pull, line)
                    if status == "success":
                        return None, None
            return f"node {name} ended the pull without success", 502
        except TimeoutError:
            return f"node {name} sent nothing for {self.read_timeout:g}s during the pull", 504
        except (ConnectionError, ValueError) as exc:
            return f"node {name} failed during the pull: {exc}", 502
        finally:
            conn.close()


def _error_text(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip() or "no body"
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return body[:200].decode("utf-8", "replace")


async def node_request(
    pool: UpstreamPool, node: Node, method: str, path: str, body: bytes, timeout: float
) -> tuple[int, bytes]:
    """One small request to a node's runtime: (status, body). Raises ConnectionError or
    TimeoutError."""
    host = f"{node.ip_address}:{node.runtime_port}".encode()
    headers = [(b"host", host), (b"content-type", b"application/json")]
    req = UpstreamRequest(node.ip_address, node.runtime_port, method, path, headers, body)
    head, answer = await pool.fetch(req, timeout=timeout, max_body=16 * 1024 * 1024, fresh=True)
    return head.status_code, answer
