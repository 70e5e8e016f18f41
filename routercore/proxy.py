"""The request path: pick a node -> forward -> relay the body as it arrives -> account.

Failover happens only before the first byte reached the client; afterwards a failure ends the
client's stream with an error event. When every candidate is full the request waits in a
bounded FIFO queue (capacity.py); a finished request is recorded by accounting.py, and the
header fields that cross the router are hop_headers.py's.

Failures are classed by what they prove (docs/api.md, "Node health"):
- connection-level (refused, reset or EOF before a head on a fresh connection, connect or head
  timeout): the node is unreachable until the router's probe answers;
- an HTTP answer, any status: the node is up. A 5xx is retried on another node while one is
  left; the last candidate's answer is passed through. It counts toward the node's breaker;
- a stream cut mid-way: the node stays in rotation, probed at once;
- a reused keep-alive socket that fails before any byte: retried once on a fresh one, no fault.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from routercore.accounting import Accounting, Attempt
from routercore.capacity import SlotQueue
from routercore.error_answer import pass_error_answer
from routercore.errors import (
    ClientError,
    ModelNotFound,
    ModelUnavailable,
    RouterError,
    UpstreamError,
    UpstreamTimeout,
)
from routercore.hop_headers import SAFETY_HEADERS, HopHeaders, client_headers
from routercore.http.messages import Request, Response, ResponseStream
from routercore.http.response_parser import ResponseHead
from routercore.http.upstream import (
    UpstreamBrokenError,
    UpstreamConnectError,
    UpstreamConnection,
    UpstreamPool,
    UpstreamRequest,
)
from routercore.providers import Providers
from routercore.registry import NodeRegistry
from routercore.timestamps import now_rfc3339
from routercore.translate import (
    ResponseTranslator,
    TranslationError,
    ollama_response_translator,
    ollama_to_openai,
)
from routercore.usage import TailScanner, error_event

if TYPE_CHECKING:
    from routercore.balancer import Balancer
    from routercore.config import RouterConfig
    from routercore.prefix import PromptPrefix
    from routercore.stats import LiveStats
    from routercore.store import Store

log = logging.getLogger("routercore.proxy")


class AttemptFailed(Exception):
    """This node failed before any byte reached the client: try another one.

    `mark`: a connection-level failure (the node becomes unreachable); `http`: the node
    answered with a 5xx (it is up; the failure counts toward its breaker)."""

    def __init__(
        self, reason: str, *, mark: bool = True, timeout: bool = False, http: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.mark = mark
        self.timeout = timeout
        self.http = http


class Proxy:
    def __init__(
        self,
        cfg: RouterConfig,
        registry: NodeRegistry,
        balancer: Balancer,
        pool: UpstreamPool,
        store: Store,
        stats: LiveStats,
        *,
        retry_after: Callable[[str], int] = lambda _model: 1,
        providers: Providers | None = None,
    ) -> None:
        self.cfg = cfg
        self.retry_after = retry_after
        self.providers = providers
        # Set by the service to routercore.provider_proxy.forward_to_provider (which builds on
        # this module, so it cannot be imported here).
        self.provider_route: Callable[..., Awaitable[None]] | None = None
        self.registry = registry
        self.balancer = balancer
        self.pool = pool
        self.store = store
        self.stats = stats
        self.capacity = SlotQueue(cfg, registry, balancer, stats, self._not_servable)
        self.waiters = self.capacity.waiters  # the queue's length is a metric
        self.accounting = Accounting(registry, store, stats, providers)
        self.hop_headers = HopHeaders(f"1.1 llm-router-{random.getrandbits(48):012x}")
        self.via_token = self.hop_headers.via_token
        self.via_header = self.hop_headers.via_header  # for every other request it sends
        registry.listeners.append(lambda _id, _node: self.capacity.drain())

    # -- entry point -------------------------------------------------------------------------

    async def forward(
        self,
        request: Request,
        api: str,
        endpoint: str,
        model: str,
        streaming: bool,
        prefix: PromptPrefix | None = None,
    ) -> Response | None:
        """Forward `request` (body untouched) to a node serving `model` and relay the answer;
        with a `prefix`, the node that holds the prompt's longest prefix is preferred.

        One coroutine from the handler to the node attempts (`_try_node`): its accounting
        (the `try` around everything), the provider route, and the failover loop. A level per
        concern would cost its creation and a pass-through on every resume, per request."""
        started = time.perf_counter()
        att = Attempt(
            api, endpoint, model, streaming, started, scanner=TailScanner(api), prefix=prefix
        )
        ts = now_rfc3339()
        self.stats.in_flight += 1
        try:
            self.check_loop(request)
            if self.providers:
                resolved = self.providers.resolve(model)
                if resolved is not None and self.provider_route is not None:
                    provider, upstream_model = resolved
                    await self.provider_route(
                        self, request, att, provider=provider, upstream_model=upstream_model
                    )
                    return None
            if not self.balancer.serves(model):
                raise self._not_servable(model)
            deadline = started + self.cfg.request_timeout
            registry, capacity = self.registry, self.capacity
            while True:
                exclude = tuple(att.tried) if att.tried else ()
                picked = capacity.take(model, exclude, prefix)
                if picked is None:
                    picked = await capacity.wait(model, exclude, deadline, prefix)
                node_id, att.affinity = picked
                att.node_id = node_id
                ttfb: float | None = None
                try:
                    ttfb = await self._try_node(request, att, node_id, deadline)
                    return None
                except AttemptFailed as retry:
                    att.tried.append(node_id)
                    log.warning(
                        "event=node_failed id=%s model=%s reason=%r", node_id, model, retry.reason
                    )
                    if retry.mark:
                        registry.mark_unreachable(node_id, retry.reason)
                    elif retry.http:
                        registry.request_failed(node_id, retry.reason)
                    if not self._may_retry(model, att.tried):
                        failure = UpstreamTimeout if retry.timeout else UpstreamError
                        raise failure(
                            f"no node could serve model '{model}': {retry.reason}"
                        ) from None
                finally:
                    self.balancer.request_finished(node_id, ttfb)
                    if registry.breakers:
                        registry.trial_abandoned(node_id)  # no-op unless a trial got no verdict
                    capacity.drain()
        except _StreamFailed:
            return None
        except ConnectionError:
            att.outcome = "cancelled"
            att.error = "client disconnected"
            return None
        except RouterError as exc:
            att.status = exc.status
            att.outcome = "rejected" if exc.status in (404, 503) else "error"
            att.error = exc.message
            raise
        except asyncio.CancelledError:
            att.outcome = "cancelled"
            att.error = "client disconnected"
            if att.status == 0:
                att.status = 499
            raise
        finally:
            self.stats.in_flight -= 1
            self.accounting.record(request, att, ts)

    def _not_servable(self, model: str) -> RouterError:
        """404 only when no enabled node lists the model; else 503 with a Retry-After."""
        if not self.registry.lists_model(model):
            hint = Providers.unconfigured_hint(model)
            return ModelNotFound(hint or f"model '{model}' is not served by any node")
        retry_after = self.retry_after(model)
        log.info("event=model_unavailable model=%s retry_after=%d", model, retry_after)
        return ModelUnavailable(
            f"model '{model}' is temporarily unavailable: no node serving it can take "
            f"requests now; retry in {retry_after}s",
            retry_after=retry_after,
        )

    def _may_retry(self, model: str, tried: list[str]) -> bool:
        return len(tried) <= self.cfg.max_retries and self._has_other(model, tried)

    def flush_rows(self) -> None:
        """Hand the finished requests' history rows to the store (at shutdown)."""
        self.accounting.flush_rows()

    def check_loop(self, request: Request) -> None:
        """A request that already passed through this router is a loop (a node registered on
        the router's own address): answer 508 instead of forwarding to ourselves forever."""
        via = request.header(b"via")
        if via and self.via_token in via:
            log.warning("event=loop_detected path=%s via=%r", request.path, via)
            raise ClientError(
                "request loop: this router is registered as one of its own nodes",
                status=508,
                code="loop_detected",
            )

    def _has_other(self, model: str, tried: list[str]) -> bool:
        """Some node in rotation serving `model` was not tried yet (busy ones count)."""
        breakers = self.registry.breakers
        for node in self.registry.online():
            if node.id not in tried and model in node.models and node.runtime_up:
                brk = breakers.get(node.id)
                if brk is None or brk.admits:
                    return True
        return False

    # -- one node ----------------------------------------------------------------------------

    async def _try_node(
        self, request: Request, att: Attempt, node_id: str, deadline: float
    ) -> float | None:
        model = att.model
        node = self.registry.nodes.get(node_id)
        if node is None:
            raise AttemptFailed("node was removed", mark=False)
        host, port = node.ip_address, node.upstream_port
        method, target, body = request.method, request.target, request.body
        translator: ResponseTranslator | None = None
        if att.api == "ollama" and node.runtime_kind == "openai":
            # Ollama's API on a node that speaks only OpenAI's: translated both ways.
            call = ollama_to_openai(att.endpoint, request.json_object(), model)
            method, target, body = call.method, call.path, call.body
            translator = ollama_response_translator(
                att.endpoint,
                model=model,
                streaming=att.streaming,
                started_ns=int(att.started * 1e9),
            )
        headers = self.hop_headers.upstream(request, host, port, body)
        if node.relay_auth is not None:
            headers.append(node.relay_auth)  # the agent's relay; the client's own never goes on
        req = UpstreamRequest(host, port, method, target, headers, body)
        # `send_upstream` inlined: one coroutine level less on every forwarded request.
        timeout = min(self.cfg.read_timeout, self._timeout(deadline))
        try:
            conn, head = await self.pool.request(req, timeout=timeout)
        except (UpstreamConnectError, UpstreamBrokenError, TimeoutError) as exc:
            raise self._before_head(exc) from None
        stream = request.stream
        assert stream is not None
        try:
            if head.status_code >= 500 and self._may_retry(model, [*att.tried, node_id]):
                # The node is up but failed this request: its body (often a traceback) goes
                # to the log, never to the client; another node gets the request.
                detail = await self._read_some(conn, deadline)
                conn.close()
                log.info(
                    "event=node_error_answer id=%s status=%d body=%r",
                    node_id,
                    head.status_code,
                    detail[:200],
                )
                raise AttemptFailed(f"node answered {head.status_code}", mark=False, http=True)
            att.status = head.status_code
            node_header = self.hop_headers.node(node_id)
            if translator is None:
                headers = client_headers(head, node_header)
                chunked = head.content_length is None
            elif head.status_code >= 400:
                att.sent_to_client = True
                await pass_error_answer(
                    conn, head, stream, node_header, deadline, to_ollama=True, extra=SAFETY_HEADERS
                )
                return self._settle(node_id, att, None)
            else:
                headers = [(b"content-type", translator.content_type), node_header, *SAFETY_HEADERS]
                chunked = True
            ttfb = await self.relay(conn, stream, att, headers, chunked, deadline, translator)
        except BaseException:
            conn.abort()
            raise
        self.pool.release(conn)
        return self._settle(node_id, att, ttfb)

    def _settle(self, node_id: str, att: Attempt, ttfb: float | None) -> float | None:
        """The node answered in full: the outcome, and what it means for its breaker."""
        att.outcome = "ok" if att.status < 400 else "error"
        if att.status >= 500:
            # The last candidate's error answer, passed through: the node is up, but failing.
            self.registry.request_failed(node_id, f"node answered {att.status}")
        else:
            self.registry.request_succeeded(node_id)
        return ttfb

    async def send_upstream(
        self, req: UpstreamRequest, deadline: float, tls: ssl.SSLContext | None = None
    ) -> tuple[UpstreamConnection, ResponseHead]:
        """Connect (pooled), send, read the head (`UpstreamPool.request`). Failures before the
        head raise AttemptFailed (connection-level: `mark`)."""
        timeout = min(self.cfg.read_timeout, self._timeout(deadline))
        try:
            return await self.pool.request(req, timeout=timeout, tls=tls)
        except (UpstreamConnectError, UpstreamBrokenError, TimeoutError) as exc:
            raise self._before_head(exc) from None

    def _before_head(self, exc: OSError) -> AttemptFailed:
        """What a failure of `UpstreamPool.request` (no head yet) means for the attempt."""
        if isinstance(exc, (UpstreamConnectError, UpstreamBrokenError)):
            return AttemptFailed(str(exc))
        # A timeout: nothing reached the client yet, so a hung node is failed over like a
        # dead one.
        return AttemptFailed(f"no response head within {self.cfg.read_timeout:g}s", timeout=True)

    async def _read_some(self, conn: UpstreamConnection, deadline: float) -> str:
        out = b""
        try:
            while len(out) < 512:
                piece = await conn.read_body(min(2.0, self._timeout(deadline)))
                if piece is None:
                    break
                out += piece
        except (TimeoutError, ConnectionError):
            pass
        return out[:512].decode("utf-8", "replace").strip() or "no body"

    async def relay(
        self,
        conn: UpstreamConnection,
        stream: ResponseStream,
        att: Attempt,
        headers: list[tuple[bytes, bytes]],
        chunked: bool,
        deadline: float,
        translator: ResponseTranslator | None = None,
    ) -> float | None:
        """Copy body pieces to the client as they arrive; the client's drain paces the node.
        With a translator (another API's answer), each piece is translated on the way."""
        await stream.start(att.status, headers)
        att.sent_to_client = True
        scanner = att.scanner
        assert scanner is not None
        ttfb: float | None = None
        read_timeout = self.cfg.read_timeout
        perf_counter = time.perf_counter
        while True:
            left = deadline - perf_counter()
            try:
                if left <= 0:
                    raise TimeoutError
                piece = await conn.read_body(read_timeout if read_timeout < left else left)
            except (TimeoutError, UpstreamBrokenError) as exc:
                if isinstance(exc, UpstreamBrokenError):
                    reason = str(exc)
                elif deadline - perf_counter() <= 0:
                    reason = "the request took longer than request_timeout"
                else:
                    reason = "node stopped sending (read timeout)"
                att.outcome = "error"
                att.error = reason
                log.warning("event=stream_failed node=%s reason=%r", att.node_id, reason)
                if att.node_id:
                    # The node answered, so it is not unreachable: it stays in rotation unless
                    # the probe started now fails. The failure counts toward its breaker.
                    self.registry.request_failed(att.node_id, reason)
                    self.registry.suspect(att.node_id, f"stream cut: {reason}")
                if chunked:
                    await stream.write(error_event(att.api, f"upstream node failed: {reason}"))
                    await stream.end()
                else:
                    stream.abort()
                raise _StreamFailed(reason) from None
            if piece is None:
                break
            if ttfb is None:
                ttfb = (time.perf_counter() - att.started) * 1000.0
                att.ttfb_ms = ttfb
            if translator is not None:
                piece = await self._translate(translator.feed, piece, stream, att)
                if not piece:
                    continue
            scanner.feed(piece)
            await stream.write(piece)
        if translator is not None:
            tail = await self._translate(translator.finish, None, stream, att)
            if tail:
                scanner.feed(tail)
                await stream.write(tail)
        await stream.end()
        return ttfb

    async def _translate(
        self,
        step: Callable[..., bytes],
        piece: bytes | None,
        stream: ResponseStream,
        att: Attempt,
    ) -> bytes:
        """One translator step; an answer it cannot translate ends the stream with an error."""
        try:
            return step() if piece is None else step(piece)
        except TranslationError as exc:
            reason = f"cannot translate the node's answer: {exc.message}"
            att.outcome = "error"
            att.error = reason
            log.warning("event=translation_failed node=%s reason=%r", att.node_id, reason)
            await stream.write(error_event(att.api, reason))
            await stream.end()
            raise _StreamFailed(reason) from None

    def _timeout(self, deadline: float) -> float:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise UpstreamTimeout("the request took longer than request_timeout")
        return left


class _StreamFailed(Exception):
    """The node failed after the client got the head; the client stream was ended."""
