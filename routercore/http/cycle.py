"""One request/response cycle: run the handler, send what it returns, log the access line.

The connection (connection.py) reads a whole request and starts one `RequestCycle` for it; the
cycle never reads from the socket and never decides what comes next on the connection. Its
collaborators are passed in (as uvicorn's `RequestResponseCycle`): the connection handle
`CycleChannel`, the server's shared state, and the request. An upgrade hands the socket's
input to a `WebSocket` through `CycleChannel.begin_websocket`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from routercore.http.messages import Request, Response, WebSocketAccept
from routercore.http.response import ResponseChannel, ResponseWriter
from routercore.http.state import ServerState
from routercore.http.websocket import WebSocket, WebSocketHost
from routercore.http.wire import Head

# The server's logger, as before the split: log settings and readers need not know the rooms.
log = logging.getLogger("routercore.http.server")


class CycleChannel(ResponseChannel, WebSocketHost, Protocol):
    """What a cycle needs from its connection: a response channel, a WebSocket host, the
    switch that sends the socket's input to a WebSocket, and the call that says it is done."""

    def begin_websocket(self, ws: WebSocket) -> None: ...

    def cycle_done(self, *, completed: bool) -> None:
        """The cycle is over (`completed`: not cancelled): the connection may read the next."""


def request_from_head(head: Head, body: bytes, peer: str) -> Request:
    """The handler's view of a parsed head (and its body, once read)."""
    try:
        target = head.target.decode("ascii")
    except UnicodeDecodeError:
        target = head.target.decode("latin-1")
    return Request(
        method=head.method.decode("ascii", "replace"),
        target=target,
        headers=list(head.headers),
        body=body,
        peer=peer,
    )


class RequestCycle:
    """One request: its handler, its answer (a `ResponseWriter`), its access line."""

    __slots__ = ("conn", "request", "state", "stream", "upgraded")

    def __init__(self, conn: CycleChannel, state: ServerState, request: Request) -> None:
        self.conn = conn
        self.state = state
        self.request = request
        self.stream = ResponseWriter(conn, request)
        self.upgraded = False

    async def run(self) -> None:
        request, stream = self.request, self.stream
        started = time.perf_counter()
        request.stream = stream
        completed = False
        try:
            await self._handle()
            completed = True
        except asyncio.CancelledError:
            # The client went away, or shutdown cut us: nothing more can reach the client.
            if not self.upgraded:
                stream.abort()
            if not stream.status:
                stream.status = 499
            raise
        finally:
            self.state.access_log.record(
                request.method,
                request.path,
                stream.status,
                started,
                node=stream.node,
                peer=self.conn.peer,
                aborted=stream.aborted,
            )
            request.stream = None  # the pair is a reference cycle: break it here
            self.conn.cycle_done(completed=completed)

    async def _handle(self) -> None:
        request, stream, state = self.request, self.stream, self.state
        outcome: Response | WebSocketAccept | None
        try:
            outcome = await state.dispatch(request)
        except ConnectionError as exc:
            # A write to a client that has gone: not a server fault.
            log.info("event=client_gone path=%s reason=%r", request.path, str(exc))
            stream.abort()
            return
        except Exception:
            log.exception("event=handler_crashed method=%s path=%s", request.method, request.path)
            if stream.started:
                stream.abort()  # half a response is out: cutting is the only honest signal
                return
            outcome = state.on_error(request, 500, "internal server error")
        try:
            if isinstance(outcome, WebSocketAccept):
                await self._upgrade(outcome)
            elif isinstance(outcome, Response):
                if stream.started:
                    log.error("event=handler_returned_after_streaming path=%s", request.path)
                    stream.abort()
                else:
                    await stream.send_whole(outcome)
            elif not stream.finished and not stream.aborted:
                if stream.started:
                    await stream.end()
                else:
                    await stream.send_whole(state.on_error(request, 500, "no response"))
        except ConnectionError:
            stream.abort()
        except Exception:
            # An answer h11 refuses to send (bad header bytes, a 1xx status, ...).
            log.exception("event=response_failed method=%s path=%s", request.method, request.path)
            if stream.head_sent or not self.conn.wire.can_start_response:
                stream.abort()
            else:
                await stream.send_whole(state.on_error(request, 500, "internal server error"))

    async def _upgrade(self, accept: WebSocketAccept) -> None:
        conn, request, stream = self.conn, self.request, self.stream
        ws = WebSocket(conn, request)
        trailing = conn.wire.trailing_data()
        try:
            ws.accept_handshake()
        except Exception as exc:
            log.info("event=ws_bad_upgrade peer=%s reason=%r", conn.peer, str(exc))
            conn.close_after_response = True
            await stream.send_whole(
                self.state.on_error(request, 400, "not a valid WebSocket upgrade")
            )
            return
        self.upgraded = True
        conn.begin_websocket(ws)
        stream.status = 101
        stream.started = stream.finished = True
        if trailing:
            ws.feed(trailing)
        try:
            await accept.session(ws)
        except ConnectionError:
            pass
        except Exception:
            log.exception("event=ws_session_crashed path=%s", request.path)
            ws.close(1011)
        finally:
            ws.close(1001 if self.state.draining else 1000)
            conn.close()
