"""The fake LLM runtime, driven by the official openai and ollama clients and raw HTTP."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import h11
import httpx
import ollama
import openai
import orjson
import pytest

from routercore.testing.fake_bodies import embedding, token_texts
from routercore.testing.fake_cli import parse_fault
from routercore.testing.fake_server import FakeHTTPProtocol
from routercore.testing.fake_state import ConfigError, Faults, Settings
from routercore.testing.fakenode import FakeNode, run_in_thread
from tests.support import ROOT
from tests.support.commands import run_python
from tests.support.polling import eventually

MODELS = ["m1", "llama3:latest"]
TEXT8 = "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"


@pytest.fixture
async def node() -> AsyncIterator[FakeNode]:
    async with FakeNode(models=MODELS) as n:
        yield n


_open_clients: list[openai.AsyncOpenAI | ollama.AsyncClient] = []


def oai(node: FakeNode, **kwargs: Any) -> openai.AsyncOpenAI:
    """An official OpenAI client for `node`, closed after the test (no retries: faults show)."""
    client = openai.AsyncOpenAI(base_url=node.url + "/v1", api_key="x", max_retries=0, **kwargs)
    _open_clients.append(client)
    return client


def oll(node: FakeNode, **kwargs: Any) -> ollama.AsyncClient:
    """An official Ollama client for `node`, closed after the test."""
    client = ollama.AsyncClient(host=node.url, **kwargs)
    _open_clients.append(client)
    return client


async def close_clients() -> None:
    while _open_clients:
        await _open_clients.pop().close()


@pytest.fixture(autouse=True)
async def _closes_clients() -> AsyncIterator[None]:
    yield
    await close_clients()


# -- sans-IO pieces ---------------------------------------------------------------------------


def test_tokens_and_embeddings_are_deterministic() -> None:
    assert "".join(token_texts(8)) == TEXT8
    a, b = embedding("hello", 8), embedding("hello", 8)
    assert a == b and len(a) == 8 and embedding("other", 8) != a
    assert abs(sum(v * v for v in embedding("x", 300)) - 1.0) < 1e-4


def test_settings_and_faults_validate() -> None:
    s = Settings()
    s.update({"models": "a, b:latest", "tokens": 3})
    assert s.models == ["a", "b:latest"]
    assert s.resolve("a:latest") == "a" and s.resolve("b") == "b:latest" and s.resolve("c") is None
    for bad in (
        {"tokens": -1},
        {"api": "grpc"},
        {"token_delay": "x"},
        {"nope": 1},
        {"models": [""]},
    ):
        with pytest.raises(ConfigError):
            s.update(bad)
    f = Faults()
    f.set("status500", True, times=2)
    assert f.take("status500") and f.take("status500") and not f.take("status500")
    with pytest.raises(ConfigError):
        f.set("explode")
    assert parse_fault("drop_after=3") == ("drop_after", 3)
    assert parse_fault("hang") == ("hang", True)


# -- OpenAI protocol --------------------------------------------------------------------------


async def test_openai_chat_plain_and_streamed(node: FakeNode) -> None:
    client = oai(node)
    r = await client.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "say three words"}]
    )
    assert r.choices[0].message.content == TEXT8
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (3, 8, 11)

    stream = await client.chat.completions.create(
        model="m1",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces) == TEXT8 and finish == "stop"
    assert usage is not None and usage.completion_tokens == 8

    short = await client.chat.completions.create(
        model="llama3", messages=[{"role": "user", "content": "x"}], max_tokens=3
    )
    assert short.choices[0].message.content == "tok0 tok1 tok2"
    assert short.choices[0].finish_reason == "length"


async def test_openai_completions_embeddings_models(node: FakeNode) -> None:
    client = oai(node)
    r = await client.completions.create(model="m1", prompt="one two")
    assert r.choices[0].text == TEXT8 and r.usage is not None and r.usage.prompt_tokens == 2
    stream = await client.completions.create(model="m1", prompt="x", stream=True)
    assert "".join([c.choices[0].text async for c in stream]) == TEXT8

    emb = await client.embeddings.create(model="m1", input=["a", "b"])  # base64 by default
    assert [d.index for d in emb.data] == [0, 1]
    assert emb.data[0].embedding == pytest.approx(list(embedding("a", 8)), abs=1e-6)
    floats = await client.embeddings.create(model="m1", input="a", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(list(embedding("a", 8)))

    models = [m.id async for m in client.models.list()]
    assert models == MODELS
    assert (await client.models.retrieve("m1")).id == "m1"
    with pytest.raises(openai.NotFoundError) as exc:
        await client.models.retrieve("gpt-9")
    assert exc.value.code == "model_not_found"


async def test_openai_errors(node: FakeNode) -> None:
    client = oai(node)
    with pytest.raises(openai.NotFoundError) as exc:
        await client.chat.completions.create(model="nope", messages=[])
    assert exc.value.code == "model_not_found"
    async with httpx.AsyncClient(base_url=node.url) as http:
        r = await http.post("/v1/chat/completions", content=b"{not json")
        assert r.status_code == 400
        assert set(r.json()["error"]) == {"message", "type", "code"}
        r = await http.post("/v1/chat/completions", json={"messages": []})
        assert r.status_code == 400
        assert (await http.get("/v1/nothing")).status_code == 404


# -- Ollama protocol --------------------------------------------------------------------------


async def test_ollama_chat_and_generate(node: FakeNode) -> None:
    client = oll(node)
    r = await client.chat(model="m1", messages=[{"role": "user", "content": "hi there"}])
    assert r.message.role == "assistant" and r.message.content == TEXT8
    assert r.done and r.done_reason == "stop" and r.eval_count == 8 and r.prompt_eval_count == 2
    for field in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(getattr(r, field), int)

    loaded = await client.chat(model="llama3", messages=[])  # no messages: only loads
    assert loaded.done_reason == "load" and loaded.message.content == ""
    messages = [{"role": "user", "content": "x"}]
    parts = [p async for p in await client.chat(model="llama3", messages=messages, stream=True)]
    assert "".join(p.message.content or "" for p in parts) == TEXT8
    assert [p.done for p in parts] == [False] * 8 + [True]
    assert parts[-1].eval_count == 8 and parts[-1].total_duration is not None

    g = await client.generate(model="m1", prompt="why")
    assert g.response == TEXT8 and g.done
    gen = [p async for p in await client.generate(model="m1", prompt="why", stream=True)]
    assert "".join(p.response for p in gen) == TEXT8 and gen[-1].done_reason == "stop"
    limited = await client.generate(model="m1", prompt="why", options={"num_predict": 2})
    assert limited.response == "tok0 tok1" and limited.done_reason == "length"


def test_pull_lists_the_model_only_at_success() -> None:
    """Like Ollama: a model is listed once its manifest is written, so a cut pull leaves none."""
    from routercore.testing.fake_api import FakeAPI
    from routercore.testing.fake_state import Settings

    changed: list[bool] = []
    api = FakeAPI(Settings(models=["m1"]), lambda: changed.append(True))
    reply = api.handle("POST", "/api/pull", b'{"model": "big:7b"}')
    assert reply.chunks is not None
    lines = [orjson.loads(next(reply.chunks)) for _ in range(6)]
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-1]["completed"] == lines[-1]["total"] and lines[-1]["digest"]
    assert api.settings.models == ["m1"] and not changed
    rest = [orjson.loads(chunk) for chunk in reply.chunks]
    assert rest[-1] == {"status": "success"}
    assert api.settings.models == ["m1", "big:7b"] and changed


async def test_ollama_embed_list_ps_pull_show(node: FakeNode) -> None:
    client = oll(node)
    e = await client.embed(model="m1", input="hello")
    assert [list(v) for v in e.embeddings] == [pytest.approx(list(embedding("hello", 8)))]
    e2 = await client.embed(model="m1", input=["a", "b"])
    assert len(e2.embeddings) == 2
    legacy = await client.embeddings(model="m1", prompt="hello")
    assert list(legacy.embedding) == list(e.embeddings[0])

    listed = await client.list()
    assert [m.model for m in listed.models] == MODELS
    assert all(m.digest and m.size and m.details for m in listed.models)
    assert [m.model for m in (await client.ps()).models] == ["m1"]  # only the one used so far

    progress = [p async for p in await client.pull("new:1b", stream=True)]
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    steps = [p for p in progress if p.total]
    assert steps[-1].completed == steps[-1].total and steps[0].digest.startswith("sha256:")
    assert "new:1b" in [m.model for m in (await client.list()).models]
    assert (await client.pull("other", stream=False)).status == "success"
    shown = await client.show("new:1b")
    assert shown.details is not None and shown.modelinfo
    assert shown.modelinfo["general.parameter_count"] == 1_000_000_000

    assert (await client.delete("new:1b")).status == "success"
    assert "new:1b" not in [m.model for m in (await client.list()).models]
    with pytest.raises(ollama.ResponseError) as missing:
        await client.delete("new:1b")
    assert missing.value.status_code == 404 and "not found" in missing.value.error

    with pytest.raises(ollama.ResponseError) as exc:
        await client.chat(model="nope", messages=[])
    assert exc.value.status_code == 404
    async with httpx.AsyncClient(base_url=node.url) as http:
        r = await http.post("/api/generate", content=b"[broken")
        assert r.status_code == 400 and isinstance(r.json()["error"], str)
        root = await http.get("/")
        assert root.status_code == 200 and root.text == "Ollama is running"
        assert (await http.get("/api/version")).json()["version"] == "0.0.0-fake"


async def test_api_selection() -> None:
    async with (
        FakeNode(api="openai") as only_openai,
        FakeNode(api="ollama") as only_ollama,
        httpx.AsyncClient() as http,
    ):
        assert (await http.get(only_openai.url + "/api/tags")).status_code == 404
        assert (await http.get(only_openai.url + "/v1/models")).status_code == 200
        assert (await http.get(only_ollama.url + "/v1/models")).status_code == 404
        assert (await http.get(only_ollama.url + "/api/tags")).status_code == 200


# -- transport --------------------------------------------------------------------------------


async def read_message(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> tuple[h11.Request | h11.Response | None, bytes]:
    """Feed `conn` from `reader` until one whole message (or the close) is in: head and body."""
    head: h11.Request | h11.Response | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Request | h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return head, body


async def test_keep_alive_and_pipelining(node: FakeNode) -> None:
    async with httpx.AsyncClient(base_url=node.url) as http:
        for _ in range(5):
            assert (await http.get("/api/tags")).status_code == 200
    assert node.stats.connections_total == 1

    # Three requests in one write; each gets its own h11 client to frame its response.
    body = b'{"model":"m1","prompt":"x","stream":false}'
    clients = [h11.Connection(h11.CLIENT) for _ in range(3)]
    wire = b""
    for c in clients:
        head = [("host", "x"), ("content-length", str(len(body)))]
        wire += c.send(h11.Request(method="POST", target="/api/generate", headers=head))
        wire += c.send(h11.Data(data=body)) + c.send(h11.EndOfMessage())
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(wire)
    leftover = b""
    texts = []
    for c in clients:
        if leftover:
            c.receive_data(leftover)
        _, data = await read_message(c, reader)
        texts.append(orjson.loads(data)["response"])
        leftover = c.trailing_data[0]
    writer.close()
    await writer.wait_closed()
    assert texts == [TEXT8] * 3


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    out = await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    await writer.wait_closed()
    return out


async def test_raw_protocol_edges(node: FakeNode) -> None:
    body = b'{"model":"m1","prompt":"x"}'
    http10 = await raw_exchange(
        node.port,
        b"POST /api/generate HTTP/1.0\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body),
    )
    head, _, payload = http10.partition(b"\r\n\r\n")
    assert b"chunked" not in head  # HTTP/1.0: close-delimited NDJSON
    assert [orjson.loads(x)["done"] for x in payload.splitlines()] == [False] * 8 + [True]

    expect = await raw_exchange(
        node.port,
        b"POST /api/generate HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body),
    )
    assert expect.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")

    head_only = await raw_exchange(
        node.port, b"HEAD / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    assert head_only.startswith(b"HTTP/1.1 200") and head_only.endswith(b"\r\n\r\n")
    assert (await raw_exchange(node.port, b"NONSENSE\r\n\r\n")).startswith(b"HTTP/1.1 400")
    huge = b"POST /api/chat HTTP/1.1\r\nhost: x\r\ncontent-length: 999999999999\r\n\r\n"
    assert (await raw_exchange(node.port, huge)).startswith(b"HTTP/1.1 413")
    delete = b"DELETE /api/tags HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    assert (await raw_exchange(node.port, delete)).startswith(b"HTTP/1.1 405")


async def test_slow_reader_pauses_a_fast_stream() -> None:
    """A zero-delay stream to a client that does not read must wait, not buffer it all."""
    async with FakeNode(tokens=100_000) as n:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", n.port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        body = b'{"model":"fake-model","prompt":"x"}'
        writer.write(
            b"POST /api/generate HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        await eventually(lambda: any(c.writing_paused for c in n.connections))
        assert n.stats.in_flight == 1 and n.stats.completed == 0
        received = bytearray()
        while not received.endswith(b"\r\n0\r\n\r\n"):
            chunk = await reader.read(1 << 20)
            assert chunk, "connection closed early"
            received += chunk
        writer.close()
        await writer.wait_closed()
        assert received.count(b'"done":false') == 100_000
        assert received.count(b'"done":true') == 1
        await eventually(lambda: n.stats.completed == 1 and n.stats.in_flight == 0)


# -- faults -----------------------------------------------------------------------------------


async def test_fault_refuse_and_recover(node: FakeNode) -> None:
    async with httpx.AsyncClient() as http:
        node.set_fault("refuse")
        with pytest.raises(httpx.ConnectError):
            await http.get(node.url + "/api/tags")
        node.clear_faults()
        assert (await http.get(node.url + "/api/tags")).status_code == 200
        # Over HTTP, with a duration so it comes back by itself.
        r = await http.post(
            node.url + "/_fake/config", json={"faults": {"refuse": {"seconds": 0.2}}}
        )
        assert r.status_code == 200

    async def answers() -> bool:
        try:
            async with httpx.AsyncClient() as fresh:
                return (await fresh.get(node.url + "/api/version")).status_code == 200
        except httpx.ConnectError:
            return False

    assert not await answers()
    await eventually(answers)


async def test_fault_status500(node: FakeNode) -> None:
    node.set_fault("status500", times=1)
    with pytest.raises(openai.InternalServerError):
        await oai(node).chat.completions.create(model="m1", messages=[])
    r = await oai(node).chat.completions.create(model="m1", messages=[])  # only once
    assert r.choices[0].message.content == TEXT8
    node.set_fault("status500")
    with pytest.raises(ollama.ResponseError) as exc:
        await oll(node).generate(model="m1", prompt="x")
    assert exc.value.status_code == 500
    async with httpx.AsyncClient() as http:  # non-inference endpoints still answer
        assert (await http.get(node.url + "/api/tags")).status_code == 200


async def test_fault_drop_after_n_chunks(node: FakeNode) -> None:
    node.set_fault("drop_after", 3)
    got: list[bytes] = []
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            async with http.stream(
                "POST", node.url + "/api/chat", json={"model": "m1", "messages": [{"content": "x"}]}
            ) as resp:
                assert resp.status_code == 200
                async for line in resp.aiter_lines():
                    got.append(line.encode())
    assert len(got) == 3
    assert orjson.loads(got[0])["done"] is False
    await eventually(lambda: node.stats.dropped == 1 and node.stats.in_flight == 0)
    assert node.stats.cancelled == 0

    with pytest.raises(openai.APIConnectionError):  # OpenAI client, streamed
        stream = await oai(node).chat.completions.create(model="m1", messages=[], stream=True)
        async for _ in stream:
            pass


async def test_fault_hang_times_out_and_counts_cancel(node: FakeNode) -> None:
    node.set_fault("hang")
    client = oll(node, timeout=0.3)
    with pytest.raises(httpx.ReadTimeout):
        await client.generate(model="m1", prompt="x")
    await eventually(lambda: node.stats.cancelled == 1 and node.stats.in_flight == 0)


async def test_fault_garbage(node: FakeNode) -> None:
    node.set_fault("garbage")
    with pytest.raises(openai.APIConnectionError):
        await oai(node).models.list()
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(node.url + "/api/tags")
        # The control endpoint keeps working so other processes can clear it.
        r = await http.post(node.url + "/_fake/config", json={"clear_faults": True})
        assert r.json()["faults"]["garbage"] is False
        assert (await http.get(node.url + "/api/tags")).status_code == 200


# -- control endpoint, cancellation ------------------------------------------------------------


async def test_runtime_config_over_http(node: FakeNode) -> None:
    async with httpx.AsyncClient(base_url=node.url) as http:
        r = await http.post(
            "/_fake/config",
            json={"tokens": 3, "models": ["x1"], "faults": {"drop_after": 5}, "embedding_dim": 4},
        )
        assert r.status_code == 200
        assert r.json()["settings"]["tokens"] == 3 and r.json()["faults"]["drop_after"] == 5
        assert [m["id"] for m in (await http.get("/v1/models")).json()["data"]] == ["x1"]
        assert (await http.get("/_fake/config")).json()["settings"]["models"] == ["x1"]
        bad = await http.post("/_fake/config", json={"tokens": -3, "faults": {"status500": True}})
        assert bad.status_code == 400
        assert (await http.post("/_fake/config", content=b"{")).status_code == 400
        stats = (await http.get("/_fake/stats")).json()
        assert stats["faults"]["status500"] is False  # the bad request changed nothing
        assert stats["settings"]["tokens"] == 3
        await http.post("/_fake/config", json={"clear_faults": True})
        r = await http.post(
            "/v1/chat/completions", json={"model": "x1", "messages": [{"content": "hey you"}]}
        )
        assert r.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2"
        e = await http.post("/api/embed", json={"model": "x1", "input": "a"})
        assert len(e.json()["embeddings"][0]) == 4

        stats = (await http.get("/_fake/stats")).json()
        assert stats["requests"]["/v1/chat/completions"] == 1
        assert stats["last_body_size"] == len(b'{"model":"x1","input":"a"}')
        assert stats["in_flight"] == 0 and "/_fake/stats" not in stats["requests"]
        reset = (await http.post("/_fake/reset")).json()
        assert reset["requests_total"] == 0 and reset["requests"] == {}


async def test_client_disconnect_stops_generation() -> None:
    async with FakeNode(tokens=10_000, token_delay=0.01) as slow:
        async with (
            httpx.AsyncClient() as http,
            http.stream(
                "POST",
                slow.url + "/v1/chat/completions",
                json={"model": "fake-model", "messages": [], "stream": True},
            ) as resp,
        ):
            async for _line in resp.aiter_lines():
                if slow.stats.in_flight:
                    break
        await eventually(lambda: slow.stats.cancelled == 1 and slow.stats.in_flight == 0)
        assert slow.stats.completed == 0


class _ResetAfterWrites:
    """A transport whose peer resets after `ok` writes, as uvloop's and asyncio's behave: the
    failing write closes the transport at once, later writes are dropped without a word, and
    `connection_lost` comes on a later loop turn. With `pause_first` the first write fills the
    buffer (the client is not reading) until the test resumes writing."""

    def __init__(self, proto: FakeHTTPProtocol, ok: int, *, pause_first: bool) -> None:
        self.proto, self.ok, self.pause_first = proto, ok, pause_first
        self.writes = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        self.writes += 1
        if self.writes > self.ok:
            self.closing = True
            asyncio.get_running_loop().call_soon(
                self.proto.connection_lost, ConnectionResetError("reset by peer")
            )
        elif self.pause_first and self.writes == 1:
            self.proto.pause_writing()

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


@pytest.mark.parametrize("pause_first", [False, True], ids=["unpaused", "after-resume"])
async def test_a_reset_mid_stream_counts_as_cancelled_not_completed(pause_first: bool) -> None:
    """A client that resets while a zero-delay stream is written is a cancel. The reset closes
    the transport before `connection_lost` runs, and the stream never yields in between:
    without noticing the closed transport the node "sent" the rest into nothing and counted the
    answer completed (a slow client through the agent's relay then never showed a cancel)."""
    node = FakeNode(tokens=20_000)
    proto = FakeHTTPProtocol(node)
    transport = _ResetAfterWrites(proto, ok=1 if pause_first else 2, pause_first=pause_first)
    proto.connection_made(transport)  # type: ignore[arg-type]
    body = b'{"model":"fake-model","prompt":"x"}'
    proto.data_received(
        b"POST /api/generate HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s"
        % (len(body), body)
    )
    if pause_first:
        assert proto.writing_paused and proto.task is not None
        proto.resume_writing()  # the peer read a little, then reset
    await eventually(lambda: proto.closed, message="the reset reported")
    if proto.task is not None:
        await asyncio.gather(proto.task, return_exceptions=True)
    assert transport.closing and transport.writes == transport.ok + 1  # stopped at the reset
    assert (node.stats.cancelled, node.stats.completed, node.stats.in_flight) == (1, 0, 0)


async def test_delays_apply_to_streams_and_full_replies() -> None:
    async with FakeNode(tokens=3, token_delay=0.001, first_token_delay=0.001) as n:
        r = await oai(n).chat.completions.create(model="fake-model", messages=[])
        assert r.choices[0].message.content == "tok0 tok1 tok2"
        client = oll(n)
        messages = [{"role": "user", "content": "x"}]
        stream = await client.chat(model="fake-model", messages=messages, stream=True)
        parts = [p async for p in stream]
        assert "".join(p.message.content or "" for p in parts) == "tok0 tok1 tok2"
        assert n.stats.completed == 2 and n.stats.in_flight == 0


# -- registration -----------------------------------------------------------------------------


class RecordingRouter:
    """A minimal HTTP endpoint that records register/heartbeat calls and answers like a router."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.heartbeat_status = 200
        self.registered = 0
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def paths(self) -> list[str]:
        return [c[0] for c in self.calls]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        request, body = await read_message(conn, reader)
        assert isinstance(request, h11.Request)
        headers = {k.decode(): v.decode() for k, v in request.headers}
        path = request.target.decode()
        self.calls.append((path, headers, orjson.loads(body)))
        if path == "/api/agents/register":
            self.registered += 1
            status = 201
            reply: dict[str, Any] = {
                "agent_id": f"id-{self.registered}",
                "status": "registered",
                "agent_token": f"token-{self.registered}",
                "heartbeat_interval_secs": 0.05,
            }
        else:
            status = self.heartbeat_status
            reply = {"status": "ok"} if status == 200 else {"error": "unknown agent"}
        data = orjson.dumps(reply)
        headers_out = [("content-type", "application/json"), ("content-length", str(len(data)))]
        writer.write(conn.send(h11.Response(status_code=status, headers=headers_out)))
        writer.write(conn.send(h11.Data(data=data)) + conn.send(h11.EndOfMessage()))
        await writer.drain()
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def recorder() -> AsyncIterator[RecordingRouter]:
    r = RecordingRouter()
    await r.start()
    yield r
    await r.stop()


async def test_registers_and_heartbeats(recorder: RecordingRouter) -> None:
    url = f"http://127.0.0.1:{recorder.port}"
    async with FakeNode(
        models=["m1"], register=url, registration_token="secret", max_concurrency=4
    ) as n:
        await eventually(lambda: recorder.paths().count("/api/health") >= 2)
        path, headers, reg = recorder.calls[0]
        assert path == "/api/agents/register"
        assert headers["authorization"] == "Bearer secret"
        assert reg["machine_name"] == f"fake-{n.port}" and reg["runtime_port"] == n.port
        assert reg["runtime_version"] == "0.0.0-fake" and reg["models"] == ["m1"]
        assert reg["gpu_devices"] == [] and reg["max_concurrency"] == 4
        assert set(reg["system"]) == {"os", "cpu_model", "cpu_count", "memory_bytes"}
        _, hb_headers, hb = recorder.calls[1]
        assert hb_headers["authorization"] == "Bearer token-1"
        assert hb["agent_id"] == "id-1" and hb["runtime_up"] is True and hb["models"] == ["m1"]
        assert hb["gpu_usage"] is None and hb["active_requests"] == 0
        assert 0 <= hb["cpu_usage"] <= 100 and 0 <= hb["memory_usage"] <= 100

        n.configure(models=["m1", "m2"], cpu_usage=42.0)
        await eventually(lambda: recorder.calls[-1][2].get("models") == ["m1", "m2"])
        await eventually(lambda: recorder.calls[-1][2].get("cpu_usage") == 42.0)

        recorder.heartbeat_status = 404  # the router forgot us: register again
        await eventually(lambda: recorder.registered >= 2)
        recorder.heartbeat_status = 200
        await eventually(lambda: recorder.calls[-1][1].get("authorization") == "Bearer token-2")
        assert n.snapshot()["registration"]["agent_id"] == "id-2"


async def test_registration_retries_until_router_appears() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    router = RecordingRouter()
    async with FakeNode(
        register=f"http://127.0.0.1:{port}", name="box", register_retry_base=0.01
    ) as n:
        assert n.registration is not None
        status = n.registration.status
        await eventually(lambda: status.failures >= 2)
        await router.start(port)
        try:
            await eventually(lambda: "/api/health" in router.paths())
            assert router.calls[0][2]["machine_name"] == "box"
        finally:
            await router.stop()


# -- uvloop -----------------------------------------------------------------------------------


# The async tests above run on the stock loop; these re-run the transport-heavy ones on uvloop,
# whose transports behave differently (and which the CLI and run_in_thread use).
UVLOOP_RERUNS: list[Callable[..., Awaitable[None]]] = [
    test_openai_chat_plain_and_streamed,
    test_ollama_chat_and_generate,
    test_keep_alive_and_pipelining,
    test_slow_reader_pauses_a_fast_stream,
    test_fault_refuse_and_recover,
    test_fault_drop_after_n_chunks,
    test_fault_hang_times_out_and_counts_cancel,
    test_fault_garbage,
    test_client_disconnect_stops_generation,
    test_delays_apply_to_streams_and_full_replies,
]


@pytest.mark.parametrize("scenario", UVLOOP_RERUNS, ids=lambda f: f.__name__[5:])
def test_on_uvloop(scenario: Callable[..., Awaitable[None]]) -> None:
    import uvloop

    async def run() -> None:
        try:
            if scenario.__code__.co_argcount == 0:
                await scenario()
                return
            async with FakeNode(models=MODELS) as n:
                await scenario(n)
        finally:
            await close_clients()

    uvloop.run(run())


# -- threads and the command line -------------------------------------------------------------


def test_run_in_thread_with_sync_clients() -> None:
    with run_in_thread(models=["m1"], tokens=2) as n:
        client = openai.OpenAI(base_url=n.url + "/v1", api_key="x", max_retries=0)
        r = client.chat.completions.create(model="m1", messages=[])
        assert r.choices[0].message.content == "tok0 tok1"
        n.set_fault("status500")  # from this thread: hops onto the node's loop
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m1", messages=[])
        n.clear_faults()
        n.configure(tokens=1)
        sync_ollama = ollama.Client(host=n.url)
        assert sync_ollama.generate(model="m1", prompt="x").response == "tok0"
        sync_ollama.close()
        client.close()
        assert n.snapshot()["requests"]["/v1/chat/completions"] == 2
    handle = run_in_thread()
    url = handle.url
    handle.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/")


@pytest.fixture
def cli() -> Iterator[Callable[..., tuple[subprocess.Popen[str], str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "routercore.testing.fakenode", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=ROOT,
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "fakenode listening on http://" in line, line
        return proc, line.rsplit(" ", 1)[1].strip()

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stdout is not None:
            p.stdout.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_and_exits_cleanly(
    cli: Callable[..., tuple[subprocess.Popen[str], str]], sig: int
) -> None:
    proc, url = cli("--models", "a,b", "--tokens", "2", "--fault", "status500")
    with httpx.Client(base_url=url) as http:
        tags = http.get("/api/tags").json()
        assert [m["name"] for m in tags["models"]] == ["a", "b"]
        assert http.post("/api/generate", json={"model": "a"}).status_code == 500
        http.post("/_fake/config", json={"clear_faults": True})
        r = http.post("/api/generate", json={"model": "a", "prompt": "x", "stream": False})
        assert r.json()["response"] == "tok0 tok1"
    proc.send_signal(sig)
    assert proc.wait(timeout=20) == 0


def test_cli_rejects_bad_fault() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = run_python("-m", "routercore.testing.fakenode", "--fault", "explode", env=env)
    assert r.returncode == 2 and "unknown fault" in r.stderr


def test_embedding_base64_layout() -> None:
    vec = embedding("q", 8)
    packed = base64.b64encode(struct.pack("<8f", *vec))
    assert struct.unpack("<8f", base64.b64decode(packed)) == pytest.approx(vec, abs=1e-6)
