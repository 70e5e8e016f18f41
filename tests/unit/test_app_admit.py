"""App.admit without sockets: the route table, the auth levels and the origin check as the
server asks them from a request's head (routercore.app).

The exact-path lookup builds nothing per request, so these pin what it must still give: the
route, no `{param}` values, HEAD served by GET, and the 404/405/preflight answers.
"""

from __future__ import annotations

import orjson

from routercore.app import App, AuthPolicy
from routercore.auth import hash_token
from routercore.http.messages import Request, Response
from routercore.origins import OriginPolicy

ADMIN = "admin-secret"
KEY = "sk-one"


async def handler(request: Request) -> Response:
    return Response.json({"ok": True})


def make_app(*, api_keys: tuple[str, ...] = ()) -> App:
    auth = AuthPolicy(
        admin_token_hash=hash_token(ADMIN),
        registration_token="",
        api_keys=api_keys,
        open_reads=False,
    )
    app = App(auth, OriginPolicy(("https://ui.example",)))
    app.add("POST", "/v1/chat/completions", handler, auth="api")
    app.add("GET", "/v1/models", handler, auth="api")
    app.add("GET", "/v1/models/{id}", handler, auth="api")
    app.add("DELETE", "/api/agents/{id}", handler, auth="admin")
    return app


def request(method: str, target: str, *headers: tuple[bytes, bytes]) -> Request:
    return Request(method, target, [(b"host", b"router:8080"), *headers], b"", "127.0.0.1")


def error(resp: Response | None) -> object:
    assert resp is not None
    return orjson.loads(resp.body)["error"]


def test_an_exact_path_is_admitted_with_its_route_and_no_params() -> None:
    app = make_app()
    req = request("POST", "/v1/chat/completions?x=1")
    assert app.admit(req) is None
    assert req.route is app.exact[("POST", "/v1/chat/completions")]
    assert req.params == {}


def test_a_pattern_path_gets_its_params_and_head_is_served_by_get() -> None:
    app = make_app()
    req = request("HEAD", "/v1/models/llama3")
    assert app.admit(req) is None
    assert req.route.pattern == "/v1/models/{id}" and req.params == {"id": "llama3"}
    other = request("GET", "/v1/models/qwen")
    assert app.admit(other) is None and other.params == {"id": "qwen"}
    assert req.params == {"id": "llama3"}  # each request its own values


def test_unknown_paths_and_methods_answer_404_and_405_with_allow() -> None:
    app = make_app()
    missing = app.admit(request("GET", "/v1/nothing"))
    assert missing is not None and missing.status == 404
    assert error(missing) == {
        "message": "no such endpoint: /v1/nothing",
        "type": "invalid_request_error",
        "code": "not_found",
    }
    wrong = app.admit(request("PUT", "/v1/models/x"))
    assert wrong is not None and wrong.status == 405
    assert ("allow", "GET") in wrong.headers
    exact_wrong = app.admit(request("GET", "/v1/chat/completions"))
    assert exact_wrong is not None and ("allow", "POST") in exact_wrong.headers


def test_the_api_level_without_keys_is_open_and_with_keys_needs_one() -> None:
    assert make_app().admit(request("POST", "/v1/chat/completions")) is None
    app = make_app(api_keys=(KEY,))
    refused = app.admit(request("POST", "/v1/chat/completions"))
    assert refused is not None and refused.status == 401
    assert ("www-authenticate", 'Bearer realm="llm-router"') in refused.headers
    for token in (KEY, ADMIN):
        auth = (b"authorization", f"Bearer {token}".encode())
        assert app.admit(request("POST", "/v1/chat/completions", auth)) is None
    wrong = (b"authorization", b"Bearer sk-wrong")
    assert app.admit(request("POST", "/v1/chat/completions", wrong)) is not None


def test_other_levels_still_apply_after_the_api_level() -> None:
    app = make_app()
    refused = app.admit(request("DELETE", "/api/agents/a"))
    assert refused is not None and refused.status == 401
    admin = (b"authorization", f"Bearer {ADMIN}".encode())
    assert app.admit(request("DELETE", "/api/agents/a", admin)) is None


def test_origins_refused_listed_and_preflighted() -> None:
    app = make_app()
    foreign = app.admit(request("POST", "/v1/chat/completions", (b"origin", b"https://evil")))
    assert foreign is not None and foreign.status == 403
    listed = request("POST", "/v1/chat/completions", (b"origin", b"https://ui.example"))
    assert app.admit(listed) is None and listed.cors_origin == "https://ui.example"
    preflight = app.admit(request("OPTIONS", "/v1/models/x", (b"origin", b"https://ui.example")))
    assert preflight is not None and preflight.status == 204
    assert ("access-control-allow-methods", "GET, OPTIONS") in preflight.headers
