"""RequestLimiter: rate, concurrency, pause on 429 and AIMD, on virtual time and for real."""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from spo_async import (
    AiohttpTransport,
    AsyncSPOClient,
    ConfigurationError,
    FixedSchedule,
    RetryPolicy,
)
from spo_async._limiter import RequestLimiter
from spo_async._sansio import HTTPRequest, HTTPResponse, parse_retry_after
from spo_async.testing import Emulator, EmulatorConfig, Fault, FaultKind

from .conftest import make_request

T = TypeVar("T")


# -- a loop whose clock only moves when everything waits ------------------------------------


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: when nothing is ready, time jumps to the next timer.

    aiolimiter and the limiter read ``loop.time()``, so whole minutes of rate
    limiting run in milliseconds, exactly, with no real sleeping.
    """

    def __init__(self) -> None:
        super().__init__(selectors.DefaultSelector())
        self._now = 0.0
        selector: Any = self._selector  # type: ignore[attr-defined]
        real_select = selector.select

        def select(timeout: float | None = None) -> list[Any]:
            events: list[Any] = real_select(0)
            if events:
                return events
            if timeout is None:
                raise RuntimeError("deadlock: nothing scheduled and nothing ready")
            # Each turn of the loop costs a microsecond, as on a real clock; without it a
            # timer that float rounding puts at "now" would be rescheduled forever.
            self._now += max(0.0, timeout) + 1e-6
            return events

        selector.select = select

    def time(self) -> float:
        return self._now


def run_virtual(main: Callable[[], Awaitable[T]]) -> T:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def max_in_window(times: list[float], window: float) -> int:
    """The most events in any half-open window of ``window`` seconds."""
    ordered = sorted(times)
    best = start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def _hammer(
    limiter: RequestLimiter,
    count: int,
    *,
    hold: float = 0.0,
    during: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> list[float]:
    """Send ``count`` fake requests through the limiter; return when each one was let out."""
    loop = asyncio.get_running_loop()
    sent: list[float] = []
    numbers = iter(range(count))

    async def worker() -> None:
        for _ in numbers:
            async with limiter.slot():
                sent.append(loop.time())
                if during is not None:
                    during(len(sent))
                await asyncio.sleep(hold)
            limiter.on_success()

    await asyncio.gather(*(worker() for _ in range(workers or count)))
    return sent


# -- virtual-time unit tests -----------------------------------------------------------------


def test_rate_is_never_exceeded_in_any_window() -> None:
    """At rate 10 with burst 1, no second holds more than 10 requests, and none are lost."""

    async def main() -> list[float]:
        return await _hammer(RequestLimiter(rate=10), 55)

    sent = run_virtual(main)
    assert len(sent) == 55
    assert max_in_window(sent, 1.0) <= 10
    assert sent[-1] == pytest.approx(5.4, abs=0.01)


def test_burst_lets_that_many_out_at_once_then_the_rate_holds() -> None:
    """A burst of 5 lets 5 requests out at once; after that the pace is the rate."""

    async def main() -> list[float]:
        return await _hammer(RequestLimiter(rate=10, burst=5), 40)

    sent = run_virtual(main)
    assert sum(1 for t in sent if t < 0.01) == 5
    assert max_in_window(sent, 1.0) <= 10 + 5
    assert max_in_window([t for t in sent if t >= 1.0], 1.0) <= 10


def test_concurrency_cap_bounds_requests_in_flight() -> None:
    """With max_concurrent=3, never more than three requests are between enter and exit."""
    peak = 0

    async def main() -> RequestLimiter:
        limiter = RequestLimiter(max_concurrent=3)

        def watch(_: int) -> None:
            nonlocal peak
            peak = max(peak, limiter.in_flight)

        await _hammer(limiter, 20, hold=0.1, during=watch)
        return limiter

    limiter = run_virtual(main)
    assert peak == 3
    assert limiter.in_flight == 0
    assert limiter.requests_sent == 20


def test_429_pauses_everyone_for_retry_after_and_halves_the_rate() -> None:
    """After a 429 with Retry-After 2, nobody sends for 2 s, then at half the rate."""
    hit_at: list[float] = []

    async def main() -> tuple[list[float], RequestLimiter]:
        limiter = RequestLimiter(rate=10, recovery_interval=1_000)
        loop = asyncio.get_running_loop()

        def maybe_429(n: int) -> None:
            if n == 10:
                hit_at.append(loop.time())
                limiter.on_rate_limited(2.0)

        sent = await _hammer(limiter, 30, during=maybe_429)
        return sent, limiter

    sent, limiter = run_virtual(main)
    (t429,) = hit_at
    assert limiter.current_rate == 5
    assert limiter.rate_limited == 1
    after = [t for t in sent if t > t429]
    assert min(after) >= t429 + 2.0
    assert max_in_window(after, 1.0) <= 5
    assert len(sent) == 30


def test_a_burst_of_429s_is_one_decrease() -> None:
    """Many 429s within the cooldown halve the rate once, not once each."""

    async def main() -> RequestLimiter:
        limiter = RequestLimiter(rate=16)
        for _ in range(10):
            limiter.on_rate_limited(None)
        return limiter

    assert run_virtual(main).current_rate == 8


def test_rate_recovers_additively_up_to_the_configured_rate() -> None:
    """After a 429 the rate climbs back one step per interval, never past the configured rate."""
    seen: list[tuple[float, float]] = []

    async def main() -> RequestLimiter:
        limiter = RequestLimiter(rate=10, recovery_step=1, recovery_interval=1)
        loop = asyncio.get_running_loop()
        limiter.on_rate_limited(None)
        assert limiter.current_rate == 5

        def record(_: int) -> None:
            assert limiter.current_rate is not None
            seen.append((loop.time(), limiter.current_rate))

        await _hammer(limiter, 80, during=record, workers=4)
        return limiter

    limiter = run_virtual(main)
    rates = [r for _, r in seen]
    assert rates == sorted(rates)
    assert rates[-1] == limiter.current_rate == 10
    for at, rate in seen:
        assert rate <= 5 + at + 1e-9  # one step per second at most


def test_without_a_rate_a_429_caps_at_half_the_observed_rate_then_lets_go() -> None:
    """An unlimited limiter slows to half what it saw on a 429, and is unlimited again later."""

    async def main() -> tuple[float | None, RequestLimiter]:
        limiter = RequestLimiter(recovery_interval=0.5)
        await _hammer(limiter, 40, workers=40)
        limiter.on_rate_limited(None)
        capped = limiter.current_rate
        await _hammer(limiter, 200, workers=10)
        return capped, limiter

    capped, limiter = run_virtual(main)
    assert capped == 20
    assert limiter.current_rate is None


def test_a_cancelled_waiter_gives_its_place_back() -> None:
    """Cancelling a request that waits for a slot leaves no slot taken."""

    async def main() -> RequestLimiter:
        limiter = RequestLimiter(rate=1, max_concurrent=1)

        async def one() -> None:
            async with limiter.slot():
                await asyncio.sleep(5)

        first = asyncio.create_task(one())
        waiting = asyncio.create_task(one())
        await asyncio.sleep(1)
        waiting.cancel()
        await asyncio.gather(first, waiting, return_exceptions=True)
        async with limiter.slot():
            assert limiter.in_flight == 1
        return limiter

    limiter = run_virtual(main)
    assert limiter.in_flight == 0
    assert limiter.requests_sent == 2


@pytest.mark.parametrize(
    ("options", "field"),
    [
        pytest.param({"rate": 0}, "rate", id="zero-rate"),
        pytest.param({"rate": float("inf")}, "rate", id="infinite-rate"),
        pytest.param({"max_concurrent": 0}, "max_concurrent", id="zero-concurrency"),
        pytest.param({"max_concurrent": 2.5}, "max_concurrent", id="float-concurrency"),
        pytest.param({"burst": 0.5}, "burst", id="burst-below-one"),
        pytest.param({"decrease_factor": 1.0}, "decrease_factor", id="no-decrease"),
        pytest.param({"recovery_step": -1}, "recovery_step", id="negative-step"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], field: str) -> None:
    """Each nonsensical setting is a ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=field):
        RequestLimiter(**options)


