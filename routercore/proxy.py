"""The request path: pick a node -> forward -> relay the body as it arrives -> account.

Failover happens only before the first byte reached the client; afterwards a failure ends the
client's stream with an error event. When every candidate is full the request waits in a
bounded FIFO queue.

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
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from routercore.error_answer import pass_error_answer
from routercore.errors import (
    ClientError,
    ModelNotFound,
    ModelUnavailable,
    NoCapacity,
    RouterError,
    UpstreamError,
    UpstreamTimeout,
)
from routercore.http.messages import Request, Response, ResponseStream
from routercore.http.upstream import (
    HOP_BY_HOP,
    ResponseHead,
    UpstreamBrokenError,
    UpstreamConnectError,
    UpstreamConnection,
    UpstreamPool,
)
from routercore.providers import Providers
from routercore.registry import NodeRegistry, now_rfc3339
from routercore.stats import METRIC_LABEL_MAX, OTHER_MODEL, LiveStats, Outcome
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
    from routercore.store import Store

log = logging.getLogger("routercore.proxy")

# content-type is not among them: the handlers parsed the body as JSON, so it goes upstream as
# JSON whatever the client said (curl -d sends application/x-www-form-urlencoded, which a
# FastAPI runtime such as llama.cpp's server answers with a 500).
_FORWARDED_HEADERS = (b"accept", b"user-agent", b"x-request-id")
_JSON_CONTENT_TYPE = (b"content-type", b"application/json")
# A node's answer is served from the router's origin, where the dashboard and the admin token
# live: it may not set cookies there, name another node, or choose its own content policies.
_DROP_RESPONSE_HEADERS = HOP_BY_HOP | {
    b"server",
    b"set-cookie",
    b"set-cookie2",
    b"x-router-node",
    b"x-content-type-options",
    b"content-security-policy",
    b"content-security-policy-report-only",
}
SAFETY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"sandbox"),
)
_DROP_WITH_LENGTH = _DROP_RESPONSE_HEADERS | {b"content-length"}
_NO_BODY_STATUSES = (204, 304)
# History rows are handed to the store in batches: one wake-up of its writer thread (and one
# transaction) per batch instead of per request. Flushed when full, on a timer, and at shutdown
# (RouterService.stop).
_ROWS_BATCH = 256
# Stored model names and error texts are cut to these lengths (characters).
HISTORY_MODEL_MAX = 256
HISTORY_ERROR_MAX = 1024
_ROWS_DELAY = 0.05

_ids = random.Random()  # seeded from os.urandom; request ids need to be unique, not secret
_UUID7_BITS = (0x7 << 76) | (0b10 << 62)  # version 7, RFC 9562 variant


def request_id() -> str:
    """A version 7 UUID (RFC 9562): milliseconds since the epoch, then 74 random bits.

    Time-ordered, so the history table's unique id index grows at its end instead of at a
    random place per row (cheaper for the store's writer, which shares the router's core);
    the random bits come from a seeded PRNG instead of an os.urandom system call.
    """
    ms = int(time.time() * 1000) & 0xFFFF_FFFF_FFFF
    value = (ms << 80) | _UUID7_BITS | (_ids.getrandbits(12) << 64) | _ids.getrandbits(62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def client_headers(
    head: ResponseHead, node_header: tuple[bytes, bytes]
) -> list[tuple[bytes, bytes]]:
    """The node's header fields as the client gets them: hop-by-hop fields (and those its
    `Connection` names), cookies and node-chosen policies dropped; the router's own
    `x-router-node`, `nosniff` and a sandbox CSP added. The body's framing is the router's
    to choose: a length sent beside chunked coding (RFC 9112 6.3: chunked wins) or on a 204 or
    304 is not passed on."""
    if head.chunked or head.status_code in _NO_BODY_STATUSES:
        drop = _DROP_WITH_LENGTH
    else:
        drop = _DROP_RESPONSE_HEADERS
    if head.connection_options:
        drop = drop | head.connection_options
    headers = [(k, v) for k, v in head.headers if k not in drop]
    headers.append(node_header)
    headers += SAFETY_HEADERS
    return headers


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


@dataclass(eq=False)
class _Waiter:
    model: str
    exclude: tuple[str, ...]
    prefix: PromptPrefix | None
    future: asyncio.Future[tuple[str, bool | None]]


@dataclass
class Attempt:
    """What one forwarded request measured."""

    node_id: str | None = None
    status: int = 0
    ttfb_ms: float | None = None
    outcome: str = "error"
    error: str | None = None
    scanner: TailScanner | None = None
    sent_to_client: bool = False
    tried: list[str] = field(default_factory=list)
    prefix: PromptPrefix | None = None
    affinity: bool | None = None  # the pick was a prefix-affinity hit (None: no prefix)


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
        self.waiters: deque[_Waiter] = deque()
        self.via_token = f"1.1 llm-router-{random.getrandbits(48):012x}"
        self._via_header = (b"via", self.via_token.encode("latin-1"))
        self._rows: list[tuple[object, ...]] = []  # in store.REQUEST_COLUMNS order
        self._rows_timer: asyncio.TimerHandle | None = None
        # Header fields built once per node instead of per request.
        self._host_headers: dict[tuple[str, int], tuple[bytes, bytes]] = {}
        self._node_headers: dict[str, tuple[bytes, bytes]] = {}
        registry.listeners.append(lambda _id, _node: self._drain())

    # -- entry point -------------------------------------------------------------------------

    async def forward(
        self,
        request: Request,
        *,
        api: str,
        endpoint: str,
        model: str,
        streaming: bool,
        prefix: PromptPrefix | None = None,
    ) -> Response | None:
        """Forward `request` (body untouched) to a node serving `model` and relay the answer;
        with a `prefix`, the node that holds the prompt's longest prefix is preferred."""
        started = time.perf_counter()
        ts = now_rfc3339()
        att = Attempt(scanner=TailScanner(api), prefix=prefix)
        self.stats.in_flight += 1
        try:
            await self._forward(request, att, api, endpoint, model, streaming, started)
            return None
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
            self._account(request, att, ts, started, api, endpoint, model, streaming)

    async def _forward(
        self,
        request: Request,
        att: Attempt,
        api: str,
        endpoint: str,
        model: str,
        streaming: bool,
        started: float,
    ) -> None:
        self.check_loop(request)
        if self.providers:
            resolved = self.providers.resolve(model)
            if resolved is not None and self.provider_route is not None:
                provider, upstream_model = resolved
                await self.provider_route(
                    self,
                    request,
                    att,
                    api=api,
                    endpoint=endpoint,
                    model=model,
                    streaming=streaming,
                    provider=provider,
                    upstream_model=upstream_model,
                    started=started,
                )
                return
        if not self.balancer.serves(model):
            raise self._not_servable(model)
        deadline = started + self.cfg.request_timeout
        registry = self.registry
        while True:
            node_id, att.affinity = await self._acquire_slot(
                model, tuple(att.tried), deadline, att.prefix
            )
            att.node_id = node_id
            ttfb: float | None = None
            try:
                ttfb = await self._try_node(
                    request, att, node_id, api, endpoint, model, streaming, started, deadline
                )
                return
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
                    raise failure(f"no node could serve model '{model}': {retry.reason}") from None
            finally:
                self.balancer.request_finished(node_id, ttfb)
                if registry.breakers:
                    registry.trial_abandoned(node_id)  # no-op unless a trial got no verdict
                self._drain()

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

    @property
    def via_header(self) -> tuple[bytes, bytes]:
        """This router's `Via` field, for every other request it sends (fan-out, probes)."""
        return self._via_header

    def _via(self, request: Request) -> tuple[bytes, bytes]:
        """`Via` with this router's hop appended (RFC 9110), so a loop back to us is seen."""
        earlier = request.header(b"via")
        if not earlier:
            return self._via_header  # the common case: built once
        return (b"via", f"{earlier}, {self.via_token}".encode("latin-1"))

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
        self,
        request: Request,
        att: Attempt,
        node_id: str,
        api: str,
        endpoint: str,
        model: str,
        streaming: bool,
        started: float,
        deadline: float,
    ) -> float | None:
        node = self.registry.nodes.get(node_id)
        if node is None:
            raise AttemptFailed("node was removed", mark=False)
        host, port = node.ip_address, node.upstream_port
        method, target, body = request.method, request.target, request.body
        translator: ResponseTranslator | None = None
        if api == "ollama" and node.runtime_kind == "openai":
            # Ollama's API on a node that speaks only OpenAI's: translated both ways.
            call = ollama_to_openai(endpoint, request.json_object(), model)
            method, target, body = call.method, call.path, call.body
            translator = ollama_response_translator(
                endpoint, model=model, streaming=streaming, started_ns=int(started * 1e9)
            )
        headers = self._upstream_headers(request, host, port, body)
        if node.relay_auth is not None:
            headers.append(node.relay_auth)  # the agent's relay; the client's own never goes on
        conn, head = await self.send_upstream(host, port, method, target, headers, body, deadline)
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
            node_header = self._node_headers.get(node_id)
            if node_header is None:
                if len(self._node_headers) > 4096:
                    self._node_headers.clear()
                node_header = self._node_headers[node_id] = (b"x-router-node", node_id.encode())
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
            ttfb = await self.relay(
                conn, stream, att, headers, api, chunked, started, deadline, translator
            )
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

    def _upstream_headers(
        self, request: Request, host: str, port: int, body: bytes
    ) -> list[tuple[bytes, bytes]]:
        """The fields a node gets: host, the client's harmless ones, JSON type, length, hops."""
        host_header = self._host_headers.get((host, port))
        if host_header is None:
            if len(self._host_headers) > 4096:
                self._host_headers.clear()
            host_header = self._host_headers[(host, port)] = (b"host", f"{host}:{port}".encode())
        headers = [host_header]
        headers += [(k, v) for k, v in request.headers if k in _FORWARDED_HEADERS]
        if body:
            headers.append(_JSON_CONTENT_TYPE)
        headers.append((b"content-length", b"%d" % len(body)))
        headers.append((b"x-forwarded-for", request.peer.encode()))
        headers.append(self._via(request))
        return headers

    async def send_upstream(
        self,
        host: str,
        port: int,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        deadline: float,
        tls: ssl.SSLContext | None = None,
    ) -> tuple[UpstreamConnection, ResponseHead]:
        """Connect (pooled), send, read the head; one silent retry on a stale pooled socket.
        Failures before the head raise AttemptFailed (connection-level: `mark`)."""
        fresh = False
        while True:
            try:
                conn = await self.pool.acquire(host, port, fresh=fresh, tls=tls)
            except UpstreamConnectError as exc:
                raise AttemptFailed(str(exc)) from None
            try:
                conn.send_request(method, target, headers, body)
                head = await conn.read_head(min(self.cfg.read_timeout, self._timeout(deadline)))
                return conn, head
            except UpstreamBrokenError as exc:
                conn.abort()
                if conn.reused and not conn.got_bytes and not fresh:
                    fresh = True  # the node closed an idle keep-alive socket: not a failure
                    continue
                raise AttemptFailed(str(exc)) from None
            except TimeoutError:
                # Nothing reached the client yet: a hung node is failed over like a dead one.
                conn.abort()
                raise AttemptFailed(
                    f"no response head within {self.cfg.read_timeout:g}s", timeout=True
                ) from None
            except BaseException:
                conn.abort()
                raise

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
        api: str,
        chunked: bool,
        started: float,
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
                    await stream.write(error_event(api, f"upstream node failed: {reason}"))
                    await stream.end()
                else:
                    stream.abort()
                raise _StreamFailed(reason) from None
            if piece is None:
                break
            if ttfb is None:
                ttfb = (time.perf_counter() - started) * 1000.0
                att.ttfb_ms = ttfb
            if translator is not None:
                piece = await self._translate(translator.feed, piece, stream, att, api)
                if not piece:
                    continue
            scanner.feed(piece)
            await stream.write(piece)
        if translator is not None:
            tail = await self._translate(translator.finish, None, stream, att, api)
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
        api: str,
    ) -> bytes:
        """One translator step; an answer it cannot translate ends the stream with an error."""
        try:
            return step() if piece is None else step(piece)
        except TranslationError as exc:
            reason = f"cannot translate the node's answer: {exc.message}"
            att.outcome = "error"
            att.error = reason
            log.warning("event=translation_failed node=%s reason=%r", att.node_id, reason)
            await stream.write(error_event(api, reason))
            await stream.end()
            raise _StreamFailed(reason) from None

    def _timeout(self, deadline: float) -> float:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise UpstreamTimeout("the request took longer than request_timeout")
        return left

    # -- capacity queue ----------------------------------------------------------------------

    def _pick(
        self, model: str, exclude: tuple[str, ...], prefix: PromptPrefix | None
    ) -> tuple[str | None, bool | None]:
        """(node, affinity hit); without a prefix (or PREFIX_AFFINITY off) the plain pick."""
        if prefix is None:
            return self.balancer.pick(model, exclude), None
        return self.balancer.pick_affine(model, prefix.hashes, prefix.anchor, exclude)

    async def _acquire_slot(
        self, model: str, exclude: tuple[str, ...], deadline: float, prefix: PromptPrefix | None
    ) -> tuple[str, bool | None]:
        node_id, affinity = self._pick(model, exclude, prefix)
        if node_id is not None:
            self._picked(node_id)
            return node_id, affinity
        if not self.balancer.serves(model):
            raise self._not_servable(model)
        retry_after = max(1, int(self.cfg.queue_timeout / 4) or 1)
        if len(self.waiters) >= self.cfg.queue_max:
            log.warning("event=queue_full model=%s length=%d", model, len(self.waiters))
            raise NoCapacity(
                f"all nodes serving '{model}' are busy and the queue is full",
                retry_after=retry_after,
            )
        loop = asyncio.get_running_loop()
        waiter = _Waiter(model, exclude, prefix, loop.create_future())
        self.waiters.append(waiter)
        self.stats.queued += 1
        timeout = min(self.cfg.queue_timeout, max(0.0, deadline - time.perf_counter()))
        try:
            await asyncio.wait({waiter.future}, timeout=timeout)
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise
        finally:
            self.stats.queued -= 1
        if waiter.future.done():
            return waiter.future.result()
        self._abandon(waiter)
        log.warning("event=queue_timeout model=%s waited=%.1fs", model, timeout)
        raise NoCapacity(
            f"all nodes serving '{model}' are busy; waited {timeout:g}s in the queue",
            retry_after=retry_after,
        )

    def _picked(self, node_id: str) -> None:
        self.balancer.request_started(node_id)
        if node_id in self.registry.half_open:
            # The one trial request a half-open breaker lets through: nobody else gets the node
            # until it has a verdict.
            self.registry.start_trial(node_id)

    def _abandon(self, waiter: _Waiter) -> None:
        try:
            self.waiters.remove(waiter)
        except ValueError:
            pass
        if waiter.future.done() and not waiter.future.cancelled():
            self.balancer.request_finished(waiter.future.result()[0], None)
            self._drain()
        else:
            waiter.future.cancel()

    def _drain(self) -> None:
        """Give freed slots to waiting requests, oldest first."""
        if not self.waiters:
            return
        for waiter in list(self.waiters):
            if waiter.future.done():
                self.waiters.remove(waiter)
                continue
            node_id, affinity = self._pick(waiter.model, waiter.exclude, waiter.prefix)
            if node_id is not None:
                self._picked(node_id)
                self.waiters.remove(waiter)
                waiter.future.set_result((node_id, affinity))

    # -- accounting --------------------------------------------------------------------------

    def _account(
        self,
        request: Request,
        att: Attempt,
        ts: str,
        started: float,
        api: str,
        endpoint: str,
        model: str,
        streaming: bool,
    ) -> None:
        duration = (time.perf_counter() - started) * 1000.0
        usage = (
            att.scanner.usage() if att.scanner is not None and att.outcome != "rejected" else None
        )
        # Labels and per-model counters only for models some node lists; what a client
        # invents is counted under one label (else every made-up name lives until restart).
        known = self.registry.knows_model(model) or self._provider_lists(model)
        if not known:
            self.stats.unknown_model_requests += 1
        outcome = Outcome(
            request_id=request_id(),
            node_id=att.node_id,
            model=model[:METRIC_LABEL_MAX] if known else OTHER_MODEL,
            endpoint=endpoint,
            status_code=att.status,
            outcome=att.outcome,
            duration_ms=duration,
            ttfb_ms=att.ttfb_ms,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )
        self.stats.record(outcome)
        if att.node_id is not None and att.sent_to_client:
            self.registry.record_result(att.node_id, att.outcome == "ok", duration)
        if not known and att.node_id is None:
            # A name nothing lists, answered by the router itself: counted above
            # (llm_router_unknown_model_requests_total), no row per invented name.
            return
        self._rows.append(
            (
                outcome.request_id,
                ts,
                att.node_id,
                model[:HISTORY_MODEL_MAX],
                endpoint,
                request.method,
                att.status,
                att.outcome,
                round(duration, 3),
                round(att.ttfb_ms, 3) if att.ttfb_ms is not None else None,
                outcome.prompt_tokens,
                outcome.completion_tokens,
                int(streaming),
                request.peer,
                att.error[:HISTORY_ERROR_MAX] if att.error else att.error,
                None if att.affinity is None else int(att.affinity),
            )
        )
        if len(self._rows) >= _ROWS_BATCH:
            self.flush_rows()
        elif self._rows_timer is None:
            self._rows_timer = asyncio.get_running_loop().call_later(_ROWS_DELAY, self.flush_rows)

    def _provider_lists(self, model: str) -> bool:
        """`model` is a configured provider's prefix plus a model that provider lists."""
        if not self.providers:
            return False
        resolved = self.providers.resolve(model)
        return resolved is not None and resolved[1] in resolved[0].models

    def flush_rows(self) -> None:
        """Hand the finished requests' history rows to the store."""
        if self._rows_timer is not None:
            self._rows_timer.cancel()
            self._rows_timer = None
        rows, self._rows = self._rows, []
        add = self.store.add_request_row
        for row in rows:
            add(row)


class _StreamFailed(Exception):
    """The node failed after the client got the head; the client stream was ended."""
