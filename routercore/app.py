"""Route table, auth and origin checks, and the one place errors become each API's error format.

A request is admitted (route, origin, credentials) from its head: the server asks before it
reads a body (`head_check`), so a refusal never costs the body; dispatch admits the rest.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Literal

from routercore.auth import bearer, secret_equals, token_matches
from routercore.errors import RouterError, Unauthorized
from routercore.http.messages import Request, Response, WebSocketAccept
from routercore.origins import LISTED, OriginPolicy

log = logging.getLogger("routercore.app")

Handler = Callable[[Request], Awaitable["Response | WebSocketAccept | None"]]
Auth = Literal["none", "read", "admin", "api", "register", "agent"]


def error_body(
    path: str, status: int, message: str, *, code: str | None = None, error_type: str | None = None
) -> Response:
    """CONTRACT error shapes: OpenAI style under /v1, `{"error": message}` elsewhere."""
    if path.startswith("/v1/") or path == "/v1":
        etype = error_type or ("invalid_request_error" if status < 500 else "server_error")
        return Response.json({"error": {"message": message, "type": etype, "code": code}}, status)
    return Response.json({"error": message}, status)


# Codes for the errors the HTTP server answers itself (limits, framing), so that /v1 clients
# get a `code` as they do for the handlers' errors (the same 413 says payload_too_large both ways).
_SERVER_ERROR_CODES = {
    400: "invalid_request",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    431: "headers_too_large",
    500: "internal_error",
    503: "server_busy",
    505: "http_version_not_supported",
}


def error_response(request: Request | None, status: int, message: str) -> Response:
    """An error the HTTP server answers itself (before or instead of a handler)."""
    path = request.path if request else ""
    return error_body(path, status, message, code=_SERVER_ERROR_CODES.get(status))


def from_exception(request: Request, exc: RouterError) -> Response:
    resp = error_body(
        request.path, exc.status, exc.message, code=exc.code, error_type=exc.error_type
    )
    resp.headers.extend(exc.headers)
    if exc.status == 401:
        resp.headers.append(("www-authenticate", 'Bearer realm="llm-router"'))
    return resp


class AuthPolicy:
    """Who may call what: admin token, registration token, API keys, open reads."""

    def __init__(
        self,
        *,
        admin_token_hash: str,
        registration_token: str,
        api_keys: tuple[str, ...],
        open_reads: bool,
    ) -> None:
        self.admin_token_hash = admin_token_hash
        self.registration_token = registration_token
        self.api_keys = api_keys
        self.open_reads = open_reads
        self.extra_key_check: Callable[[str], bool] | None = None

    def is_admin(self, request: Request) -> bool:
        token = bearer(request)
        return token is not None and token_matches(token, self.admin_token_hash)

    def check(self, request: Request, level: Auth) -> None:
        # The inference endpoints' level first: it is asked on nearly every request.
        if level == "api":
            if not self.api_keys and self.extra_key_check is None:
                return
            token = bearer(request)
            if token is not None:
                if any(secret_equals(token, key) for key in self.api_keys):
                    return
                if self.extra_key_check is not None and self.extra_key_check(token):
                    return
                if token_matches(token, self.admin_token_hash):
                    return
            raise Unauthorized("missing or invalid API key (Authorization: Bearer <key>)")
        if level == "none":
            return
        if level == "agent":
            # The token is checked against the node named in the body; without one the body
            # need not be read at all.
            if bearer(request) is None:
                raise Unauthorized("invalid agent token")
            return
        if level == "read":
            if self.open_reads or self.is_admin(request):
                return
            raise Unauthorized("this endpoint needs the admin token (Authorization: Bearer)")
        if level == "admin":
            if not self.is_admin(request):
                raise Unauthorized("this endpoint needs the admin token (Authorization: Bearer)")
            return
        if level == "register":
            if not self.registration_token:
                return
            token = bearer(request)
            if token is None or not secret_equals(token, self.registration_token):
                raise Unauthorized("registration needs a valid registration token")
            return


_NO_METHODS: frozenset[str] = frozenset()  # a matched route: no "allowed methods" to list


@dataclass
class Route:
    method: str
    pattern: str
    handler: Handler
    auth: Auth
    regex: re.Pattern[str] | None


class App:
    """Maps (method, path) to handlers; exact paths first, then `{param}` patterns in order."""

    def __init__(self, auth: AuthPolicy, origins: OriginPolicy | None = None) -> None:
        self.auth = auth
        self.origins = origins or OriginPolicy(())
        self.exact: dict[tuple[str, str], Route] = {}
        self.patterns: list[Route] = []
        self.paths: dict[str, set[str]] = {}

    def add(self, method: str, pattern: str, handler: Handler, auth: Auth = "none") -> None:
        if "{" in pattern:
            regex = re.compile(
                "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(pattern)) + "$"
            )
            self.patterns.append(Route(method, pattern, handler, auth, regex))
        else:
            self.exact[(method, pattern)] = Route(method, pattern, handler, auth, None)
        self.paths.setdefault(pattern, set()).add(method)

    def match(
        self, method: str, path: str
    ) -> tuple[Route | None, dict[str, str] | None, AbstractSet[str]]:
        """(route, its `{param}` values or None, the methods the path allows when no route).

        An exact path is one dict lookup that builds nothing: the case of nearly every request.
        """
        lookup = "GET" if method == "HEAD" else method
        route = self.exact.get((lookup, path))
        if route is not None:
            return route, None, _NO_METHODS
        allowed = set(self.paths.get(path, ()))
        for route in self.patterns:
            assert route.regex is not None
            m = route.regex.match(path)
            if m is None:
                continue
            if route.method == lookup:
                return route, m.groupdict(), _NO_METHODS
            allowed.add(route.method)
        return None, None, allowed

    def admit(self, request: Request) -> Response | None:
        """Route, origin and credentials, from the head alone; sets `request.route`.

        The server asks this as its `head_check`, before a body is read (None to read it,
        else the refusal); `dispatch` asks it for a request that did not come that way."""
        route, params, allowed = self.match(request.method, request.path)
        origin = request.header(b"origin")
        if origin is not None:
            verdict = self.origins.verdict(
                origin, request.header(b"host"), request.header(b"x-forwarded-host")
            )
            if verdict is None:
                log.info(
                    "event=origin_refused origin=%r method=%s path=%s",
                    origin,
                    request.method,
                    request.path,
                )
                return error_body(
                    request.path,
                    403,
                    f"requests from the web origin {origin!r} are not allowed "
                    "(allow it with LLM_ROUTER_CORS_ORIGINS)",
                    code="origin_not_allowed",
                    error_type="permission_error",
                )
            if verdict == LISTED:
                request.cors_origin = origin
            if route is None and allowed and request.method == "OPTIONS":
                request.cors_origin = origin  # the server adds the allow-origin fields
                return _preflight(request, allowed)
        if route is None:
            if allowed:
                resp = error_body(request.path, 405, f"method {request.method} not allowed")
                resp.headers.append(("allow", ", ".join(sorted(allowed))))
                return resp
            return error_body(
                request.path, 404, f"no such endpoint: {request.path}", code="not_found"
            )
        try:
            self.auth.check(request, route.auth)
        except RouterError as exc:
            return from_exception(request, exc)
        if params is not None:
            request.params = params
        request.route = route
        return None

    head_check = admit

    async def dispatch(self, request: Request) -> Response | WebSocketAccept | None:
        route = request.route
        if route is None:
            refusal = self.admit(request)
            if refusal is not None:
                return refusal
            route = request.route
        try:
            return await route.handler(request)
        except RouterError as exc:
            if exc.status >= 500:
                log.warning(
                    "event=request_failed path=%s status=%s reason=%r",
                    request.path,
                    exc.status,
                    exc.message,
                )
            if request.stream is not None and request.stream.client_gone:
                return None
            return from_exception(request, exc)


def _preflight(request: Request, allowed: AbstractSet[str]) -> Response:
    """The CORS preflight answer for an admitted origin."""
    methods = sorted(allowed | {"OPTIONS"})
    asked = request.header(b"access-control-request-headers")
    return Response(
        204,
        headers=[
            ("access-control-allow-methods", ", ".join(methods)),
            ("access-control-allow-headers", asked or "authorization, content-type"),
            ("access-control-max-age", "600"),
        ],
    )
