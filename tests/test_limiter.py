"""RequestLimiter: one budget on the client's clock, that finds a quota and ignores random 429s.

Every test runs on a :class:`ManualClock` bound to the limiter with a sleep that moves it.
Only the first request in the limiter's queue ever sleeps, so the clock moves exactly as
the limiter asks and minutes of traffic take milliseconds, with no real sleeping. The
quota is the emulator's own (:class:`QuotaGate`, on the same clock), once in memory and
once over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from spo_async import ConfigurationError
from spo_async._limiter import BudgetPolicy, RequestLimiter, _Recent
from spo_async._sansio import build_task_request, parse_retry_after
from spo_async.testing import Emulator, EmulatorConfig, ManualClock
from spo_async.testing._quota import QuotaGate
from spo_async.transport import AiohttpTransport

#: ``server(now)`` answers one request: ``None`` for a success, else the Retry-After of a 429.
Server = Callable[[float], "float | None"]


class Time:
    """A manual clock, and a sleep that moves it (and counts what it was asked for)."""

    def __init__(self) -> None:
        self.clock = ManualClock(100.0)
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)

    def limiter(self, **settings: Any) -> RequestLimiter:
        limiter = RequestLimiter(**settings)
        limiter._bind(self.clock, self.sleep)
        return limiter


class Sent:
    """What :func:`drive` saw: when each request left, and which ones got 429."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.refused: list[float] = []
        self.rates: list[tuple[float, float]] = []  # (time, current_rate) at each send


def quota(t: Time, per_second: float) -> Server:
    """The emulator's quota on the test's clock, answering as the gateway would."""
    gate = QuotaGate(per_second, clock=t.clock, record=False)

    def server(_: float) -> float | None:
        reply = gate.check("key")
        return None if reply is None else float(dict(reply.headers)["Retry-After"])

    return server


def with_noise(server: Server, share: float, seed: int = 7) -> Server:
    """``server``, plus a 429 (Retry-After 1) for ``share`` of what it let through."""
    rng = random.Random(seed)

    def noisy(now: float) -> float | None:
        answer = server(now)
        if answer is None and rng.random() < share:
            return 1.0
        return answer

    return noisy


def always_ok(_: float) -> float | None:
    return None


