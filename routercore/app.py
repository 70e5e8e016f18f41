"""Route table, auth check and the one place errors become each API's error format."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from routercore.auth import bearer, secret_equals, token_matches
from routercore.errors import RouterError, Unauthorized
from routercore.http.messages import Request, Response, WebSocketAccept

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


def error_response(request: Request | None, status: int, message: str) -> Response:
    return error_body(request.path if request else "", status, message)


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
        if level in ("none", "agent"):
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


@dataclass
class Route:
    method: str
    pattern: str
    handler: Handler
    auth: Auth
    regex: re.Pattern[str] | None


class App:
    """Maps (method, path) to handlers; exact paths first, then `{param}` patterns in order."""

    def __init__(self, auth: AuthPolicy) -> None:
        self.auth = auth
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

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], set[str]]:
        lookup = "GET" if method == "HEAD" else method
        route = self.exact.get((lookup, path))
        if route is not None:
            return route, {}, set()
        allowed = set(self.paths.get(path, ()))
        for route in self.patterns:
            assert route.regex is not None
            m = route.regex.match(path)
            if m is None:
                continue
            if route.method == lookup:
                return route, m.groupdict(), set()
            allowed.add(route.method)
        return None, {}, allowed

    async def dispatch(self, request: Request) -> Response | WebSocketAccept | None:
        route, params, allowed = self.match(request.method, request.path)
        if route is None:
            if allowed:
                resp = error_body(request.path, 405, f"method {request.method} not allowed")
                resp.headers.append(("allow", ", ".join(sorted(allowed))))
                return resp
            return error_body(
                request.path, 404, f"no such endpoint: {request.path}", code="not_found"
            )
        request.params = params
        try:
            self.auth.check(request, route.auth)
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
