"""RouterSession: what each register/heartbeat outcome means, without a network."""

from __future__ import annotations

from agent.backoff import Backoff
from agent.httpjson import JsonResponse
from agent.router_client import HEARTBEAT, REGISTER, RouterSession

OK_REG = JsonResponse(
    201,
    {
        "agent_id": "a-1",
        "status": "registered",
        "agent_token": "tok1",
        "heartbeat_interval_secs": 5,
    },
)


def session(**kw: object) -> RouterSession:
    return RouterSession("http://r:1/", backoff=Backoff(1, 8, jitter=0), **kw)  # type: ignore[arg-type]


def test_register_success_sets_credentials_and_interval() -> None:
    s = session()
    assert s.url == "http://r:1"
    step = s.on_register_response(OK_REG)
    assert (step.action, step.delay) == (HEARTBEAT, 0.0)
    assert (s.agent_id, s.agent_token, s.interval, s.registered) == ("a-1", "tok1", 5.0, True)
    assert s.heartbeat_headers() == {"Authorization": "Bearer tok1"}


def test_registration_token_header_only_when_configured() -> None:
    assert session().register_headers() == {}
    assert session(registration_token="rt").register_headers() == {"Authorization": "Bearer rt"}


def test_missing_or_bad_interval_falls_back() -> None:
    for value in (None, 0, -3, "10", True):
        s = session(default_interval=7.0)
        s.on_register_response(
            JsonResponse(
                200, {"agent_id": "a", "agent_token": "t", "heartbeat_interval_secs": value}
            )
        )
        assert s.interval == 7.0


def test_register_failures_back_off_exponentially() -> None:
    s = session()
    delays = [s.on_transport_error("refused").delay for _ in range(5)]
    assert delays == [1, 2, 4, 8, 8]
    assert s.on_register_response(JsonResponse(503, None)).action == REGISTER
    s.on_register_response(OK_REG)
    assert s.on_transport_error("x").delay == 1  # reset after success


def test_register_refused_mentions_token() -> None:
    s = session()
    step = s.on_register_response(JsonResponse(401, {"error": "bad token"}))
    assert step.action == REGISTER
    assert "registration token" in (s.last_error or "")
    assert not s.registered


def test_register_without_token_in_body_is_a_failure() -> None:
    s = session()
    assert s.on_register_response(JsonResponse(201, {"agent_id": "x"})).action == REGISTER
    assert not s.registered


def test_heartbeat_ok_waits_interval() -> None:
    s = session()
    s.on_register_response(OK_REG)
    step = s.on_heartbeat_response(JsonResponse(200, {"status": "ok"}))
    assert (step.action, step.delay) == (HEARTBEAT, 5.0)


def test_heartbeat_404_and_401_reregister_at_once() -> None:
    for status in (404, 401):
        s = session()
        s.on_register_response(OK_REG)
        step = s.on_heartbeat_response(JsonResponse(status, {"error": "unknown"}))
        assert (step.action, step.delay) == (REGISTER, 0.0)
        assert not s.registered


def test_heartbeat_5xx_keeps_registration() -> None:
    s = session()
    s.on_register_response(OK_REG)
    step = s.on_heartbeat_response(JsonResponse(500, None))
    assert step.action == HEARTBEAT and step.delay <= 5.0
    assert s.registered


def test_lost_router_means_register_again() -> None:
    """After an outage (e.g. router restart) the agent registers again rather than assume."""
    s = session()
    s.on_register_response(OK_REG)
    step = s.on_transport_error("connection reset")
    assert step.action == REGISTER and step.delay > 0
    assert not s.registered
