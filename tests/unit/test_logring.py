"""Masking of log lines, the router's log ring, the agent's log tail and its request flag."""

from __future__ import annotations

import logging

import pytest

from agent.httpjson import JsonResponse
from agent.logtail import LogTail
from agent.router_client import HEARTBEAT, RouterSession
from routercore.logring import LogRing, mask_secrets, parse_level

SECRET = "Zq8" * 10


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"Authorization: Bearer {SECRET}", "Authorization: Bearer ***"),
        (f"event=x token={SECRET} next=1", "event=x token=*** next=1"),
        (f'{{"agent_token": "{SECRET}", "ok": 1}}', '{"agent_token": "***", "ok": 1}'),
        (f"api_key: {SECRET}", "api_key: ***"),
        (f"API-KEY={SECRET}", "API-KEY=***"),
        ("password=hunter2 user=bob", "password=*** user=bob"),
        (f"url=http://bob:{SECRET}@proxy:3128/", "url=http://bob:***@proxy:3128/"),
        (f"sent adm_{SECRET} and agt_{SECRET}", "sent adm_*** and agt_***"),
        (f"key sk-{SECRET}", "key sk-***"),
        ("event=api_key_created prefix=sk-AbCdEfGh", "event=api_key_created prefix=sk-AbCdEfGh"),
        ("event=node_status id=42 to=online", "event=node_status id=42 to=online"),
    ],
)
def test_mask_secrets(line: str, expected: str) -> None:
    assert mask_secrets(line) == expected


def test_ring_keeps_the_newest_lines_and_filters_by_level() -> None:
    ring = LogRing(3)
    logger = logging.getLogger("test.ring")
    logger.addHandler(ring)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        for i in range(5):
            logger.info("line %d token=%s", i, SECRET)
        logger.warning("warned")
    finally:
        logger.removeHandler(ring)
    lines = ring.tail(10)
    assert len(lines) == 3 and lines[-1].endswith("WARNING test.ring warned")
    assert lines[0].endswith("line 3 token=***")
    assert ring.tail(1) == [lines[-1]]
    assert ring.tail(10, parse_level("warning")) == [lines[-1]]
    assert parse_level("") == 0 and parse_level("ERROR") == logging.ERROR
    with pytest.raises(ValueError):
        parse_level("loud")


def test_agent_log_tail() -> None:
    tail = LogTail(size=2)
    record = logging.LogRecord("agent", logging.INFO, __file__, 1, "m%d", (1,), None)
    for n in range(3):
        record.args = (n,)
        tail.emit(record)
    assert [line.rsplit(" ", 1)[1] for line in tail.tail(5)] == ["m1", "m2"]
    assert tail.tail(0) == []


def test_a_heartbeat_answer_asking_for_logs_makes_the_next_heartbeat_go_at_once() -> None:
    s = RouterSession("http://r", default_interval=10.0)
    s.registered, s.interval = True, 10.0
    step = s.on_heartbeat_response(JsonResponse(200, {"status": "ok", "send_logs": {"lines": 7}}))
    assert (step.action, step.delay, s.logs_wanted) == (HEARTBEAT, 0.0, 7)
    s.logs_wanted = None
    for odd in ({"lines": "7"}, {"lines": 0}, {"lines": True}, "all"):
        step = s.on_heartbeat_response(JsonResponse(200, {"status": "ok", "send_logs": odd}))
        assert (step.delay, s.logs_wanted) == (10.0, None)
