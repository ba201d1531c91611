"""Delivering events: :class:`EventStream`, to a callback and to async iterators.

A stream hands events to a callback (sync or async) and to any number of async
iterators without ever making the producer wait: ``emit`` is a plain function
that appends to a buffer, so the polling loop that emits an event never
blocks on a slow consumer. See :class:`EventStream` for what happens when a
consumer falls behind. The events themselves are in :mod:`spo_async._events`.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeAlias

from ._checks import check_count
from ._errors import ConfigurationError

if TYPE_CHECKING:
    from ._models import OptimizationRequest, TaskResult
    from ._polling import Observer

from ._events import (
    BatchProgress,
    Event,
    EventCallback,
    RoundCompleted,
    TaskQueued,
    TaskRetrying,
)

__all__ = [
    "DEFAULT_MAX_PENDING",
    "EventStream",
    "OnEvent",
    "Watching",
    "as_stream",
    "check_on_event",
]

log = logging.getLogger("spo_async")

#: Events a consumer may hold unread before progress events are dropped.
DEFAULT_MAX_PENDING = 10_000

#: Events that may be dropped when a consumer falls behind: later ones say more.
_LOSSY = (TaskQueued, RoundCompleted, TaskRetrying, BatchProgress)


class _Buffer:
    """One consumer's unread events, with the overflow rule applied on append."""

    def __init__(self, max_pending: int) -> None:
        self.items: collections.deque[Event] = collections.deque()
        self.max_pending = max_pending
        self.dropped = 0
        self.wakeup = asyncio.Event()

    def put(self, event: Event) -> None:
        if len(self.items) >= self.max_pending and isinstance(event, _LOSSY):
            self.dropped += 1
            return
        self.items.append(event)
        self.wakeup.set()


class _Subscription:
    """An async iterator over the events emitted after it was made."""

    def __init__(self, stream: EventStream, buffer: _Buffer) -> None:
        self._stream = stream
        self._buffer = buffer

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        buffer = self._buffer
        while not buffer.items:
            if self._stream.closed:
                raise StopAsyncIteration
            buffer.wakeup.clear()
            await buffer.wakeup.wait()
        return buffer.items.popleft()


