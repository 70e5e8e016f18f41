"""Fuzz the router's JSON APIs with random JSON values, wrong types, huge numbers and unicode.

Every answer must be 2xx/4xx/5xx in the endpoint's error format (`/v1/*`: {"error": {message,
type, code}}, elsewhere {"error": "..."}), no ERROR may be logged (a handler crash logs one),
and the router must keep answering `GET /healthz`. `FUZZ_EXAMPLES` sets cases per endpoint.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routercore.http.json_limits import MAX_CONTAINERS, MAX_VALUES
from tests.support.logs import ErrorLog
from tests.support.routers import ADMIN_TOKEN

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
# long runs (FUZZ_EXAMPLES=20000) must not hit the suite's default 120 s per-test timeout
TIMEOUT = max(120, EXAMPLES // 5)

FIELDS = {
    "register": [
        "machine_name", "ip_address", "runtime_port", "runtime_version", "agent_version",
        "gpu_devices", "models", "max_concurrency", "system",
    ],
    "health": [
        "agent_id", "cpu_usage", "memory_usage", "gpu_usage", "gpu_memory_usage",
        "active_requests", "models", "runtime_up",
    ],
    "patch": ["custom_name", "enabled", "max_concurrency", "tags", "notes"],
    "inference": [
        "model", "stream", "messages", "prompt", "input", "options", "max_tokens", "temperature",
    ],
}  # fmt: skip

ENDPOINTS = {
    "register": ("POST", "/api/agents/register", "register"),
    "health": ("POST", "/api/health", "health"),
    "patch": ("PATCH", "/api/agents/{id}", "patch"),
    "openai_chat": ("POST", "/v1/chat/completions", "inference"),
    "openai_completions": ("POST", "/v1/completions", "inference"),
    "ollama_chat": ("POST", "/api/chat", "inference"),
    "ollama_generate": ("POST", "/api/generate", "inference"),
}

TOKENS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "register": lambda agent: None,
    "health": lambda agent: str(agent["agent_token"]),
    "patch": lambda agent: ADMIN_TOKEN,
    "inference": lambda agent: None,
}

# -- values --------------------------------------------------------------------------------------

edge_numbers = st.sampled_from(
    [0, -1, 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, -(10**30), 10**400,
     1e308, -1e308, 5e-324, -0.0, 0.5, 100.0000001, 101, 65535, 65536, 99.99]
)  # fmt: skip
unicode_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["", " ", "llama3", "\u202egnp.exe", "\U0001f999\u200d", "\x00", "a\nb", "\ud800",
         "x" * 5000, "../../etc/passwd", "' OR 1=1 --", "<script>", "\ufeff", "NaN"]
    ),
)  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), edge_numbers, st.floats(), unicode_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(unicode_text, inner, max_size=5),
    max_leaves=20,
)


nested_objects = st.dictionaries(
    st.sampled_from(["model", "count", "memory_bytes", "os", "cpu_model", "cpu_count"])
    | unicode_text,
    st.one_of(st.integers(0, 1024), st.text(max_size=20), st.none(), json_values),
    max_size=4,
)


def dumps(value: Any) -> bytes:
    """JSON text (Python's json lets NaN/Infinity and lone surrogates through: good cases)."""
    return json.dumps(value).encode()


@st.composite
def json_bomb(draw: st.DrawFn) -> bytes:
    """Many arrays/objects or values, just under or over json_limits' bounds, bare or inside a
    field the router reads past."""
    element = draw(st.sampled_from([b"[]", b"{}", b"[[]]", b"0", b'""', b"1.5", b"null"]))
    containers = element.startswith((b"[", b"{"))
    bound = MAX_CONTAINERS if containers else MAX_VALUES
    count = draw(st.sampled_from([bound - 10, bound + 1, bound + 1000]))
    if element == b"[[]]":
        count //= 2
    bomb = b"[" + b",".join([element] * count) + b"]"
    if draw(st.booleans()):
        return bomb
    return b'{"model": "llama3", "messages": ' + bomb + b', "agent_id": "x"}'


@st.composite
def body_for(draw: st.DrawFn, kind: str) -> bytes:
    choice = draw(st.integers(0, 10))
    if choice == 10:
        return draw(json_bomb())
    if choice <= 5:  # an object using the endpoint's field names with random values
        keys = draw(st.lists(st.sampled_from(FIELDS[kind]), max_size=len(FIELDS[kind])))
        obj = {k: draw(json_values) for k in keys}
        if kind == "inference" and draw(st.booleans()):
            obj["model"] = draw(st.sampled_from(["llama3", "nope", ""]))
        if kind == "register" and draw(st.booleans()):
            obj["machine_name"] = draw(unicode_text)
        if kind == "register" and draw(st.booleans()):
            # nested objects with the right keys and random values (issue 20 item 8)
            obj["gpu_devices"] = draw(st.lists(nested_objects, max_size=3))
            obj["system"] = draw(nested_objects)
            if draw(st.booleans()):  # else the rest of the body is usually refused first
                name = draw(st.text(min_size=1, max_size=20).filter(str.strip))
                obj = {"machine_name": name, "runtime_port": 9, "gpu_devices": obj["gpu_devices"],
                       "system": obj["system"]}  # fmt: skip
        return dumps(obj)
    if choice <= 7:
        return dumps(draw(json_values))
    if choice == 8:
        depth = draw(st.integers(1, 5000))
        return b"[" * depth + b"]" * depth
    return draw(
        st.one_of(
            st.binary(max_size=200),
            st.sampled_from([b"", b"{", b'{"a":}', b"\xff\xfe{}", b'{"model": "\xc3\x28"}',
                             b'{"model": "llama3", "stream": tru}', b"null", b"1" * 5000]),
        )
    )  # fmt: skip


# -- plumbing ------------------------------------------------------------------------------------


class Api:
    """One keep-alive connection to the router, reopened when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def call(self, method: str, path: str, body: bytes, token: str | None) -> tuple[int, Any]:
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.getheader("connection", "").lower() == "close":
            self.conn.close()
        ctype = resp.getheader("content-type", "")
        if resp.status >= 400:
            assert ctype.startswith("application/json"), (resp.status, ctype, data[:200])
        return resp.status, json.loads(data) if ctype.startswith("application/json") else data


def check_error_shape(path: str, status: int, payload: Any) -> None:
    assert isinstance(payload, dict) and set(payload) == {"error"}, payload
    err = payload["error"]
    if path.startswith("/v1/"):
        assert isinstance(err, dict) and set(err) == {"message", "type", "code"}, payload
        assert isinstance(err["message"], str) and err["message"]
        assert isinstance(err["type"], str)
        assert err["code"] is None or isinstance(err["code"], str)
    else:
        assert isinstance(err, str) and err, payload


@pytest.fixture
def api_router(router_factory: Callable[..., Any]) -> Any:
    return router_factory(request_timeout=2.0, connect_timeout=0.5, queue_timeout=0.2)


@pytest.fixture
def agent(api_router: Any) -> dict[str, Any]:
    """One registered node (on a port nothing listens on) to heartbeat and patch."""
    api = Api(api_router.port)
    status, body = api.call(
        "POST",
        "/api/agents/register",
        dumps({"machine_name": "fuzz-node", "runtime_port": 9, "models": ["llama3"]}),
        None,
    )
    assert status in (200, 201), body
    return dict(body)


# -- the test ------------------------------------------------------------------------------------


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_fuzz_json_api(
    endpoint: str, api_router: Any, agent: dict[str, Any], error_log: ErrorLog
) -> None:
    method, template, kind = ENDPOINTS[endpoint]
    api = Api(api_router.port)
    cases = [0]
    statuses: dict[int, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        body=body_for(kind),
        node_id=st.sampled_from([agent["agent_id"]] * 3 + ["nope"]) | unicode_text,
        token=st.sampled_from([TOKENS[kind](agent)] * 4 + [None, "wrong", "\u00e9"]),
    )
    def one_case(body: bytes, node_id: str, token: str | None) -> None:
        cases[0] += 1
        quoted = quote(node_id.encode("utf-8", "surrogatepass"), safe="")
        path = template.replace("{id}", quoted or "x")
        if endpoint == "health" and node_id == agent["agent_id"]:
            # these heartbeats name the real agent, so validation past the token check runs
            try:
                obj = json.loads(body)
            except (ValueError, RecursionError):
                obj = None
            if isinstance(obj, dict):
                obj.setdefault("agent_id", node_id)
                body = dumps(obj)
        if token and not token.isascii():
            token = None  # http.client refuses non-latin-1 header values itself
        status, payload = api.call(method, path, body, token)
        statuses[status] = statuses.get(status, 0) + 1
        assert 200 <= status < 300 or 400 <= status < 600, status
        assert status != 500, payload
        if status >= 400:
            check_error_shape(path, status, payload)
        if kind == "register" and status < 300:
            # what was accepted must not break any viewer (issue 20 item 8)
            for view in ("/api/dashboard/snapshot", "/api/agents", "/metrics"):
                assert api.call("GET", view, b"", None)[0] == 200, view
            node = api.call("GET", f"/api/dashboard/nodes/{payload['agent_id']}", b"", None)
            assert node[0] == 200, node
        assert not error_log.records, [
            f"{r.name}: {r.getMessage()} {r.exc_text or ''}" for r in error_log.records
        ]

    try:
        one_case()
    finally:
        seen = sorted(statuses.items())
        sys.stdout.write(f"\n{endpoint}: {cases[0]} fuzz cases, statuses {seen}")
    status, payload = Api(api_router.port).call("GET", "/healthz", b"", None)
    assert (status, payload) == (200, {"status": "ok"})