async def drive(
    t: Time, limiter: RequestLimiter, count: int, server: Server = always_ok, workers: int = 50
) -> Sent:
    """Send ``count`` requests through ``limiter`` from ``workers`` tasks; report each answer."""
    sent = Sent()
    numbers = iter(range(count))

    async def worker() -> None:
        for _ in numbers:
            async with limiter.slot():
                now = t.clock()
                sent.times.append(now)
                sent.rates.append((now, limiter.current_rate))
                retry_after = server(now)
            if retry_after is None:
                limiter.on_success()
            else:
                sent.refused.append(now)
                limiter.on_rate_limited(retry_after)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return sent


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most events in any half-open window of ``window`` seconds."""
    ordered = sorted(times)
    best = start = 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - window + 1e-9:  # ten steps of 0.1 s make 0.999...
            start += 1
        best = max(best, end - start + 1)
    return best


# -- one clock -------------------------------------------------------------------------------


async def test_waits_only_through_the_clock_and_sleep_it_is_bound_to() -> None:
    """Thirty requests at 10/s take 2.9 s of the bound clock, all waited through its sleep."""
    t = Time()
    limiter = t.limiter(rate=10)
    started = time.monotonic()
    sent = await drive(t, limiter, 30)
    assert time.monotonic() - started < 2.0  # nothing slept for real (that takes 2.9 s)
    assert sent.times[-1] - sent.times[0] == pytest.approx(2.9)
    assert sum(t.slept) == pytest.approx(2.9)
    assert limiter.requests_sent == 30
    assert limiter.in_flight == 0


def test_a_second_clock_is_refused() -> None:
    """Binding the same clock twice is fine; a different clock, or after use, is refused."""
    t, other = Time(), Time()
    limiter = t.limiter()
    limiter._bind(t.clock, t.sleep)  # a second client sharing the limiter and the clock
    with pytest.raises(ConfigurationError, match="another clock"):
        limiter._bind(other.clock, other.sleep)

    used = RequestLimiter()
    used.on_success()  # used on time.monotonic already
    with pytest.raises(ConfigurationError, match="another clock"):
        used._bind(t.clock, t.sleep)


# -- the budget -----------------------------------------------------------------------------


async def test_a_configured_rate_is_held_in_every_window() -> None:
    """At rate=10 no second holds more than 10 requests, and growth never passes the cap."""
    t = Time()
    limiter = t.limiter(rate=10)
    sent = await drive(t, limiter, 55)
    assert max_in_window(sent.times) <= 10
    assert limiter.current_rate == 10
    assert sent.times[-1] - sent.times[0] == pytest.approx(5.4)


async def test_burst_lets_that_many_out_at_once_then_the_rate_holds() -> None:
    """A burst of 5 lets 5 requests out at once; after that the pace is the rate."""
    t = Time()
    sent = await drive(t, t.limiter(rate=10, burst=5), 40)
    start = sent.times[0]
    assert sum(1 for moment in sent.times if moment == start) == 5
    assert max_in_window([m for m in sent.times if m >= start + 1.0]) <= 10


async def test_slow_start_doubles_the_budget_while_it_holds_requests_back() -> None:
    """With no quota known the budget starts at 10/s and doubles every quarter second of demand."""
    t = Time()
    limiter = t.limiter()
    sent = await drive(t, limiter, 300)
    rates = sorted({rate for _, rate in sent.rates})
    assert rates[:4] == [10, 20, 40, 80]
    assert limiter.learned_rate is None
    # Ten at once, then a doubling per quarter second: 300 requests in about two seconds.
    assert sent.times[-1] - sent.times[0] < 2.5


async def test_a_budget_that_is_not_used_does_not_grow() -> None:
    """One request a second never waits, so the budget stays where it started."""
    t = Time()
    limiter = t.limiter()
    for _ in range(20):
        async with limiter.slot():
            pass
        limiter.on_success()
        t.clock.advance(1.0)
    assert limiter.current_rate == 10
    assert t.slept == []


async def test_an_unknown_quota_is_found_without_a_burst_of_refusals() -> None:
    """Against a quota of 40/s: a handful of 429s at the end of slow start, then none."""
    t = Time()
    limiter = t.limiter()
    sent = await drive(t, limiter, 2000, quota(t, 40))
    assert limiter.load_signals == 1
    assert limiter.learned_rate == pytest.approx(40, rel=0.05)
    assert len(sent.refused) <= 10  # of 2000
    first = sent.refused[0]
    assert all(moment < first + 1 for moment in sent.refused)
    # Held just under the quota afterwards: no window over it, and close to it on average.
    later = [moment for moment in sent.times if moment > first + 5]
    assert max_in_window(later) <= 40
    assert len(later) / (later[-1] - later[0]) > 0.95 * 40


async def test_a_burst_of_429s_is_one_signal_that_pauses_everyone() -> None:
    """Twenty 429s at once after clean answers: one cut, one pause of Retry-After for all."""
    t = Time()
    limiter = t.limiter(rate=40)
    await drive(t, limiter, 200)
    for _ in range(20):
        limiter.on_rate_limited(2.0)
    assert limiter.load_signals == 1
    assert limiter.rate_limited == 20
    learned = limiter.learned_rate
    assert learned is not None
    assert learned == pytest.approx(40, abs=1)
    # The pause outlasts the quota's one-second window, which is empty after it: the
    # budget resumes just under what the service admitted, with no climb back.
    assert limiter.current_rate == pytest.approx(learned * 0.98)
    assert limiter.paused_for == pytest.approx(2.0)
    paused_at = t.clock()
    sent = await drive(t, limiter, 10)
    assert min(sent.times) == pytest.approx(paused_at + 2.0)


@pytest.mark.parametrize("retry_after", [None, 0.5])
async def test_a_signal_without_a_whole_window_of_pause_halves_the_budget(
    retry_after: float | None,
) -> None:
    """Without Retry-After, or with one shorter than the window, the budget is cut to half."""
    t = Time()
    limiter = t.limiter(rate=40)
    await drive(t, limiter, 200)
    for _ in range(20):
        limiter.on_rate_limited(retry_after)
    learned = limiter.learned_rate
    assert learned is not None
    assert learned == pytest.approx(40, abs=1)
    assert limiter.current_rate == pytest.approx(learned / 2)


async def test_retry_after_is_capped_at_max_pause() -> None:
    """A Retry-After of 500 s pauses everyone for max_pause, not longer."""
    t = Time()
    limiter = t.limiter(rate=40, max_pause=3.0)
    await drive(t, limiter, 200)
    for _ in range(5):
        limiter.on_rate_limited(500.0)
    assert limiter.paused_for == pytest.approx(3.0)


async def test_after_a_signal_the_budget_recovers_gradually_and_holds_under_the_quota() -> None:
    """From half the learned quota it climbs in steps to 98 % of it and stays there."""
    t = Time()
    limiter = t.limiter(rate=40, probe_after=1_000)
    await drive(t, limiter, 200)
    for _ in range(5):
        limiter.on_rate_limited(None)  # no pause to empty the quota's window: a cut
    learned = limiter.learned_rate
    assert learned is not None
    sent = await drive(t, limiter, 1000)
    rates = [rate for _, rate in sent.rates]
    assert rates[0] == pytest.approx(learned / 2)
    assert rates == sorted(rates)
    assert len(set(rates)) >= 4  # in steps, not at once
    assert rates[-1] == pytest.approx(0.98 * learned)


async def test_after_holding_for_probe_after_it_looks_for_more() -> None:
    """A quota that was raised is found again: past probe_after the budget grows beyond it."""
    t = Time()
    limiter = t.limiter(probe_after=5)
    await drive(t, limiter, 200, quota(t, 20))
    assert limiter.learned_rate == pytest.approx(20, rel=0.05)
    await drive(t, limiter, 2000, quota(t, 50))  # the quota went up
    assert limiter.learned_rate == pytest.approx(50, rel=0.05)


async def test_random_429s_do_not_drive_the_budget_to_its_floor() -> None:
    """5 % random 429s on top of a 40/s quota: few signals, and the budget stays near the quota."""
    t = Time()
    limiter = t.limiter()
    sent = await drive(t, limiter, 4000, with_noise(quota(t, 40), 0.05))
    assert len(sent.refused) > 150  # plenty of random ones
    assert limiter.load_signals <= 2
    # A signal halves the budget for a moment, and no run of them walks it down.
    after_start = [rate for moment, rate in sent.rates if moment > sent.times[0] + 5]
    assert min(after_start) > 0.45 * 40
    assert limiter.current_rate > 0.9 * 40


async def test_random_429s_alone_never_look_like_load() -> None:
    """With 5 % random 429s and no quota, the capped budget is never cut."""
    t = Time()
    limiter = t.limiter(rate=50)
    sent = await drive(t, limiter, 3000, with_noise(always_ok, 0.05))
    assert len(sent.refused) > 100
    assert limiter.load_signals == 0
    assert limiter.current_rate == 50


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    """Cancelling a request that waits for its turn leaves the queue and the count as they were."""
    t = Time()
    limiter = t.limiter(rate=1)
    async with limiter.slot():
        pass
    waiting = asyncio.create_task(limiter.slot().__aenter__())
    behind = asyncio.create_task(limiter.slot().__aenter__())
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    await behind  # the one behind moved up and went
    assert limiter.requests_sent == 2
    assert limiter.in_flight == 1


def test_the_decisions_run_on_a_plain_state() -> None:
    """BudgetPolicy decides from a state and a time alone: what a shared backend would store."""
    policy = RequestLimiter(rate=4)._policy
    assert isinstance(policy, BudgetPolicy)
    state = policy.new_state()
    assert policy.delay(state, 0.0) == 0
    policy.take(state, 0.0, waited=False)
    assert policy.delay(state, 0.0) == pytest.approx(0.25)
    assert policy.delay(state, 0.25) == 0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        pytest.param({"rate": 0}, "rate", id="zero-rate"),
        pytest.param({"rate": math.inf}, "rate", id="infinite-rate"),
        pytest.param({"rate": True}, "rate", id="bool-rate"),
        pytest.param({"start_rate": -1}, "start_rate", id="negative-start"),
        pytest.param({"min_rate": 0}, "min_rate", id="zero-floor"),
        pytest.param({"burst": 0.5}, "burst", id="burst-below-one"),
        pytest.param({"decrease_factor": 1.0}, "decrease_factor", id="no-decrease"),
        pytest.param({"decrease_cooldown": -1}, "decrease_cooldown", id="negative-cooldown"),
        pytest.param({"growth_interval": 0}, "growth_interval", id="no-interval"),
        pytest.param({"headroom": 0.5}, "headroom", id="headroom-half"),
        pytest.param({"probe_after": math.nan}, "probe_after", id="nan-probe"),
        pytest.param({"max_pause": -1}, "max_pause", id="negative-pause"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], field: str) -> None:
    """Each nonsensical setting is a ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=field):
        RequestLimiter(**options)


