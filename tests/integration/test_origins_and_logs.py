"""Cross-site requests against open defaults (Origin, CORS) and what reaches the router's log."""

from __future__ import annotations

import socket
from typing import Any

from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN, http
from tests.support.websocket import upgrade_request

EVIL = "http://evil.example"
APP = "https://app.example"
NODE = {"machine_name": "box", "runtime_port": 11434, "models": ["llama3"]}
CHAT = {"model": "nobody-serves-this", "messages": [{"role": "user", "content": "hi"}]}


def ws_status(port: int, origin: str | None) -> int:
    """The status a WebSocket upgrade of /ws/dashboard gets, sent as a browser would."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        extra = f"Origin: {origin}\r\n" if origin else ""
        s.sendall(upgrade_request(f"127.0.0.1:{port}", extra))
        data = b""
        while b"\r\n" not in data:
            piece = s.recv(4096)
            assert piece, "closed without an answer"
            data += piece
        return int(data.split()[1])


# -- 10. cross-site requests -----------------------------------------------------------------------


def test_a_foreign_page_cannot_register_proxy_or_read_the_feed(router: Any) -> None:
    """Open defaults: what a page at another origin could make a visitor's browser do."""
    origin = {"Origin": EVIL}
    status, _, body = http("POST", router.url + "/api/agents/register", NODE, headers=origin)
    assert status == 403 and "evil.example" in body["error"]
    assert router.agents() == []
    status, _, body = http("POST", router.url + "/v1/chat/completions", CHAT, headers=origin)
    assert status == 403
    assert body["error"]["code"] == "origin_not_allowed"
    assert body["error"]["type"] == "permission_error"
    assert http("POST", router.url + "/api/chat", CHAT, headers=origin)[0] == 403
    assert http("GET", router.url + "/v1/models", headers=origin)[0] == 403
    assert ws_status(router.port, EVIL) == 403
    # A preflight from it is refused as well: the browser will not send the real request.
    preflight = {"Origin": EVIL, "Access-Control-Request-Method": "POST"}
    status, headers, _ = http("OPTIONS", router.url + "/v1/chat/completions", headers=preflight)
    assert status == 403 and "access-control-allow-origin" not in headers


def test_clients_without_an_origin_are_unaffected(router: Any) -> None:
    """curl and the SDKs send no Origin."""
    assert http("POST", router.url + "/api/agents/register", NODE)[0] == 201
    status, _, body = http("POST", router.url + "/v1/chat/completions", CHAT)
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert ws_status(router.port, None) == 101


def test_the_dashboard_at_the_routers_own_origin_keeps_working(router: Any) -> None:
    own = {"Origin": f"http://127.0.0.1:{router.port}"}
    status, _, reg = http("POST", router.url + "/api/agents/register", NODE, headers=own)
    assert status == 201
    path = f"/api/agents/{reg['agent_id']}"
    patch = {"custom_name": "renamed"}
    assert http("PATCH", router.url + path, patch, token=ADMIN_TOKEN, headers=own)[0] == 200
    assert http("GET", router.url + "/api/dashboard/overview", headers=own)[0] == 200
    assert ws_status(router.port, own["Origin"]) == 101
    # Behind a reverse proxy that rewrites Host, the browser's host comes as X-Forwarded-Host.
    proxied = {"Origin": "https://router.example", "X-Forwarded-Host": "router.example"}
    assert http("POST", router.url + "/api/agents/register", NODE, headers=proxied)[0] == 200
    # Same-origin answers need no CORS fields.
    headers = http("GET", router.url + "/api/agents", headers=own)[1]
    assert "access-control-allow-origin" not in headers


def test_allow_listed_origins_get_cors_and_preflights(router_factory: Any) -> None:
    router = router_factory(cors_origins=(APP, "http://localhost:3000"))
    preflight = {
        "Origin": APP,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    status, headers, _ = http("OPTIONS", router.url + "/v1/chat/completions", headers=preflight)
    assert status == 204
    assert headers["access-control-allow-origin"] == APP
    assert "POST" in headers["access-control-allow-methods"]
    assert headers["access-control-allow-headers"] == "authorization, content-type"
    assert "origin" in headers["vary"].lower()
    # The real request is served and readable by the page.
    status, headers, body = http(
        "POST", router.url + "/v1/chat/completions", CHAT, headers={"Origin": APP}
    )
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert headers["access-control-allow-origin"] == APP
    assert "x-router-node" in headers["access-control-expose-headers"]
    status, headers, _ = http("GET", router.url + "/v1/models", headers={"Origin": APP + "/"})
    assert status == 200 and headers["access-control-allow-origin"] == APP + "/"
    # Others are still refused.
    assert http("GET", router.url + "/v1/models", headers={"Origin": EVIL})[0] == 403
    assert http("GET", router.url + "/v1/models", headers={"Origin": "null"})[0] == 403


def test_a_star_allows_every_origin(router_factory: Any) -> None:
    router = router_factory(cors_origins=("*",))
    status, headers, _ = http("GET", router.url + "/v1/models", headers={"Origin": EVIL})
    assert status == 200 and headers["access-control-allow-origin"] == EVIL


def test_a_foreign_origin_with_a_body_is_refused_before_the_body(router: Any) -> None:
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as s:
        s.sendall(
            f"POST /api/agents/register HTTP/1.1\r\nHost: 127.0.0.1:{router.port}\r\n"
            f"Origin: {EVIL}\r\nContent-Length: 1000000\r\n\r\n".encode()
        )
        data = s.recv(65536)  # no body was sent: the answer cannot wait for it
        assert data.startswith(b"HTTP/1.1 403 ")


# -- 9. logs ---------------------------------------------------------------------------------------


def test_secrets_are_masked_and_line_breaks_escaped_in_the_log(router_process: Any) -> None:
    proc = router_process(env={"LLM_ROUTER_API_KEYS": "sk-configuredkey123"})
    attacks = [
        b"GET /v1/models?token=SECRETQUERY\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer SECRETBEARER\x00\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        b"GET /api/tags HTTP/1.1\r\nHost: x\r\nCookie: password=SECRETPAIR\x00\r\n\r\n",
    ]
    for raw in attacks:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as s:
            s.sendall(raw)
            assert s.recv(65536).startswith(b"HTTP/1.1 400 ")
    forged = "box\n2026-01-01 00:00:00,000 WARNING routercore.service FORGED\r\u2028x"
    status, _, _ = http("POST", proc.url + "/api/agents/register", {**NODE, "machine_name": forged})
    log_path = proc.log_path
    assert log_path is not None

    def logged() -> str | None:
        text = log_path.read_text(encoding="utf-8", errors="replace")
        return text if text.count("illegal") >= 3 else None

    text = wait_until(logged, message="the three malformed requests logged")
    if status == 201:  # (a stricter registration may refuse the name instead: nothing logged)
        text = wait_until(
            lambda: (t := log_path.read_text(encoding="utf-8")) and "node_registered" in t and t,
            message="the registration logged",
        )
        assert "machine=box\\x0a2026-01-01" in text and "\\x0d\\u2028x" in text
    for secret in ("SECRETQUERY", "SECRETBEARER", "SECRETPAIR", "sk-configuredkey123"):
        assert secret not in text
    assert "***" in text
    assert not any(line.startswith("2026-01-01") for line in text.splitlines())
    assert "FORGED" not in text or status == 201