class EventStream:
    """Delivers events to a callback and to async iterators; ``emit`` never waits.

    ``callback`` (sync or async) gets every event in order, called from one
    delivery task of the stream's own, so a slow callback delays later events,
    never the code that emits them. An exception in the callback is logged and
    delivery goes on. ``async for event in stream`` (or :meth:`subscribe`) sees
    the events emitted after the iteration began, and ends once the stream is
    closed and drained.

    Overflow rule: each consumer holds at most ``max_pending`` unread events.
    Beyond that, progress events (queued, rounds, retries, batch counters) are
    dropped and counted in :attr:`dropped`, because the next one supersedes
    them; lifecycle events (submitted and every final event) are always kept, so
    no task's outcome is lost, and they number at most two per task.

    Close the stream when done (``async with EventStream(cb) as stream:``, or
    :meth:`aclose`): it waits until the callback has seen every event emitted,
    and leaves no task behind.

    A stream that a call makes for a plain callback (``on_event=callback``) is
    closed by that call before it returns, within the call's own deadline: a
    callback slower than the events never stretches the wait. When the deadline
    has passed, events the callback has not been handed yet are dropped (and
    logged at DEBUG); the call's return value or exception is the authoritative
    outcome. Pass an :class:`EventStream` you own to keep every event.
    """

    def __init__(
        self, callback: EventCallback | None = None, *, max_pending: int = DEFAULT_MAX_PENDING
    ) -> None:
        if callback is not None and not callable(callback):
            raise ConfigurationError(
                f"the event callback must be callable, got {type(callback).__name__}"
            )
        check_count("max_pending", max_pending)
        self._callback = callback
        self._max_pending = max_pending
        self._callback_buffer = _Buffer(max_pending) if callback is not None else None
        self._buffers: weakref.WeakSet[_Buffer] = weakref.WeakSet()
        self._dispatcher: asyncio.Task[None] | None = None
        self._closed = False
        self._emitted = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<EventStream {state} emitted={self._emitted} dropped={self.dropped}>"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called; nothing more is delivered after the drain."""
        return self._closed

    @property
    def emitted(self) -> int:
        """Events emitted so far."""
        return self._emitted

    @property
    def dropped(self) -> int:
        """Progress events dropped because a consumer had ``max_pending`` unread."""
        buffers = [*self._buffers]
        if self._callback_buffer is not None:
            buffers.append(self._callback_buffer)
        return sum(b.dropped for b in buffers)

    def emit(self, event: Event) -> None:
        """Hand ``event`` to every consumer; returns at once. Ignored after :meth:`close`."""
        if self._closed:
            return
        self._emitted += 1
        for buffer in self._buffers:
            buffer.put(event)
        if self._callback_buffer is not None:
            self._callback_buffer.put(event)
            if self._dispatcher is None:
                self._dispatcher = asyncio.get_running_loop().create_task(
                    self._dispatch(), name="spo-async event delivery"
                )

    __call__ = emit

    def subscribe(self) -> AsyncIterator[Event]:
        """An iterator over the events emitted from now on, until the stream closes."""
        buffer = _Buffer(self._max_pending)
        # Weakly held: an iterator its consumer dropped stops collecting events.
        self._buffers.add(buffer)
        return _Subscription(self, buffer)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.subscribe()

    async def _dispatch(self) -> None:
        buffer = self._callback_buffer
        callback = self._callback
        assert buffer is not None  # noqa: S101 - only started when there is a callback
        assert callback is not None  # noqa: S101
        while True:
            while buffer.items:
                event = buffer.items.popleft()
                try:
                    outcome = callback(event)
                    if inspect.isawaitable(outcome):
                        await outcome
                except Exception:
                    log.exception("the event callback raised on %r; delivery goes on", event)
            if self._closed:
                return
            buffer.wakeup.clear()
            await buffer.wakeup.wait()

    def close(self) -> None:
        """Stop taking events; iterators end once they have read what is left."""
        if self._closed:
            return
        self._closed = True
        for buffer in self._buffers:
            buffer.wakeup.set()
        if self._callback_buffer is not None:
            self._callback_buffer.wakeup.set()

    async def aclose(self) -> None:
        """Close, then wait until the callback has had every event. Cancelling it stops that."""
        self.close()
        dispatcher = self._dispatcher
        if dispatcher is not None:
            await dispatcher

    async def _close_within(self, seconds: float | None) -> None:
        """Close, give the callback at most ``seconds`` to catch up, then stop delivering.

        ``None`` waits for the whole drain, as :meth:`aclose`. Events still
        undelivered when the time is up are dropped and counted in :attr:`dropped`.
        """
        self.close()
        dispatcher = self._dispatcher
        if dispatcher is None or dispatcher.done():
            return
        if seconds is None:
            await dispatcher
            return
        done, _ = await asyncio.wait({dispatcher}, timeout=max(0.0, seconds))
        if done:
            return
        dispatcher.cancel()
        await asyncio.gather(dispatcher, return_exceptions=True)
        buffer = self._callback_buffer
        if buffer is not None and buffer.items:
            log.debug(
                "the wait's deadline passed: %d events were not handed to the callback",
                len(buffer.items),
            )
            buffer.dropped += len(buffer.items)
            buffer.items.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def check_on_event(on_event: object) -> None:
    """Refuse an ``on_event`` that is neither ``None``, an :class:`EventStream` nor callable."""
    if on_event is not None and not isinstance(on_event, EventStream) and not callable(on_event):
        raise ConfigurationError(
            f"on_event must be a callable or an EventStream, got {type(on_event).__name__}"
        )


def as_stream(on_event: EventCallback | EventStream | None) -> tuple[EventStream | None, bool]:
    """An ``on_event`` argument as a stream, and whether the caller owns (must close) it.

    A stream passed in stays open (its owner closes it); a callback gets a
    stream of its own that the caller closes with ``EventStream._close_within``.
    """
    check_on_event(on_event)
    if on_event is None or isinstance(on_event, EventStream):
        return on_event, False
    return EventStream(on_event), True


#: What ``on_event=`` accepts: a callback (sync or async), a stream, or nothing.
OnEvent: TypeAlias = EventCallback | EventStream | None


class Watching:
    """One call's events: its stream, the reporter that feeds it, and its bounded close."""

    def __init__(
        self, on_event: OnEvent, *, deadline: float | None, clock: Callable[[], float]
    ) -> None:
        self._stream, self._owned = as_stream(on_event)
        self._deadline = deadline
        self._clock = clock

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stream = self._stream
        if stream is None or not self._owned:
            return
        cancelled = isinstance(exc_info[1], asyncio.CancelledError)
        left = None if self._deadline is None else self._deadline - self._clock()
        await stream._close_within(0.0 if cancelled else left)

    def reporter(self, *, total: int | None) -> Observer | None:
        if self._stream is None:
            return None
        from ._events import Reporter  # noqa: PLC0415

        return Reporter(self._stream.emit, total=total)

    def submitted(self, task_id: str) -> None:
        if self._stream is not None:
            from ._events import TaskSubmitted  # noqa: PLC0415

            self._stream.emit(TaskSubmitted(task_id=task_id))

    def ended(
        self,
        *,
        task_id: str | None,
        request: OptimizationRequest | None = None,
        result: TaskResult | None = None,
        error: BaseException | None = None,
    ) -> None:
        if self._stream is not None:
            from ._events import outcome_of  # noqa: PLC0415

            self._stream.emit(
                outcome_of(request=request, task_id=task_id, result=result, error=error)
            )
