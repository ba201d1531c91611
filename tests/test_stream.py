"""Event streams: iterators that wait, the overflow rule, and settings checked at once."""

from __future__ import annotations

import asyncio

import pytest
from spo_async import (
    ClientClosedError,
    ConfigurationError,
    Event,
    EventStream,
    RoundCompleted,
    TaskResult,
    TaskStatus,
    TaskSubmitted,
)
from spo_async._sansio import build_submit_request
from spo_async.testing import ThreadedEmulator
from spo_async.transport import AiohttpTransport

from .conftest import make_request


def round_event(number: int) -> RoundCompleted:
    """Round ``number`` of a task ``t`` of five rounds."""
    result = TaskResult(task_id="t", status=TaskStatus.PROCESSING, raw_status="processing")
    return RoundCompleted(
        task_id="t",
        number=number,
        total=5,
        success=True,
        prompt="p",
        best_prompt="p",
        result=result,
    )


async def test_an_iterator_waits_for_events_and_ends_when_the_stream_closes() -> None:
    """``async for`` over a stream sees what is emitted after it began, then ends on close."""
    stream = EventStream()
    seen: list[Event] = []

    async def consume() -> None:
        async for event in stream:
            seen.append(event)

    consumer = asyncio.ensure_future(consume())
    await asyncio.sleep(0)  # the iterator is waiting for its first event
    stream.emit(TaskSubmitted(task_id="a"))
    stream.emit(TaskSubmitted(task_id="b"))
    await asyncio.sleep(0)
    stream.close()
    await asyncio.wait_for(consumer, 5)
    assert [e.task_id for e in seen] == ["a", "b"]  # type: ignore[union-attr]
    assert stream.closed
    assert stream.emitted == 2


async def test_a_slow_consumer_loses_progress_events_but_never_an_outcome_or_a_submit() -> None:
    """Past ``max_pending`` unread events, rounds are dropped and counted; lifecycle events stay."""
    stream = EventStream(max_pending=2)
    iterator = stream.subscribe()
    stream.emit(TaskSubmitted(task_id="t"))
    for number in range(1, 6):
        stream.emit(round_event(number))
    stream.emit(TaskSubmitted(task_id="u"))
    stream.close()
    kept = [event async for event in iterator]
    assert [type(e).__name__ for e in kept] == ["TaskSubmitted", "RoundCompleted", "TaskSubmitted"]
    assert stream.dropped == 4
    assert "dropped=4" in repr(stream)


async def test_a_callback_stream_counts_its_own_drops() -> None:
    """A callback slower than the events has its own buffer, with the same rule and count."""
    release = asyncio.Event()
    got: list[Event] = []

    async def slow(event: Event) -> None:
        await release.wait()
        got.append(event)

    stream = EventStream(slow, max_pending=1)
    stream.emit(round_event(1))
    await asyncio.sleep(0)  # delivery takes the first one and waits in the callback
    stream.emit(round_event(2))
    stream.emit(round_event(3))
    release.set()
    await stream.aclose()
    assert [e.number for e in got] == [1, 2]  # type: ignore[union-attr]
    assert stream.dropped == 1


def test_a_callback_that_is_not_callable_is_refused_when_the_stream_is_made() -> None:
    """``EventStream(42)`` fails at once, not at the first event."""
    with pytest.raises(ConfigurationError, match="callable"):
        EventStream(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [{"max_connections": 0}, {"max_response_bytes": 0}, {"connect_timeout": -1.0}],
    ids=["no-connections", "no-bytes", "negative-connect-timeout"],
)
def test_transport_settings_that_cannot_work_are_configuration_errors(
    options: dict[str, float],
) -> None:
    """The transport refuses impossible settings with the SDK's typed error."""
    with pytest.raises(ConfigurationError):
        AiohttpTransport(**options)  # type: ignore[arg-type]


async def test_a_closed_transport_refuses_to_send() -> None:
    """After ``aclose`` the transport raises ClientClosedError, it does not reopen a pool."""
    with ThreadedEmulator() as emu:
        transport = AiohttpTransport()
        await transport.aclose()
        request = build_submit_request(emu.base_url, emu.api_key, make_request())
        with pytest.raises(ClientClosedError):
            await transport.send(request, timeout=1.0)
        assert emu.tasks_created == 0
