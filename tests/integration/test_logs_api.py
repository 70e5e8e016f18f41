"""Logs over the API: the router's ring, an agent's log on request, masking, the 504 bound."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from tests.support.nodes import REGISTRATION, beat, register
from tests.support.polling import wait_until
from tests.support.routers import ADMIN_TOKEN, http


def test_router_logs_need_the_admin_token_and_check_their_query(router, caplog):
    caplog.set_level(logging.INFO, logger="routercore")  # as `serve` logs by default
    url = router.url + "/api/logs"
    assert http("GET", url)[0] == 401
    for bad in ("lines=0", "lines=x", "lines=99999", "level=loud"):
        status, _, body = http("GET", f"{url}?{bad}", token=ADMIN_TOKEN)
        assert status == 400 and "error" in body, bad
    # The requests above are in the ring once their access lines are written (batched, soon).
    status, _, body = wait_until(
        lambda: (answer := http("GET", url + "?lines=5", token=ADMIN_TOKEN))[2]["lines"] and answer
    )
    assert status == 200 and 0 < len(body["lines"]) <= 5
    assert any(" routercore.access GET /api/logs" in line for line in body["lines"])


def test_router_logs_filter_by_level(router):
    # A refused registration is a warning line; the router writes it on this request.
    claim = {**REGISTRATION, "ip_address": "10.9.8.7"}
    assert http("POST", router.url + "/api/agents/register", claim)[0] == 403
    url = router.url + "/api/logs?lines=50&level=warning"
    status, _, body = http("GET", url, token=ADMIN_TOKEN)
    assert status == 200
    assert any("event=register_refused" in line for line in body["lines"])
    assert all(" WARNING " in line or " ERROR " in line for line in body["lines"])


def test_a_generated_admin_token_is_masked_in_the_router_log(router_factory):
    router = router_factory(admin_token="")
    token = router.service.admin_token_generated
    assert token and token.startswith("adm_")
    logging.getLogger("routercore.test").warning(
        "a line with Authorization: Bearer sk-%s and password=hunter2 and http://user:pw@host/x",
        "a" * 40,
    )
    status, _, body = http("GET", router.url + "/api/logs?lines=2000", token=token)
    assert status == 200
    text = "\n".join(body["lines"])
    assert "event=admin_token_generated token=***" in text
    assert "Authorization: Bearer ***" in text
    assert token not in text and token[4:] not in text
    assert "hunter2" not in text and "a" * 40 not in text and "user:pw@" not in text
    assert "password=***" in text and "user:***@host" in text


def ask_logs(router: Any, agent_id: str, out: dict[str, Any], lines: int = 10) -> threading.Thread:
    def run() -> None:
        started = time.monotonic()
        out["answer"] = http(
            "GET", f"{router.url}/api/agents/{agent_id}/logs?lines={lines}", token=ADMIN_TOKEN
        )
        out["waited"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_the_log_request_rides_on_a_heartbeat_answer(router):
    """The protocol by hand: the answer to the next heartbeat asks for N lines; the heartbeat
    carrying `logs` ends the waiting API call, masked."""
    _, _, reg = register(router)
    agent_id, token = reg["agent_id"], reg["agent_token"]
    assert beat(router, agent_id, token)[2] == {"status": "ok"}  # nobody asked yet
    out: dict[str, Any] = {}
    thread = ask_logs(router, agent_id, out, lines=2)

    def asked() -> Any:
        answer = beat(router, agent_id, token)[2]
        return answer if "send_logs" in answer else None

    assert wait_until(asked, message="the question")["send_logs"] == {"lines": 2}
    logs = ["first", "second token=abcdef123", "third: Bearer xyz"]
    assert beat(router, agent_id, token, logs=logs)[0] == 200
    thread.join(30)
    status, _, body = out["answer"]
    assert status == 200
    assert body == {"agent_id": agent_id, "lines": ["second token=***", "third: Bearer ***"]}
    assert beat(router, agent_id, token)[2] == {"status": "ok"}  # asked once, answered once


def test_an_agent_that_never_answers_gets_504_within_the_bound(router_factory, fake_nodes):
    """Fake nodes heartbeat but never send a log: 504 after one interval + 2 s, not a hang."""
    router = router_factory(heartbeat_interval=0.5, heartbeat_timeout=3.0)
    fake_nodes(register=router.url, name="mute")
    agent_id = wait_until(lambda: [a["id"] for a in router.agents() if a["status"] == "online"])[0]
    out: dict[str, Any] = {}
    ask_logs(router, agent_id, out).join(60)
    status, _, body = out["answer"]
    assert status == 504 and "did not send its log within 2.5s" in body["error"]
    assert out["waited"] < 2.5 + 5.0  # bounded (generous margin for a loaded machine)
    # An unknown agent is a 404 at once.
    assert http("GET", router.url + "/api/agents/nope/logs", token=ADMIN_TOKEN)[0] == 404
