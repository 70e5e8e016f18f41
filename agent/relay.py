"""The agent's relay: the runtime listens on loopback only, the router reaches it through here.

Without it every node's runtime has to listen on the LAN with no authentication, and anyone on
the network can skip the router's API keys, queue and accounting by calling a node directly.
With it the runtime stays on 127.0.0.1 and the only way in from outside is this port, which
answers nothing but requests carrying the relay's secret as a bearer token (the agent makes
the secret at start and hands it to its routers when it registers).

Both sides reuse the router's own HTTP code rather than a second proxy: the router's side is
`routercore.http.server` (limits, timeouts, write flow control), the runtime's side is
`routercore.http.upstream` (keep-alive pool, a reader that pauses the runtime's socket while the
router is not reading). So a stream is relayed piece by piece as the runtime sends it, a slow
router slows the runtime down instead of filling the agent's memory, and when the router hangs
up (its client went away) the server cancels the handler and the runtime's connection is cut.
When the runtime cannot be reached the relay cuts the router's connection without an answer,
as the runtime's closed port would: an HTTP error from the relay would tell the router's
health checks that the node is up.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import sys
from urllib.parse import urlsplit

from routercore.auth import bearer, secret_equals
from routercore.http.messages import Request, Response
from routercore.http.response_parser import HOP_BY_HOP, ResponseHead
from routercore.http.server import HTTPServer, ServerLimits
from routercore.http.upstream import (
    UpstreamBrokenError,
    UpstreamConnectError,
    UpstreamConnection,
    UpstreamPool,
    UpstreamRequest,
)

log = logging.getLogger(__name__)

# What the router sends that must not reach the runtime: the relay's secret, and the framing
# and connection headers this hop sets itself.
_DROP_REQUEST = HOP_BY_HOP | {b"authorization", b"host", b"content-length"}
_DROP_RESPONSE = HOP_BY_HOP | {b"server"}


def new_relay_token() -> str:
    """A fresh relay secret (256 random bits, URL-safe, fits the router's token check)."""
    return "rly_" + secrets.token_urlsafe(32)


def runtime_address(runtime_url: str) -> tuple[str, int]:
    """(host, port) of a plain-HTTP runtime URL; `localhost` means 127.0.0.1."""
    parts = urlsplit(runtime_url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"the relay needs an http:// runtime URL, not {runtime_url!r}")
    host = parts.hostname
    if host == "localhost":
        host = "127.0.0.1"
    return host, parts.port or 80


class Relay:
    """One listening port in front of one runtime. `start`, then `stop`; `handle` decides."""

    def __init__(
        self,
        runtime_url: str,
        token: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        max_body_bytes: int = 32 * 1024 * 1024,
        max_idle: int = 16,
    ) -> None:
        self.token = token
        self.read_timeout = read_timeout
        self.set_runtime(runtime_url)
        self.pool = UpstreamPool(connect_timeout=connect_timeout, max_idle=max_idle)
        limits = ServerLimits(max_body_bytes=max_body_bytes, access_log=False)
        self.server = HTTPServer(self.handle, limits)
        self.address: tuple[str, int] | None = None
        self.refused = 0  # requests answered 401 (shown in the log, counted for tests)

    def set_runtime(self, runtime_url: str) -> None:
        """Point the relay at another runtime (the settings window changed the URL)."""
        self.runtime = runtime_address(runtime_url)
        self._host_header = (b"host", f"{self.runtime[0]}:{self.runtime[1]}".encode())

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self.address = await self.server.start(host, port)
        log.info(
            "relay_listening address=%s:%s runtime=%s:%s",
            self.address[0],
            self.address[1],
            *self.runtime,
        )
        return self.address

    async def stop(self, grace: float = 2.0) -> None:
        await self.server.shutdown(grace)
        self.pool.close()

    # -- one request ---------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        given = bearer(request)
        return given is not None and secret_equals(given, self.token)

    async def handle(self, request: Request) -> Response | None:
        if not self._authorized(request):
            self.refused += 1
            log.warning(
                "relay_refused peer=%s method=%s path=%s reason=%s",
                request.peer,
                request.method,
                request.path[:200],
                "wrong token" if request.header(b"authorization") else "no token",
            )
            return Response.json(
                {"error": "this port is the LLM Router agent's relay: it needs the relay token"},
                401,
                headers=[("www-authenticate", 'Bearer realm="llm-router-relay"')],
            )
        headers = [self._host_header]
        headers += [(k, v) for k, v in request.headers if k not in _DROP_REQUEST]
        headers.append((b"content-length", b"%d" % len(request.body)))
        req = UpstreamRequest(*self.runtime, request.method, request.target, headers, request.body)
        try:
            # One silent retry on a keep-alive connection the runtime closed while idle.
            conn, head = await self.pool.request(req, timeout=self.read_timeout)
        except (UpstreamConnectError, UpstreamBrokenError) as exc:
            # Be transparent: the router must see what it would see talking to the runtime
            # itself (a connection that ends without an answer), so its node health rules
            # hold. An answer of our own (a 502) would tell it the node is up.
            log.warning("relay_runtime_unreachable path=%s reason=%s", request.path[:200], exc)
            assert request.stream is not None
            request.stream.abort()
            return None
        except TimeoutError:
            return self._failed(
                request, 504, f"the runtime sent no answer within {self.read_timeout:g}s"
            )
        try:
            await self._relay(request, conn, head)
        except BaseException:
            # The router went away (the server cancelled us) or the runtime broke mid-body:
            # cut the runtime's connection so it stops generating.
            conn.abort()
            raise
        self.pool.release(conn)
        return None

    async def _relay(self, request: Request, conn: UpstreamConnection, head: ResponseHead) -> None:
        """Copy the answer piece by piece; the router's drain paces the runtime."""
        stream = request.stream
        assert stream is not None
        await stream.start(
            head.status_code, [(k, v) for k, v in head.headers if k not in _DROP_RESPONSE]
        )
        while True:
            try:
                piece = await conn.read_body(self.read_timeout)
            except (TimeoutError, UpstreamBrokenError) as exc:
                log.warning(
                    "relay_stream_failed path=%s reason=%s",
                    request.path[:200],
                    str(exc) or "runtime stopped sending",
                )
                stream.abort()  # half an answer is out: cutting is the honest signal
                raise ConnectionResetError("runtime stream failed") from None
            if piece is None:
                break
            await stream.write(piece)
        await stream.end()

    def _failed(self, request: Request, status: int, message: str) -> Response:
        log.warning("relay_upstream_failed path=%s status=%d reason=%s", request.path, status,
                    message)  # fmt: skip
        return Response.json({"error": f"relay: {message}"}, status)


# -- `python -m agent.relay`: the relay alone (the benchmark measures it this way) ----------------


async def _serve(args: argparse.Namespace) -> None:
    relay = Relay(args.runtime_url, args.token)
    host, port = await relay.start(args.host, args.port)
    print(f"relay listening on http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        await relay.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent.relay",
        description="Only the agent's relay (for measurements); the agent runs it with --relay.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--runtime-url", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
