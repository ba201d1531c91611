"""Shared fixtures: a real emulator on loopback and a client pointed at it."""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import pytest
from spo_async import (
    AsyncSPOClient,
    InvalidRequestError,
    OptimizationRequest,
    QAPair,
    RequestLimiter,
    RetryPolicy,
)
from spo_async.polling import FixedSchedule
from spo_async.testing import Emulator, EmulatorConfig, ManualClock

#: Fast enough that a 5-round task finishes in a few tens of milliseconds.
FAST = EmulatorConfig(round_seconds=0.004, seed=1)


def make_request(
    prompt: str = "Act as the user's girlfriend", **changes: object
) -> OptimizationRequest:
    """The spec's example request, with any field changed."""
    fields: dict[str, object] = {
        "prompt": prompt,
        "qa": [
            QAPair("Good morning", "[thoughts][reply]"),
            QAPair("Do you love me?", "[thoughts][reply]"),
        ],
        "max_rounds": 3,
        "model": "claude-3-5-sonnet-20240620",
    }
    fields.update(changes)
    return OptimizationRequest(**fields)  # type: ignore[arg-type]


class VirtualTime:
    """A clock and a sleep for a client that never wait: sleeping moves the clock on at once.

    Pass ``clock=vt.clock, sleep=vt.sleep`` to a client. Each wait is recorded in
    :attr:`sleeps`, adds its length to the clock and yields to the event loop once.
    Built on the emulator's :class:`ManualClock` (``EmulatorConfig(clock=...)``),
    the service's tasks move on by the client's waits too: a poll that waits 5 s
    finds its task 5 s further on, without 5 s passing. With many waiters, each
    one's wait moves the shared clock, so time runs faster than any one of them
    sees; that never changes what a task reports, only how few looks it takes.
    """

    def __init__(self, clock: ManualClock | None = None) -> None:
        self._clock = clock if clock is not None else ManualClock(100.0)
        self.sleeps: list[float] = []

    def clock(self) -> float:
        """The time now, in seconds."""
        return self._clock()

    async def sleep(self, seconds: float) -> None:
        """Record the wait, move the clock past it, and let other tasks run."""
        self.sleeps.append(seconds)
        self._clock.advance(seconds)
        await asyncio.sleep(0)


async def until(condition: Callable[[], object], *, timeout: float = 10.0, what: str = "") -> None:
    """Yield to the event loop until ``condition()`` holds, for an event with no hook to await.

    A test that must wait for something another party does (the emulator counting a
    request, a connection going back to the pool) waits for that very thing rather than
    for a guessed number of milliseconds, so its verdict does not hang on the machine's
    speed. It looks every millisecond; ``timeout`` (real seconds) is only a guard, generous
    so that a loaded CI machine never reaches it, that turns a hang into a clear failure
    naming ``what`` was awaited.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout} s for: {what or condition}")
        await asyncio.sleep(0.001)


def wait_until(condition: Callable[[], object], *, timeout: float = 10.0, what: str = "") -> None:
    """:func:`until` for sync tests: block the thread until ``condition()`` holds.

    For tests that drive a subprocess or a :class:`~spo_async.testing.ThreadedEmulator`
    from plain code, where there is no event loop to yield to; it looks every 5 ms.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout} s for: {what or condition}")
        time.sleep(0.005)  # a thread or a subprocess: no need to spin faster


#: What an unknown model (-10008, HTTP 503) raises.
NO_CHANNEL_ERROR = InvalidRequestError


def unpaced_limiter() -> RequestLimiter:
    """A request limiter that never paces: no slow start, no pause after a 429.

    Tests that hold the client's retry rules rather than the limiter's pacing
    (test_limiter's subject) use it, so that a ``Retry-After: 30`` is the retry
    policy's recorded wait alone and a real-time test pays no slow start.
    """
    return RequestLimiter(start_rate=1e6, min_rate=1e6, max_pause=0)


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    """Override in a test module to shape the emulator."""
    return FAST


@pytest.fixture
async def emu(emulator_config: EmulatorConfig) -> AsyncIterator[Emulator]:
    """A running emulator on 127.0.0.1 with a free port."""
    async with Emulator(emulator_config) as emulator:
        yield emulator


@pytest.fixture
def clock() -> ManualClock:
    """A hand-driven clock, for an ``emulator_config`` that runs on it.

    It starts at 100 s rather than 0, so that no code can mistake the start for "unset".
    """
    return ManualClock(100.0)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session, for tests that speak raw HTTP to the emulator."""
    async with aiohttp.ClientSession() as client:
        yield client


ClientFactory = Callable[..., AsyncSPOClient]


@pytest.fixture
async def make_client(emu: Emulator) -> AsyncIterator[ClientFactory]:
    """Build clients for the emulator with zero-wait retries, fast polling and no pacing.

    The limiter's own pacing (its slow start, its pauses) is test_limiter's subject; here
    it would only add real time, so each client gets an unpaced one unless a test says.
    """
    clients: list[AsyncSPOClient] = []

    def factory(**options: object) -> AsyncSPOClient:
        settings: dict[str, object] = {
            "api_key": emu.api_key,
            "base_url": emu.base_url,
            "retry": RetryPolicy.no_wait(),
            "schedule": FixedSchedule(interval=0.002),
            "request_timeout": 2.0,
        }
        if "clock" not in options:  # a client on a virtual clock may pace: it costs no time
            settings["limiter"] = unpaced_limiter()
        settings.update(options)
        client = AsyncSPOClient(**settings)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
def virtual_time(clock: ManualClock) -> VirtualTime:
    """A :class:`VirtualTime` on the ``clock`` fixture: the waits of the test's clients."""
    return VirtualTime(clock)


def on_virtual_time(make_client: ClientFactory, time: VirtualTime) -> ClientFactory:
    """``make_client``, with clients whose waits move ``time`` on instead of waiting.

    For a module whose ``emulator_config`` runs on the ``clock`` fixture, override
    ``make_client`` with it; the tasks then move on only as the clients wait, and no
    test waits for a round in real time::

        @pytest.fixture
        def make_client(make_client: ClientFactory, virtual_time: VirtualTime) -> ClientFactory:
            return on_virtual_time(make_client, virtual_time)

    A test that passes its own ``clock`` and ``sleep`` keeps them (its tasks then stand
    still unless its sleep moves the ``clock`` fixture on).
    """

    def factory(**options: object) -> AsyncSPOClient:
        return make_client(**{"clock": time.clock, "sleep": time.sleep, **options})

    return factory


@pytest.fixture
def client(make_client: ClientFactory) -> AsyncSPOClient:
    """A client for the emulator with zero-wait retries and fast polling."""
    return make_client()


def exception_texts(exc: BaseException) -> Iterator[str]:
    """Everything an exception says about itself, along its whole chain."""
    yield "".join(traceback.format_exception(exc))
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        yield str(error)
        yield repr(error)
        yield from (repr(arg) for arg in error.args)
        yield from getattr(error, "__notes__", [])
        for name, value in vars(error).items():
            if isinstance(value, BaseException):
                pending.append(value)
            else:
                yield f"{name}={value!r}"
        pending += [e for e in (error.__cause__, error.__context__) if e is not None]