# -- against the emulator, through a transport that holds a slot per request ----------------


class LimitedTransport:
    """What the client's ``_send`` will do: hold a slot per request, report 429s and successes."""

    def __init__(self, limiter: RequestLimiter) -> None:
        self.limiter = limiter
        self.inner = AiohttpTransport()
        self.sent_at: list[float] = []
        self.rate_limited_at: list[float] = []

    async def send(self, request: HTTPRequest, *, timeout: float) -> HTTPResponse:
        loop = asyncio.get_running_loop()
        async with self.limiter.slot():
            self.sent_at.append(loop.time())
            response = await self.inner.send(request, timeout=timeout)
        if response.status == 429:
            self.rate_limited_at.append(loop.time())
            retry_after = parse_retry_after(response.headers.get("retry-after"), now=time.time())
            self.limiter.on_rate_limited(retry_after)
        else:
            self.limiter.on_success()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(round_seconds=0.01, queue_seconds=0.0, seed=1)


async def test_request_rate_stays_under_the_limit_and_drops_after_429s(emu: Emulator) -> None:
    """Against the emulator: no second exceeds the rate; after 429s the limiter pauses and slows."""
    rate = 80.0
    limiter = RequestLimiter(rate=rate, recovery_interval=60)
    transport = LimitedTransport(limiter)
    client = AsyncSPOClient(
        api_key=emu.api_key,
        base_url=emu.base_url,
        transport=transport,
        retry=RetryPolicy(attempts=20, initial=0.0, maximum=0.0),
        schedule=FixedSchedule(interval=0.005),
    )
    async with client:
        requests = [make_request(f"prompt {i}", max_rounds=2) for i in range(40)]
        await asyncio.gather(*(client.optimize(r) for r in requests))
        before = list(transport.sent_at)
        assert max_in_window(before, 1.0) <= rate + 1
        assert limiter.current_rate == rate

        emu.inject(Fault(FaultKind.RATE_LIMIT, endpoint="any", times=3, retry_after=0.2))
        more = [make_request(f"more {i}", max_rounds=2) for i in range(40)]
        await asyncio.gather(*(client.optimize(r) for r in more))

    assert emu.faults_fired[FaultKind.RATE_LIMIT] == 3
    assert limiter.rate_limited == 3
    assert limiter.current_rate is not None
    assert limiter.current_rate <= rate / 2
    first_429 = transport.rate_limited_at[0]
    after = [t for t in transport.sent_at if t > first_429]
    # Everyone waited out Retry-After, then went at no more than half the rate.
    assert min(after) >= first_429 + 0.2
    assert max_in_window(after, 1.0) <= rate / 2 + 1
    assert emu.tasks_created == 80
