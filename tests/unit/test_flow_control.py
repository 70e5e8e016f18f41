"""FlowControl without sockets: one read-paused flag, the drain event, the write timeout."""

from __future__ import annotations

import asyncio
from typing import Any

from routercore.http.flow import FlowControl


class FakeTransport:
    """Counts what FlowControl asks of a transport."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.buffered = 0
        self.high = 0

    def set_write_buffer_limits(self, high: int) -> None:
        self.high = high

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def get_write_buffer_size(self) -> int:
        return self.buffered


def flow(high: int = 100) -> tuple[FlowControl, FakeTransport]:
    transport = FakeTransport()
    return FlowControl(transport, high), transport  # type: ignore[arg-type]


def test_reading_is_paused_and_resumed_once_whoever_asks() -> None:
    """The HTTP connection and the WebSocket share the flag: a second pause is no second call."""
    control, transport = flow()
    control.pause_reading()
    control.pause_reading()
    assert control.read_paused
    control.resume_reading()
    control.resume_reading()
    assert not control.read_paused
    assert transport.calls == ["pause", "resume"]


def test_the_high_water_mark_is_set_on_the_transport_and_judges_optional_writes() -> None:
    control, transport = flow(high=100)
    assert transport.high == 100
    transport.buffered = 99
    assert not control.buffer_full()
    transport.buffered = 100
    assert control.buffer_full()


def test_a_writer_waits_while_paused_and_goes_on_when_resumed() -> None:
    async def main() -> Any:
        control, _ = flow()
        assert await control.wait_writable(0.01)  # not paused: at once
        control.pause_writing()
        assert control.write_paused
        waiter = asyncio.create_task(control.wait_writable(30))
        await asyncio.sleep(0)
        assert not waiter.done()
        control.resume_writing()
        assert await waiter
        assert not control.write_paused

    asyncio.run(main())


def test_a_writer_gives_up_after_the_timeout() -> None:
    async def main() -> bool:
        control, _ = flow()
        control.pause_writing()
        return await control.wait_writable(0.01)

    assert asyncio.run(main()) is False


def test_a_cancelled_writer_is_cancelled_even_as_writing_resumes() -> None:
    """The client left (the handler is cancelled) in the same loop turn as the buffer drained:
    the cancellation must reach the writer, not be swallowed as asyncio.wait_for can on 3.11."""

    async def main() -> None:
        control, _ = flow()
        control.pause_writing()
        waiter = asyncio.create_task(control.wait_writable(30))
        await asyncio.sleep(0)
        control.resume_writing()
        waiter.cancel()
        try:
            await waiter
        except asyncio.CancelledError:
            return
        raise AssertionError("the cancellation was swallowed")

    asyncio.run(main())


def test_every_waiting_writer_is_woken_and_none_is_left_behind() -> None:
    async def main() -> None:
        control, _ = flow()
        control.pause_writing()
        waiters = [asyncio.create_task(control.wait_writable(30)) for _ in range(3)]
        await asyncio.sleep(0)
        control.resume_writing()
        assert await asyncio.gather(*waiters) == [True, True, True]
        control.pause_writing()
        assert await control.wait_writable(0.01) is False
        assert control._waiters == []

    asyncio.run(main())
