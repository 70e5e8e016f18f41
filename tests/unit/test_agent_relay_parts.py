"""The relay's settings, its place in the agent (payload, runtime's listen address, a port in
use), and its answers when the runtime is missing or silent. Real sockets on loopback."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from agent.relay import Relay, new_relay_token, runtime_address
from agent.runtime import RuntimeStatus
from agent.service import AgentService


def service(tmp_path: Path, **flags: object) -> AgentService:
    cfg = load_config(flags, {"XDG_CONFIG_HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)})
    return AgentService(cfg, env={})


def test_relay_settings_are_parsed_and_checked(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    cfg = load_config({}, env)
    assert (cfg.relay, cfg.relay_host, cfg.relay_port) == (False, "0.0.0.0", 11435)
    cfg = load_config({"relay": True, "relay_port": "0", "relay_host": "127.0.0.1"}, env)
    assert (cfg.relay, cfg.relay_host, cfg.relay_port) == (True, "127.0.0.1", 0)
    cfg = load_config({}, {**env, "LLM_AGENT_RELAY": "true", "LLM_AGENT_RELAY_PORT": "12000"})
    assert cfg.relay and cfg.relay_port == 12000
    with pytest.raises(ConfigError, match="--relay-port"):
        load_config({"relay_port": "70000"}, env)
    with pytest.raises(ConfigError, match="relay_host"):
        load_config({}, {**env, "LLM_AGENT_RELAY_HOST": "not-an-ip"})
    with pytest.raises(ConfigError, match="relay = true"):
        load_config({"relay": True, "runtime_url": "https://127.0.0.1:8443"}, env)


def test_runtime_address() -> None:
    assert runtime_address("http://localhost:11434") == ("127.0.0.1", 11434)
    assert runtime_address("http://10.0.0.5") == ("10.0.0.5", 80)
    with pytest.raises(ValueError, match="http://"):
        runtime_address("https://127.0.0.1:1")


def test_tokens_are_fresh_and_header_safe() -> None:
    a, b = new_relay_token(), new_relay_token()
    assert a != b and a.startswith("rly_") and len(a) >= 40
    assert all(c.isalnum() or c in "._~+/=-" for c in a[4:])


def test_managed_runtime_stays_on_loopback_with_the_relay(tmp_path: Path) -> None:
    plain = service(tmp_path, runtime_url="http://127.0.0.1:11434")
    assert plain._runtime_env()["OLLAMA_HOST"] == "0.0.0.0:11434"
    relayed = service(tmp_path, runtime_url="http://127.0.0.1:11434", relay=True)
    assert relayed._runtime_env()["OLLAMA_HOST"] == "127.0.0.1:11434"


def test_registration_carries_relay_port_and_token_once_listening(tmp_path: Path) -> None:
    svc = service(tmp_path, relay=True, relay_host="127.0.0.1", relay_port="0")
    svc.runtime = RuntimeStatus(True, "ollama", "1", ("m",), ())

    async def scenario() -> dict[str, object]:
        assert "relay_port" not in await svc.registration_payload()  # not listening yet
        assert await svc._start_relay()
        try:
            return await svc.registration_payload()
        finally:
            assert svc.relay is not None
            await svc.relay.stop()

    body = asyncio.run(scenario())
    assert svc.relay is not None and svc.relay.address is not None
    assert body["relay_port"] == svc.relay.address[1] != 0
    assert body["relay_token"] == svc.relay_token


def test_relay_port_in_use_stops_the_agent_with_a_reason(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        svc = service(
            tmp_path,
            relay=True,
            relay_host="127.0.0.1",
            relay_port=str(port),
            router_url="http://127.0.0.1:9",
            runtime_url="http://127.0.0.1:9",
        )
        asyncio.run(asyncio.wait_for(svc.run(), 30))  # returns instead of serving
    assert svc.failure is not None and f"127.0.0.1:{port}" in svc.failure
    assert not any(r.registered for r in svc.state.snapshot.routers)


async def _ask(port: int, token: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /api/tags HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n"
        "connection: close\r\n\r\n".encode()
    )
    try:
        data = await reader.read()
    except ConnectionResetError:
        data = b""  # cut without an answer
    writer.close()
    return data


async def test_runtime_down_is_a_cut_connection_and_silent_runtime_is_504() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again at once: nothing listens there
    relay = Relay(f"http://127.0.0.1:{dead}", "t" * 20, read_timeout=0.3)
    _, port = await relay.start("127.0.0.1", 0)
    try:
        # Like the runtime's own closed port: no answer at all (an HTTP error would make the
        # router's health checks think the node is up).
        assert await _ask(port, "t" * 20) == b""
        # A runtime that accepts and never answers.
        silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        relay.set_runtime(f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}")
        answer = await _ask(port, "t" * 20)
        assert answer.startswith(b"HTTP/1.1 504 ") and b"no answer within" in answer
        silent.close()
        assert (await _ask(port, "wrong")).startswith(b"HTTP/1.1 401 ")
        assert relay.refused == 1
    finally:
        await relay.stop()
