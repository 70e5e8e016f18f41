"""The proxy's sans-IO response parser: framing, keep-alive, errors, any split of the bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routercore.http.response_parser import (
    END,
    BadStatusLine,
    ProtocolError,
    ResponseHead,
    ResponseParser,
)

# Every test here runs on both parsers, the compiled one and its twin (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("response_parser_impl")


def parse(data: bytes | list[bytes], *, eof: bool = False, head_request: bool = False):
    parser = ResponseParser(head_request=head_request)
    events = []
    for piece in [data] if isinstance(data, bytes) else data:
        events += parser.feed(piece)
    if eof:
        events += parser.feed_eof()
    return parser, events


def body_of(events) -> bytes:
    return b"".join(e for e in events if isinstance(e, bytes))


def test_content_length_body_is_passed_on_as_is():
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    parser, events = parse(raw)
    head = events[0]
    assert isinstance(head, ResponseHead)
    assert head.status_code == 200 and head.reason == b"OK"
    assert head.headers == [(b"content-type", b"application/json"), (b"content-length", b"2")]
    assert head.content_length == 2 and not head.chunked and head.keep_alive
    assert events[1:] == [b"{}", END]
    assert parser.done and parser.reusable


def test_body_piece_that_fills_the_length_is_not_copied():
    parser, _ = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
    piece = b"hello"
    events = parser.feed(piece)
    assert events[0] is piece and events[1] is END


def test_chunked_body_is_decoded_piece_by_piece():
    raw = [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        b"6\r\ndata: \r\n",
        b"3;ext=1\r\nabc\r\n",
        b"0\r\nx-trailer: 1\r\n\r\n",
    ]
    parser, events = parse(raw)
    assert events[0].chunked and events[0].content_length is None
    assert events[1:] == [b"data: ", b"abc", END]
    assert parser.reusable


def test_connection_close_and_http10_are_not_reusable():
    parser, _ = parse(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
    assert parser.done and not parser.reusable
    parser, _ = parse(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n")
    assert parser.done and not parser.reusable


def test_no_length_reads_until_close():
    parser, events = parse([b"HTTP/1.1 200 OK\r\n\r\nsome", b" body"], eof=True)
    assert body_of(events) == b"some body" and events[-1] is END
    assert not parser.reusable


def test_no_body_for_head_204_304_and_informational_heads_are_skipped():
    _, events = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", head_request=True)
    assert events[-1] is END
    _, events = parse(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert events[-1] is END
    _, events = parse(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 1\r\n\r\nx"
    )
    assert events[0].status_code == 201 and events[1:] == [b"x", END]


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage\r\n\r\n",
        b"\x00\xff\xfeSPLAT not-http \x13\x37 garbage\r\n\r\n\x00",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno-colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nabX",
    ],
)
def test_invalid_responses_raise(raw):
    with pytest.raises(ProtocolError):
        parse(raw)


@pytest.mark.parametrize(
    ("raw", "speaks_http"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", False),
        (b"\x16\x03\x01\x02\x00\r\n\r\n", False),
        (b"HTTP/1.1 2xx OK\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nx a: b\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nx-a: \x00\r\n\r\n", True),
    ],
)
def test_a_bad_status_line_is_told_apart_from_a_bad_head(raw, speaks_http):
    """BadStatusLine: the peer does not speak HTTP; any other ProtocolError: it does, badly."""
    with pytest.raises(ProtocolError) as caught:
        parse(raw)
    assert isinstance(caught.value, BadStatusLine) is not speaks_http


def test_close_mid_response_is_an_error():
    parser, _ = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
    with pytest.raises(ProtocolError):
        parser.feed_eof()


def test_bytes_after_the_response_make_it_not_reusable():
    parser, _ = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nxEXTRA")
    assert parser.done and not parser.reusable


def test_head_too_long_is_an_error():
    with pytest.raises(ProtocolError):
        parse(b"HTTP/1.1 200 OK\r\n" + b"x-a: b\r\n" * 20000)


@given(
    body=st.lists(st.binary(min_size=1, max_size=40), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
    chunked=st.booleans(),
)
def test_any_split_gives_the_same_body(body, cuts, chunked):
    if chunked:
        framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in body) + b"0\r\n\r\n"
        raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + framed
    else:
        data = b"".join(body)
        raw = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(data) + data
    points = sorted({c % (len(raw) + 1) for c in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    parser, events = parse(pieces)
    assert isinstance(events[0], ResponseHead)
    assert body_of(events) == b"".join(body)
    assert events[-1] is END and parser.reusable


@pytest.mark.parametrize(
    "line",
    [b"x-a: one\ntwo", b"x-a: one\rtwo", b"x-a: \x00", b"x-a: \x07", b"x-a: \x7f", b"x a: b",
     b"x-a\t: b", b"\xe9: b", b": b"],
)  # fmt: skip
def test_control_characters_and_bad_names_in_a_head_raise(line):
    """Relaying them would make the client-side writer refuse the head (issue 20 item 12)."""
    with pytest.raises(ProtocolError):
        parse(b"HTTP/1.1 200 OK\r\n" + line + b"\r\ncontent-length: 0\r\n\r\n")


def test_tab_and_obs_text_in_values_are_fine():
    _, events = parse(b"HTTP/1.1 200 OK\r\nx-a: a\tb \xe9\r\ncontent-length: 0\r\n\r\n")
    assert events[0].headers[0] == (b"x-a", b"a\tb \xe9")


def test_fields_named_by_connection_are_reported():
    _, events = parse(
        b"HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\ncontent-length: 0\r\n\r\n"
    )
    assert events[0].connection_options == {b"x-secret", b"keep-alive"}
    _, events = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    assert events[0].connection_options == frozenset()