def test_max_concurrent_is_gone() -> None:
    """The connection pool caps requests in flight; the limiter no longer takes max_concurrent."""
    with pytest.raises(TypeError):
        RequestLimiter(max_concurrent=8)  # type: ignore[call-arg]


# -- over loopback HTTP, against the emulator in quota mode ----------------------------------


@pytest.fixture
def emulator_config(clock: ManualClock) -> EmulatorConfig:
    return EmulatorConfig(quota_per_second=20.0, clock=clock, seed=1)


async def test_the_quota_is_found_over_http(emu: Emulator, clock: ManualClock) -> None:
    """What ``_send`` does, over loopback: the limiter learns the emulator's 20/s quota."""

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0)

    limiter = RequestLimiter()
    limiter._bind(clock, sleep)
    transport = AiohttpTransport()
    numbers = iter(range(600))

    async def worker() -> None:
        for number in numbers:
            request = build_task_request(emu.base_url, emu.api_key, f"spo-{number}")
            async with limiter.slot():
                response = await transport.send(request, timeout=5.0)
            if response.status == 429:
                retry_after = response.headers.get("retry-after")
                limiter.on_rate_limited(parse_retry_after(retry_after, now=time.time()))
            else:
                assert response.status == 404  # no such task: an answer all the same
                limiter.on_success()

    try:
        await asyncio.gather(*(worker() for _ in range(20)))
    finally:
        await transport.aclose()
    assert emu.quota is not None
    assert emu.quota.admitted + emu.quota.refused == 600
    assert emu.quota.refused <= 10
    assert limiter.learned_rate == pytest.approx(20, rel=0.1)


def test_an_answer_heard_late_is_counted_at_the_time_it_came() -> None:
    """Another process's answers reach a shared budget late: each counts in its own window."""
    recent = _Recent()
    for moment in (10.0, 10.5, 11.2):
        recent.add(moment)
    recent.add(10.1)  # heard after 11.2, came at 10.1
    assert recent.count(10.6) == 3  # 10.0, 10.1, 10.5
    assert recent.count(11.0) == 2  # 10.1, 10.5 (a window ending at 11.0 leaves 10.0 out)
    assert recent.count(11.2) == 2  # 10.5, 11.2: not crowded into the newest window
