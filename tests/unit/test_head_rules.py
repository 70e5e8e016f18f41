"""The sans-IO verdicts on a request before its handler: head_rules.judge_head and RequestBody.

No sockets: heads are built by hand, the shared state is a plain ServerState. The same
verdicts over real sockets are in test_http_limits.py and test_http_server.py.
"""

from __future__ import annotations

import pytest

from routercore.http.body import RequestBody
from routercore.http.head_rules import BodyFraming, Refusal, body_too_large, judge_head
from routercore.http.messages import Response
from routercore.http.state import ServerLimits, ServerState, plain_error
from routercore.http.wire import Head


def head(
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    version: bytes = b"1.1",
    content_length: int | None = None,
) -> Head:
    return Head(b"POST", b"/x", version, headers or [(b"host", b"t")], content_length)


def judge(h: Head, *, fast_path: bool = False, max_header_bytes: int = 1024) -> object:
    return judge_head(h, max_header_bytes=max_header_bytes, max_body_bytes=100, fast_path=fast_path)


REFUSED = {
    "431 head too large": (head([(b"x-big", b"b" * 2000)]), 431, "request head too large"),
    "505 version": (head(version=b"2.0"), 505, "HTTP version 2.0"),
    "400 both framings": (
        head([(b"content-length", b"3"), (b"transfer-encoding", b"chunked")]),
        400,
        "content-length with transfer-encoding",
    ),
    "413 by content_length": (head(content_length=101), 413, ""),
    "413 by header": (head([(b"content-length", b"101")]), 413, ""),
}


@pytest.mark.parametrize(("h", "status", "reason"), list(REFUSED.values()), ids=list(REFUSED))
def test_a_refused_head_gets_its_status_and_log_reason(h: Head, status: int, reason: str) -> None:
    verdict = judge(h)
    assert isinstance(verdict, Refusal)
    assert verdict.status == status
    assert reason in verdict.detail
    assert not verdict.server_full


ACCEPTED = {
    "no body": (head(), (None, False)),
    "content-length at the limit": (head(content_length=100), (100, False)),
    "chunked": (head([(b"transfer-encoding", b"chunked")]), (None, True)),
    "bad length: the parser decides": (
        head([(b"content-length", b"x")]),
        (None, False),
    ),
}


@pytest.mark.parametrize(("h", "plan"), list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_an_accepted_head_says_how_its_body_is_framed(h: Head, plan: BodyFraming) -> None:
    assert judge(h) == plan


def test_the_fast_path_skips_the_header_name_scan() -> None:
    """The fast path takes no head with Transfer-Encoding, so its names need no second look."""
    both = head([(b"content-length", b"3"), (b"transfer-encoding", b"chunked")], content_length=3)
    assert judge(both, fast_path=True) == (3, False)


def test_body_too_large_names_the_limit() -> None:
    refusal = body_too_large(1000)
    assert (refusal.status, refusal.event, refusal.detail) == (413, "body_too_large", "limit=1000")
    assert refusal.message == "request body exceeds the limit of 1000 bytes"


def state(**limits: int) -> ServerState:
    async def dispatch(_request: object) -> Response:
        raise AssertionError("not called")

    return ServerState(dispatch, ServerLimits(**limits), plain_error)  # type: ignore[arg-type]


def test_a_body_is_kept_whole_and_its_share_given_back() -> None:
    shared = state(max_body_bytes=100)
    body = RequestBody(shared)
    body.reset()
    assert body.add(b"abc") is None
    assert body.add(bytearray(b"def")) is None
    assert shared.body_bytes == 6
    assert body.take() == b"abcdef"
    assert shared.body_bytes == 6  # held until the request is done
    body.release()
    assert (shared.body_bytes, body.held) == (0, 0)


def test_a_body_over_its_limit_is_refused_with_413() -> None:
    body = RequestBody(state(max_body_bytes=5))
    assert body.add(b"12345") is None
    refusal = body.add(b"6")
    assert refusal is not None and refusal.status == 413


def test_bodies_over_the_shared_cap_are_refused_with_503_and_retry_after() -> None:
    shared = state(max_inflight_body_bytes=10)
    first, second = RequestBody(shared), RequestBody(shared)
    assert first.add(b"x" * 8) is None
    assert second.room_for(2) is None
    refusal = second.room_for(3)
    assert refusal is not None and refusal.status == 503 and refusal.server_full
    assert refusal.detail == "held=8 limit=10"
    refusal = second.add(b"yyy")
    assert refusal is not None and refusal.status == 503
    first.drop()
    second.drop()
    assert shared.body_bytes == 0


def test_a_chunked_body_of_too_many_tiny_pieces_is_refused() -> None:
    body = RequestBody(state())
    body.reset(chunked=True)
    verdicts = [body.add(b"x") for _ in range(1030)]
    refused = [v for v in verdicts if v is not None]
    assert refused and refused[0].status == 400 and refused[0].event == "body_too_fragmented"
    assert verdicts.index(refused[0]) == 1026  # 1024 free pieces, one more per 512 bytes
