"""SafeLogFilter: secrets masked and control characters escaped in every record, once."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from routercore import logsafe


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logsafe.install([handler])
    logsafe.install([handler])  # idempotent
    assert len(handler.filters) == 1
    logger = logging.getLogger("test.logsafe")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize(
    ("message", "secret"),
    [
        ("reason=\"illegal request line: b'GET /x?token=abc123def HTTP/1.1'\"", "abc123def"),
        ("reason=\"illegal header line: b'Authorization: Bearer tok-9f8e7d'\"", "tok-9f8e7d"),
        ("header authorization: basic Zm9vOmJhcg==", "Zm9vOmJhcg=="),
        ('body {"agent_token": "agt_0123456789abcdef"}', "0123456789abcdef"),
        ("relay_token=r3lay-s3cret&x=1", "r3lay-s3cret"),
        ("user password: hunter2hunter2", "hunter2hunter2"),
        ("API-KEY=k-11112222", "k-11112222"),
        ("an api key sk-AbCdEf1234567890abcdef in text", "AbCdEf1234567890abcdef"),
        ("an admin token adm_ZYXWVU9876543210zyxw in text", "ZYXWVU9876543210zyxw"),
        ("proxy=http://bob:pa55word@proxy:3128/", "pa55word"),
        ("registration_token='reg-secret-1'", "reg-secret-1"),
    ],
)
def test_secrets_are_masked(
    logged: tuple[logging.Logger, io.StringIO], message: str, secret: str
) -> None:
    logger, out = logged
    logger.info("event=x %s", message)
    text = out.getvalue()
    assert secret not in text and logsafe.MASK in text


def test_control_characters_are_escaped_so_no_line_is_forged(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = logged
    logger.info("machine=%s", "box\r\nERROR forged\x00\x1b[31m\x85\u2028end")
    lines = out.getvalue().splitlines()
    assert lines == ["INFO machine=box\\x0d\\x0aERROR forged\\x00\\x1b[31m\\x85\\u2028end"]


def test_ordinary_records_pass_unchanged(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged
    logger.info("%s %s %s %.1fms", "POST", "/v1/chat/completions", 200, 1.25)
    logger.info("unicode names stay: %s", "Jürgen's GPU — 東京")
    assert out.getvalue().splitlines() == [
        "INFO POST /v1/chat/completions 200 1.2ms",
        "INFO unicode names stay: Jürgen's GPU — 東京",
    ]


def test_the_generated_admin_token_is_shown_once_but_escaped(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = logged
    logger.warning("token=%s", "adm_shown\nonce", extra=logsafe.SHOW_SECRET)
    assert out.getvalue() == "WARNING token=adm_shown\\x0aonce\n"


def test_tracebacks_keep_their_lines_but_lose_their_secrets(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = logged
    try:
        raise ValueError("upstream said Bearer leaked-token-1")
    except ValueError:
        logger.exception("event=failed")
    text = out.getvalue()
    assert "Traceback (most recent call last):" in text and text.count("\n") > 3
    assert "leaked-token-1" not in text and "Bearer ***" in text
