"""Every auth rule, API keys over the admin API, secrets kept out of responses and logs, SSRF."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from routercore.api.keys import KeyRing
from routercore.auth import hash_token
from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN, http, join, online_ids

CHAT = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}
GENERATE = {"model": "llama3", "prompt": "hi", "stream": False}
NODE = {"machine_name": "box", "runtime_port": 11434, "models": ["llama3"]}
KEY_FIELDS = {"id", "name", "prefix", "created_at", "last_used_at", "revoked_at"}
MISSING = "00000000-0000-4000-8000-000000000000"


def assert_401(status: int, headers: dict[str, str], body: Any, path: str) -> None:
    """401 in the API's own error format, with a Bearer challenge."""
    assert status == 401, (status, body)
    assert headers.get("www-authenticate", "").lower().startswith("bearer")
    if path.startswith("/v1"):
        err = body["error"]
        assert isinstance(err["message"], str) and err["message"]
        assert err["type"] == "authentication_error" and err["code"] == "invalid_api_key"
    else:
        assert isinstance(body["error"], str) and body["error"]


def register(router: Any, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    return http("POST", router.url + "/api/agents/register", body or NODE, token=token)


def beat(router: Any, agent_id: str, token: str | None) -> tuple[int, dict[str, str], Any]:
    body = {"agent_id": agent_id, "cpu_usage": 1.0, "memory_usage": 1.0, "active_requests": 0}
    return http("POST", router.url + "/api/health", body, token=token)


def create_key(router: Any, name: str = "ci") -> dict[str, Any]:
    status, _, body = http("POST", router.url + "/api/keys", {"name": name}, token=ADMIN_TOKEN)
    assert status == 201, body
    return body


# -- the admin token on every management write -----------------------------------------------------


def admin_calls(router: Any) -> list[tuple[str, str, Any]]:
    """Every call that needs the admin token, against a real node id and key id."""
    status, _, reg = register(router)
    assert status in (200, 201)
    key = create_key(router)
    node = f"/api/agents/{reg['agent_id']}"
    return [
        ("PATCH", node, {"custom_name": "renamed"}),
        ("POST", node + "/disconnect", None),
        ("POST", "/api/keys", {"name": "another"}),
        ("GET", "/api/keys", None),
        ("DELETE", f"/api/keys/{key['id']}", None),
        ("DELETE", node, None),
    ]


def test_management_calls_need_the_admin_token(router: Any) -> None:
    calls = admin_calls(router)
    for method, path, body in calls:
        for token in (None, "wrong-token", ADMIN_TOKEN + "x", "Basic " + ADMIN_TOKEN):
            status, headers, payload = http(method, router.url + path, body, token=token)
            assert_401(status, headers, payload, path)
    # Nothing changed: the node still has its name and the key list has one live key.
    keys = http("GET", router.url + "/api/keys", token=ADMIN_TOKEN)[2]
    assert [k["revoked_at"] for k in keys] == [None]
    assert all(a["custom_name"] is None for a in router.agents())
    for method, path, body in calls:
        status, _, payload = http(method, router.url + path, body, token=ADMIN_TOKEN)
        assert status in (200, 201, 204), (method, path, status, payload)


def test_an_api_key_is_not_an_admin_token(router_factory: Any) -> None:
    router = router_factory(api_keys=("sk-config-key",))
    status, headers, body = http("GET", router.url + "/api/keys", token="sk-config-key")
    assert_401(status, headers, body, "/api/keys")
    created = create_key(router)["key"]
    status, headers, body = http("POST", router.url + "/api/keys", {}, token=created)
    assert_401(status, headers, body, "/api/keys")


def test_generated_admin_token_is_stored_hashed_and_printed_once(
    router_factory: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    db = str(tmp_path / "gen.db")
    first = router_factory(admin_token="", db=db)
    token = first.service.admin_token_generated
    assert token and first.service.auth.admin_token_hash == hash_token(token)
    assert sum(token in r.getMessage() for r in caplog.records) == 1
    assert http("GET", first.url + "/api/keys", token=token)[0] == 200
    assert http("GET", first.url + "/api/keys", token=ADMIN_TOKEN)[0] == 401
    first.stop()
    caplog.clear()
    second = router_factory(admin_token="", db=db)
    assert second.service.admin_token_generated is None
    assert http("GET", second.url + "/api/keys", token=token)[0] == 200
    assert not any(token in r.getMessage() for r in caplog.records)
    with open(db, "rb") as fh:  # only the hash is on disk
        assert token.encode() not in fh.read()


# -- registration token and agent tokens -----------------------------------------------------------


def test_registration_token(router_factory: Any, fake_nodes: Any) -> None:
    router = router_factory(registration_token="reg-secret")
    for token in (None, "wrong", "reg-secretx", ADMIN_TOKEN):
        status, headers, body = register(router, token=token)
        assert_401(status, headers, body, "/api/agents/register")
    assert router.agents() == []
    assert register(router, token="reg-secret")[0] == 201
    # A fake node that knows the token joins and serves.
    fake_nodes(register=router.url, name="with-token", registration_token="reg-secret")
    online_ids(router, 2)


def test_heartbeat_needs_the_nodes_own_current_token(router: Any) -> None:
    a = register(router, {**NODE, "machine_name": "a"})[2]
    b = register(router, {**NODE, "machine_name": "b"})[2]
    assert beat(router, a["agent_id"], a["agent_token"])[0] == 200
    for token in (None, b["agent_token"], ADMIN_TOKEN, a["agent_token"] + "x"):
        status, headers, body = beat(router, a["agent_id"], token)
        assert_401(status, headers, body, "/api/health")
    again = register(router, {**NODE, "machine_name": "a"})[2]
    assert again["agent_id"] == a["agent_id"] and again["agent_token"] != a["agent_token"]
    status, headers, body = beat(router, a["agent_id"], a["agent_token"])  # from before
    assert_401(status, headers, body, "/api/health")
    assert beat(router, a["agent_id"], again["agent_token"])[0] == 200
    assert beat(router, MISSING, again["agent_token"])[0] == 404


# -- read-only views -------------------------------------------------------------------------------

READ_PATHS = ("/api/agents", "/api/dashboard/overview", "/api/dashboard/snapshot", "/metrics")


def test_open_reads_true_needs_no_token(router: Any) -> None:
    for path in READ_PATHS:
        assert http("GET", router.url + path)[0] == 200, path
    assert ws_status(router.port, "/ws/dashboard") == 101


def test_open_reads_false_needs_the_admin_token(router_factory: Any) -> None:
    router = router_factory(open_reads=False, api_keys=("sk-config-key",))
    node_id = register(router)[2]["agent_id"]
    for path in (*READ_PATHS, f"/api/agents/{node_id}", "/api/dashboard/request-history"):
        for token in (None, "wrong", "sk-config-key"):
            status, headers, body = http("GET", router.url + path, token=token)
            assert status == 401, (path, token, status)
            if path != "/metrics":
                assert_401(status, headers, body, path)
        assert http("GET", router.url + path, token=ADMIN_TOKEN)[0] == 200, path
    assert ws_status(router.port, "/ws/dashboard") == 401
    assert ws_status(router.port, "/ws/dashboard?token=wrong") == 401
    assert ws_status(router.port, f"/ws/dashboard?token={ADMIN_TOKEN}") == 101
    # The page itself and /healthz stay public: the page asks for the token.
    assert http("GET", router.url + "/healthz")[0] == 200


def ws_status(port: int, target: str) -> int:
    """The status of a WebSocket upgrade request."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = (
            f"GET {target} HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
        )
        sock.sendall(head.encode())
        reply = b""
        while b"\r\n" not in reply:
            piece = sock.recv(1024)
            if not piece:
                break
            reply += piece
    return int(reply.split(b" ", 2)[1])


# -- API keys --------------------------------------------------------------------------------------

PROXY_CALLS = (
    ("POST", "/v1/chat/completions", CHAT),
    ("GET", "/v1/models", None),
    ("POST", "/api/generate", GENERATE),
    ("POST", "/api/chat", {**CHAT, "stream": False}),
    ("GET", "/api/tags", None),
)


def test_proxy_apis_are_open_without_keys(router: Any, fake_nodes: Any) -> None:
    join(router, fake_nodes, 1)
    for method, path, body in PROXY_CALLS:
        assert http(method, router.url + path, body)[0] == 200, path


def test_config_api_keys_guard_the_proxy_apis(router_factory: Any, fake_nodes: Any) -> None:
    router = router_factory(api_keys=("sk-one", "sk-two"))
    join(router, fake_nodes, 1)
    for method, path, body in PROXY_CALLS:
        for token in (None, "sk-three", "sk-onex", "sk-on"):
            status, headers, payload = http(method, router.url + path, body, token=token)
            assert_401(status, headers, payload, path)
        for token in ("sk-one", "sk-two", ADMIN_TOKEN):  # the dashboard console uses the admin
            assert http(method, router.url + path, body, token=token)[0] == 200, (path, token)


def test_created_keys_guard_the_proxy_and_revoked_keys_stop_working(
    router: Any, fake_nodes: Any
) -> None:
    join(router, fake_nodes, 1)
    url = router.url + "/v1/chat/completions"
    assert http("POST", url, CHAT)[0] == 200  # open until the first key exists
    created = create_key(router, "team-a")
    assert created["key"].startswith("sk-") and len(created["key"]) > 40
    assert created["key"].startswith(created["prefix"]) and len(created["prefix"]) == 11
    assert set(created) == {
        "id",
        "name",
        "prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
        "key",
    }
    assert created["name"] == "team-a" and created["last_used_at"] is None
    second = create_key(router, "team-b")
    assert_401(*http("POST", url, CHAT), "/v1/chat/completions")
    assert_401(*http("POST", url, CHAT, token="sk-nope"), "/v1/chat/completions")
    assert http("POST", url, CHAT, token=created["key"])[0] == 200
    assert http("POST", url, CHAT, token=second["key"])[0] == 200
    assert http("DELETE", f"{router.url}/api/keys/{created['id']}", token=ADMIN_TOKEN)[0] == 204
    assert http("DELETE", f"{router.url}/api/keys/{created['id']}", token=ADMIN_TOKEN)[0] == 204
    status, _, body = http("DELETE", f"{router.url}/api/keys/{MISSING}", token=ADMIN_TOKEN)
    assert status == 404 and isinstance(body["error"], str)
    assert_401(*http("POST", url, CHAT, token=created["key"]), "/v1/chat/completions")
    path = "/api/generate"
    assert_401(*http("POST", router.url + path, GENERATE, token=created["key"]), path)
    assert http("POST", url, CHAT, token=second["key"])[0] == 200
    # Revoking every key does not silently open the proxy APIs again.
    assert http("DELETE", f"{router.url}/api/keys/{second['id']}", token=ADMIN_TOKEN)[0] == 204
    assert_401(*http("POST", url, CHAT), "/v1/chat/completions")
    assert http("POST", url, CHAT, token=ADMIN_TOKEN)[0] == 200


def test_key_list_shows_metadata_and_last_use_but_no_secret(
    router_factory: Any, tmp_path: Any
) -> None:
    db = str(tmp_path / "keys.db")
    router = router_factory(db=db)
    created = create_key(router, "dash")
    status, _, keys = http("GET", router.url + "/api/keys", token=ADMIN_TOKEN)
    assert status == 200 and len(keys) == 1
    listed = keys[0]
    assert set(listed) == KEY_FIELDS
    assert listed["last_used_at"] is None and listed["revoked_at"] is None
    assert http("GET", router.url + "/v1/models", token=created["key"])[0] == 200
    used = http("GET", router.url + "/api/keys", token=ADMIN_TOKEN)[2][0]["last_used_at"]
    assert used is not None and used >= listed["created_at"]
    assert http("DELETE", f"{router.url}/api/keys/{created['id']}", token=ADMIN_TOKEN)[0] == 204
    revoked = http("GET", router.url + "/api/keys", token=ADMIN_TOKEN)[2][0]
    assert revoked["revoked_at"] is not None
    router.stop()
    # Keys, last use and revocation survive a restart; the plain key is nowhere on disk.
    again = router_factory(db=db)
    reloaded = http("GET", again.url + "/api/keys", token=ADMIN_TOKEN)[2]
    assert reloaded == [{**revoked, "last_used_at": used}]
    assert_401(*http("GET", again.url + "/v1/models", token=created["key"]), "/v1/models")
    with open(db, "rb") as fh:
        data = fh.read()
    assert created["key"].encode() not in data


def test_key_survives_restart_and_keeps_working(router_factory: Any, tmp_path: Any) -> None:
    db = str(tmp_path / "keys.db")
    router = router_factory(db=db)
    key = create_key(router)["key"]
    router.stop()
    again = router_factory(db=db)
    assert http("GET", again.url + "/v1/models", token=key)[0] == 200
    assert_401(*http("GET", again.url + "/v1/models"), "/v1/models")


def test_create_key_validation(router: Any) -> None:
    url = router.url + "/api/keys"
    assert http("POST", url, raw=b"", token=ADMIN_TOKEN)[0] == 201  # name is optional
    for body in ({"name": 5}, {"name": "x" * 300}, {"nme": "typo"}, [1]):
        status, _, payload = http("POST", url, body, token=ADMIN_TOKEN)
        assert status == 400 and isinstance(payload["error"], str), body
    assert http("POST", url, raw=b"{not json", token=ADMIN_TOKEN)[0] == 400


class RecordingStore:
    """Stands in for the store: records what would be written."""

    def __init__(self) -> None:
        self.saved: list[dict[str, Any]] = []

    def load_api_keys(self) -> list[dict[str, Any]]:
        return []

    def save_api_key(self, record: dict[str, Any]) -> None:
        self.saved.append(dict(record))


def test_last_used_is_written_at_most_once_per_interval() -> None:
    now = [1000.0]
    store = RecordingStore()
    ring = KeyRing(store, persist_every=60.0, clock=lambda: now[0])

    async def scenario() -> None:
        key, plain = ring.create("k")
        assert len(store.saved) == 1 and store.saved[0]["last_used_at"] is None
        assert "plain" not in str(store.saved) and plain not in str(store.saved)
        assert ring.check(plain)  # first use: written at once
        assert len(store.saved) == 2 and store.saved[1]["last_used_at"] is not None
        for _ in range(50):  # a burst: kept in memory, one write scheduled
            assert ring.check(plain)
        assert len(store.saved) == 2 and len(ring._pending) == 1
        assert not ring.check(plain + "x") and not ring.check("")
        ring.flush()  # shutdown writes the newest time
        assert len(store.saved) == 3 and store.saved[2]["last_used_at"] == key.last_used_at
        now[0] += 61.0
        assert ring.check(plain)
        assert len(store.saved) == 4
        assert all(plain not in str(r) for r in store.saved)

    asyncio.run(scenario())


# -- secrets never leave through responses or logs -------------------------------------------------


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


def test_secrets_stay_out_of_responses_and_logs(
    router_factory: Any, fake_nodes: Any, all_logs: pytest.LogCaptureFixture
) -> None:
    router = router_factory(
        registration_token="reg-secret-value", api_keys=("sk-config-secret-value",)
    )
    reg = register(router, {**NODE, "machine_name": "manual"}, token="reg-secret-value")[2]
    fake_nodes(register=router.url, name="fake", registration_token="reg-secret-value")
    ids = online_ids(router, 1)
    created = create_key(router, "logged?")
    for token in (created["key"], "sk-config-secret-value", ADMIN_TOKEN, "sk-wrong-secret"):
        http("POST", router.url + "/v1/chat/completions", CHAT, token=token)
    beat(router, reg["agent_id"], reg["agent_token"])
    beat(router, reg["agent_id"], "agt_wrong-secret")
    http("DELETE", f"{router.url}/api/keys/{created['id']}", token=ADMIN_TOKEN)
    http("POST", router.url + "/v1/chat/completions", CHAT, token=created["key"])
    registration = router.call(lambda: router.service.registry.nodes[ids[0]])
    secrets = {
        "agent token": reg["agent_token"],
        "agent token hash": hash_token(reg["agent_token"]),
        "fake node token hash": registration.token_hash,
        "api key": created["key"],
        "api key hash": hash_token(created["key"]),
        "config key": "sk-config-secret-value",
        "registration token": "reg-secret-value",
        "admin token": ADMIN_TOKEN,
        "admin token hash": hash_token(ADMIN_TOKEN),
        "wrong key": "sk-wrong-secret",
        "wrong agent token": "agt_wrong-secret",
    }
    gets = [
        "/api/agents",
        f"/api/agents/{reg['agent_id']}",
        f"/api/agents/{ids[0]}",
        "/api/keys",
        "/api/dashboard/overview",
        "/api/dashboard/snapshot",
        "/api/dashboard/request-history",
        f"/api/dashboard/nodes/{reg['agent_id']}",
        "/metrics",
        "/v1/models",
        "/api/tags",
    ]
    for path in gets:
        status, _, body = http("GET", router.url + path, token=ADMIN_TOKEN)
        assert status == 200, path
        text = body if isinstance(body, bytes) else repr(body).encode()
        for what, secret in secrets.items():
            assert secret.encode() not in text, f"{what} in GET {path}"
    router.stop()
    lines = [r.getMessage() for r in all_logs.records]
    assert any("event=api_key_created" in line for line in lines)
    for line in lines:
        for what, secret in secrets.items():
            assert secret not in line, f"{what} in log line {line!r}"


# -- SSRF: the router proxies only to where a node registered from ---------------------------------


class CountingListener:
    """A local socket that counts the connections it accepts (it answers nothing)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(0.05)  # accept() wakes up to notice close()
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[CountingListener]:
    lst = CountingListener()
    yield lst
    lst.close()


def test_foreign_ip_address_is_refused(router: Any, listener: CountingListener) -> None:
    for claimed in ("10.1.2.3", "127.0.0.2", "0.0.0.0", "::1", "169.254.169.254"):
        body = {**NODE, "ip_address": claimed, "runtime_port": listener.port}
        status, _, payload = register(router, body)
        assert status == 403 and "ip_address" in payload["error"], claimed
    for bad in ("evil.example.com", "http://127.0.0.1/", "127.0.0.1:80"):
        assert register(router, {**NODE, "ip_address": bad})[0] == 400
    assert router.agents() == []
    status, _, body = http("POST", router.url + "/v1/chat/completions", CHAT)
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert listener.accepted == 0


def test_client_cannot_name_the_upstream(
    router: Any, fake_nodes: Any, listener: CountingListener
) -> None:
    (node,) = join(router, fake_nodes, 1)
    target = f"127.0.0.1:{listener.port}"
    for headers in (
        {"host": target},
        {"x-forwarded-host": target, "x-forwarded-port": str(listener.port)},
        {"forwarded": f"host={target}"},
    ):
        status, _, _ = http("POST", router.url + "/v1/chat/completions", CHAT, headers=headers)
        assert status == 200
    status, _, _ = http(
        "POST", router.url + "/v1/chat/completions", {**CHAT, "base_url": f"http://{target}"}
    )
    assert status == 200
    # An absolute-form request target naming another host is not followed either.
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
        raw = b'{"model": "llama3", "messages": []}'
        sock.sendall(
            f"POST http://{target}/v1/chat/completions HTTP/1.1\r\nhost: {target}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(raw)}\r\n"
            "connection: close\r\n\r\n".encode()
            + raw
        )
        reply = b""
        while piece := sock.recv(65536):
            reply += piece
    assert reply.startswith(b"HTTP/1.1 ")
    assert listener.accepted == 0
    assert node.node.snapshot()["completed"] >= 4


def test_allow_listed_address_is_proxied_to(router_factory: Any, fake_nodes: Any) -> None:
    router = router_factory(
        allowed_node_addresses=("127.0.0.2",), heartbeat_timeout=60, heartbeat_interval=20
    )
    node = fake_nodes(host="127.0.0.2")
    body = {**NODE, "ip_address": "127.0.0.2", "runtime_port": node.port}
    status, _, reg = register(router, body)
    assert status == 201
    agent = http("GET", f"{router.url}/api/agents/{reg['agent_id']}")[2]
    assert agent["ip_address"] == "127.0.0.2" and agent["status"] == "online"
    status, headers, _ = http("POST", router.url + "/v1/chat/completions", CHAT)
    assert status == 200 and headers["x-router-node"] == reg["agent_id"]
    wait_until(
        lambda: node.node.snapshot()["completed"] >= 1, message="the allow-listed node served"
    )
    # Other foreign addresses are still refused.
    assert register(router, {**body, "ip_address": "127.0.0.3"})[0] == 403


def test_router_does_not_proxy_to_itself(router_factory: Any) -> None:
    router = router_factory(max_connections=64, heartbeat_interval=20, heartbeat_timeout=60)
    body = {**NODE, "runtime_port": router.port}
    status, _, _ = register(router, body)
    if status in (400, 403):
        return  # refused at registration: fine
    status, _, _ = http("POST", router.url + "/v1/chat/completions", CHAT)
    assert status in (502, 508)

    def rows() -> int:
        fut = asyncio.run_coroutine_threadsafe(router.service.store.query_requests(), router.loop)
        return int(fut.result(10)[1])

    router.service.store.flush()
    assert rows() <= 2  # the client's request and at most one hop, not a chain
