"""One request budget for a whole client: how fast it may send, learnt from the service's 429s.

Submits and polls of every task share one :class:`RequestLimiter`, so a batch of ten
thousand tasks and a single ``optimize`` call in the same process draw from the same
budget. The service documents no rate limit, so by default the budget is
*found*: it starts at 10 requests per second and doubles while the answers stay clean (a
slow start, as TCP does), and the first sign of overload tells it where the quota is.
How many requests are in flight at once is not its business: that is the connection
pool's (``max_connections``), the one concurrency cap of a client.

**What a 429 means.** A gateway's quota answers 429 once a key sends faster than it
allows; a gateway also answers 429 now and then for its own reasons (a busy upstream),
whatever the key's rate. Only the first kind says anything about our rate, and the share
of 429s alone cannot tell them apart: 5 % random refusals look like sending 5 % over the
quota. What differs is that random ones were also there *before*, at rates the quota
allowed, and come one at a time, where an overloaded quota refuses everything until its
window moves on. So the limiter keeps the *background* share of 429s, measured only
where the quota should not be the cause (before it is known, and at or below the rate
the budget holds at after, never while probing above it), decaying over about a
thousand answers and pulled toward a prior of 5 % until there are a few hundred. A 429
is load only when the recent ones are clearly in excess of that background: a CUSUM
test of "the 429 rate rose by 20 points" against "it is the background", which fires
at odds of e^9 (about 8,000) to 1. After a long clean run three 429s close together are
enough; with 5 % random ones it takes six or so in a row, which random ones almost
never are (no signal from them in the benchmark's runs) and an overloaded quota always
is.

**What load does.** When the test fires:

- everyone waits out ``Retry-After`` (capped at ``max_pause``): the quota is the
  account's, not one request's. A 429 that is not judged load delays only the request
  that got it (its retry waits, the retry policy's business), so random 429s do not
  stop the whole client;
- the budget learns the quota: what the service had admitted over the last second when
  it first said no (what was sent, less the 429s, plus the background's share of them,
  since a random 429 was admitted first) becomes :attr:`learned_rate`, and the budget
  drops to ``decrease_factor`` of it. It learns only when the budget was what held the
  client back; otherwise it only slows down. After a ``Retry-After`` pause of a whole
  window (a second) or more, the quota's window is empty, so the budget resumes at
  ``1 - headroom`` of what it learnt rather than at ``decrease_factor`` of it;
- the answers until ``decrease_cooldown`` after the pause are not evidence again: a
  burst of 429s is one signal, not fifty.

**Between signals.** Growth is decided every ``growth_interval`` (or twice the
requests' latency, when that is longer), and only while the budget holds requests back
(they had to wait for it) and the evidence is quiet. A budget that is not used does
not grow, so a quiet client never builds up the right to a burst.

- Before any signal: slow start, the budget doubles.
- Below the learned quota: it closes half the gap each time, up to ``1 - headroom`` of
  the learned quota, where it holds.
- After holding ``probe_after`` seconds (twice as long after each probe that found the
  same quota, up to eight times as long) it probes: it adds one hundredth of the learned
  quota each time, until a signal says where the quota is now. So a raised quota is
  found again, and one that did not move costs a pause only now and then.

A configured ``rate`` is a cap the budget never exceeds (and where it starts).
``min_rate`` is a floor. Until a quota is learnt, ten requests may leave back to back
(TCP's initial window), so a script's first few requests never wait; after, one at a
time, since any burst on top of a rate just under a quota would pass it.

**Where the state lives.** :class:`BudgetPolicy` makes every decision (when may the
next request go; what an answer does to the budget) as plain functions of a
:class:`BudgetState` and the time. :class:`RequestLimiter` keeps one state in memory and
queues its callers in order of arrival; only the first in line sleeps. A budget shared
by several processes (:meth:`RequestLimiter.shared`, :mod:`spo_async._shared_limiter`)
keeps the same state in one row or key and runs the same decisions on it under a lock,
on the shared store's clock.

**Why no library.** aiolimiter's bucket cannot change its rate or take an injected
clock; pyrate-limiter counts whole requests per whole milliseconds and sleeps with
:func:`asyncio.sleep` itself; limits only answers "allowed or not" on
:func:`time.time`. What they share, a GCRA (the next request may go at a *theoretical
arrival time*, which each request pushes ``1 / rate`` later), is a few lines here; the
adaptive part is in none of them.

**Time** is the clock and sleep the client binds (:meth:`RequestLimiter._bind`), or
:func:`time.monotonic` and :func:`asyncio.sleep` until one does, so a client given a
manual clock drives its limiter with it too.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from ._poll_claims import PollClaims

__all__ = ["BudgetPolicy", "BudgetState", "RequestLimiter"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: The span, in seconds, over which sent and accepted requests are counted.
_WINDOW = 1.0
#: The background 429 fraction starts as this many 429s in ``_PRIOR_ANSWERS`` answers.
_PRIOR_LIMITED = 5.0
_PRIOR_ANSWERS = 100.0
#: Each answer keeps this share of the background's memory (about 1,000 answers deep).
_MEMORY = 1.0 - 1.0 / 1000
#: A background above this is not background: past it, 429s are load however common.
_MAX_BACKGROUND = 0.25
#: The rise in the 429 rate the evidence looks for, and the log-odds at which it fires.
_RISE = 0.2
_FIRE = 9.0
#: Where the budget stands: no quota learnt yet, below the rate it holds at, at it, above.
_SLOW_START, _RECOVERING, _HOLDING, _PROBING = range(4)
#: How many requests may leave back to back before a quota is learnt (without a ``burst``).
_INITIAL_BURST = 10.0
#: Below this many accepted requests in the window, the window says little about a rate.
_FEW = 4
#: Below the learned rate, growth closes this share of the gap each time.
_CLOSE = 0.5
#: A probe adds this share of the learned rate each time.
_PROBE_STEP = 0.01
#: A probe that finds the quota within this share of the learned rate found the same one.
_SAME = 0.1
#: The longest hold before a probe, in multiples of ``probe_after``.
_MAX_HOLD = 8.0


class _Recent:
    """The times of recent events (two windows' worth), to count them exactly.

    Exactly, because the quota is counted so: a count over a little more than the
    window would read a fast burst as a higher quota than the service allows.
    """

    __slots__ = ("_times",)

    def __init__(self) -> None:
        self._times: collections.deque[float] = collections.deque()

    def add(self, now: float) -> None:
        """Count one event at ``now``, which may be earlier than the last one counted.

        A shared budget hears another process's answers late: each keeps the time it
        came, since moving it later would crowd the newest window past the quota.
        """
        times = self._times
        if not times or now >= times[-1]:
            times.append(now)
        else:
            times.insert(bisect.bisect_right(times, now), now)
        horizon = times[-1] - 2 * _WINDOW
        while times[0] <= horizon:
            times.popleft()

    def count(self, end: float) -> int:
        """The events of the window that ends at ``end`` (at most a window ago)."""
        start, count = end - _WINDOW, 0
        for t in reversed(self._times):
            if t <= start:
                break
            count += t <= end
        return count


@attrs.define(slots=True)
class BudgetState:
    """Everything the budget's decisions read and write: what a shared backend would store."""

    #: The requests per second allowed now.
    rate: float
    #: The GCRA's theoretical arrival time: the next request goes no earlier (less the burst).
    next_at: float = -math.inf
    #: Nobody sends before this time (a ``Retry-After`` pause).
    paused_until: float = -math.inf
    #: The quota learnt from the last load signal, in requests per second.
    learned: float | None = None
    #: Answers before this time are not evidence (the one signal's own burst).
    quiet_until: float = -math.inf
    #: Probing above the learned rate starts at this time.
    probe_at: float = math.inf
    #: How long the last hold before a probe was.
    hold: float = 0.0
    #: When growth was last considered.
    grown_at: float = -math.inf
    #: Whether a request had to wait for the budget since then, and when one last did.
    binding: bool = False
    pressed_at: float = -math.inf
    #: The CUSUM statistic: log-odds that 429s are above the background.
    evidence: float = 0.0
    #: The background: answers and 429s, both decaying by ``_MEMORY`` per answer.
    answers: float = 0.0
    limited: float = 0.0
    #: The 429s since the evidence was last zero: load, not background, if it fires.
    excursion: float = 0.0
    #: What the service had admitted over the window before the first of those 429s.
    admitted_before: int = 0
    #: A smoothed HTTP request latency, in seconds.
    latency: float = 0.0
    #: The times of requests sent, of answers other than 429, and of 429s (two windows).
    sent: _Recent = attrs.field(factory=_Recent)
    accepted: _Recent = attrs.field(factory=_Recent)
    refused: _Recent = attrs.field(factory=_Recent)

    def background(self) -> float:
        """The share of 429s to expect in the ordinary run of things, for the test.

        The measured share, pulled toward a prior of 5 % until there are a few hundred
        answers to go on: a 429 among the first clean answers proves little.
        """
        share = (self.limited + _PRIOR_LIMITED) / (self.answers + _PRIOR_ANSWERS)
        return min(share, _MAX_BACKGROUND)

    def measured(self) -> float:
        """The share of 429s measured in the ordinary run of things (0 before any answer)."""
        return min(self.limited / self.answers, _MAX_BACKGROUND) if self.answers else 0.0


@attrs.frozen(kw_only=True)
class BudgetPolicy:
    """The decisions of a request budget, as functions of a :class:`BudgetState` and the time.

    No I/O, no clock, no locks: a caller passes ``now`` and holds whatever lock its
    state needs. The settings are :class:`RequestLimiter`'s.
    """

    cap: float | None
    start_rate: float
    min_rate: float
    burst: float | None
    decrease_factor: float
    decrease_cooldown: float
    growth_interval: float
    headroom: float
    probe_after: float
    max_pause: float

    def new_state(self) -> BudgetState:
        """The state of a budget that has seen nothing yet."""
        return BudgetState(rate=self._clamp(self.start_rate))

    def delay(self, state: BudgetState, now: float) -> float:
        """Seconds until the next request may go (0: now)."""
        burst = self.burst
        if burst is None:
            # Ten requests back to back (TCP's initial window) while the quota is unknown,
            # so that a script's first few requests never wait; one at a time once it is
            # known, since any burst on top of a rate near a quota's would pass it.
            burst = _INITIAL_BURST if state.learned is None else 1.0
        earliest = max(state.paused_until, state.next_at - (burst - 1.0) / state.rate)
        delay = earliest - now
        # Below a nanosecond is the rounding of the sums above, not a wait.
        return delay if delay > 1e-9 else 0.0

    def take(self, state: BudgetState, now: float, *, waited: bool) -> None:
        """A request goes at ``now``; ``waited`` says it had to wait for the budget."""
        # A sleeper wakes a little late: within half an interval, keep to the schedule
        # rather than lose the lateness at every request.
        interval = 1.0 / state.rate
        late = now - state.next_at
        state.next_at = (state.next_at if late <= interval / 2 else now) + interval
        state.sent.add(now)
        if waited:
            state.binding, state.pressed_at = True, now
        self._grow(state, now)

    def answered(self, state: BudgetState, latency: float) -> None:
        """A request took ``latency`` seconds (it sets the pace of growth)."""
        state.latency = latency if state.latency == 0 else 0.8 * state.latency + 0.2 * latency

    def on_answer(
        self, state: BudgetState, now: float, *, limited: bool, retry_after: float | None = None
    ) -> bool:
        """Weigh one answer (``limited``: a 429); return whether it was a load signal."""
        (state.refused if limited else state.accepted).add(now)
        if now < state.quiet_until:
            return False
        background = state.background()
        raised = background + _RISE
        if limited:
            if state.evidence == 0.0:
                # A quota says no once it has admitted its fill: what was sent over the
                # window before this request left, but for the window's 429s (less the
                # background's share: a random 429 was admitted, then refused).
                sent = state.sent.count(now - state.latency) - 1
                refused = (state.refused.count(now) - 1) * (1.0 - state.measured())
                state.admitted_before = max(0, round(sent - refused))
            state.evidence += math.log(raised / background)
            state.excursion += 1.0
        else:
            state.evidence = max(0.0, state.evidence + math.log((1 - raised) / (1 - background)))
            if state.evidence == 0.0:
                state.excursion = 0.0
        # The background is measured where the quota should not be the cause: before the
        # quota is known, and not above the rate the budget holds at after (not probing).
        if self._phase(state) != _PROBING:
            state.answers = state.answers * _MEMORY + 1.0
            state.limited = state.limited * _MEMORY + float(limited)
        if state.evidence >= _FIRE:
            self._slow_down(state, now, retry_after)
            return True
        self._grow(state, now)
        return False

    # -- internals ---------------------------------------------------------------------

    def _clamp(self, rate: float) -> float:
        if self.cap is not None:
            rate = min(rate, self.cap)
        return max(rate, self.min_rate)

    def _set_rate(self, state: BudgetState, now: float, rate: float) -> None:
        """Change the rate, and re-space the requests already scheduled ahead at the new one.

        ``next_at`` ahead of ``now`` is a debt of requests let out early (a burst); at
        a new rate that debt is worth another time, else a doubling would halve the
        burst's allowance at once and stall the queue.
        """
        rate = self._clamp(rate)
        if state.next_at > now:
            state.next_at = now + (state.next_at - now) * state.rate / rate
        state.rate = rate

    def _phase(self, state: BudgetState) -> int:
        """Where the budget stands against what it learnt: see the ``_SLOW_START``... codes."""
        if state.learned is None:
            return _SLOW_START
        holding = state.learned * (1.0 - self.headroom)
        if state.rate > holding * (1 + 1e-9):
            return _PROBING
        return _HOLDING if state.rate >= holding * (1 - 1e-9) else _RECOVERING

    def _slow_down(self, state: BudgetState, now: float, retry_after: float | None) -> None:
        """Load: cut the budget, pause everyone, and learn the quota where that is sound."""
        phase = self._phase(state)
        if phase in (_SLOW_START, _PROBING):
            # Above any rate known to be safe: the 429s that built the evidence were load,
            # and they leave the background. (Below it they may be a cluster of random
            # ones, and stay: so the background learns how clustered random ones get.)
            state.limited = max(0.0, state.limited - state.excursion)
        state.excursion = 0.0
        if phase != _SLOW_START and now - state.pressed_at > _WINDOW:
            # Nobody waited for the budget lately: what went through shows the demand,
            # not the quota. Slow down, and learn when the budget is what holds us back.
            self._set_rate(state, now, state.rate * self.decrease_factor)
        else:
            # What the service admitted over the last window, as a quota counts it: the
            # answers other than 429, and the background's share of all that was sent
            # (a random 429 was admitted, then refused).
            accepted = state.accepted.count(now)
            learned = state.rate
            # A few accepted answers say little about a fast rate, but beside as many
            # 429s in the same window they are a small quota's whole fill.
            if accepted >= _FEW or (accepted >= 1 and state.refused.count(now) >= _FEW):
                admitted = accepted + state.measured() * state.sent.count(now)
                admitted = max(admitted, state.admitted_before)
                learned = min(learned, admitted / _WINDOW)
            previous = state.learned
            same = previous is not None and abs(learned - previous) <= _SAME * previous
            state.hold = (
                min(2 * state.hold, _MAX_HOLD * self.probe_after) if same else self.probe_after
            )
            state.learned = learned
            pause = 0.0 if retry_after is None else min(max(retry_after, 0.0), self.max_pause)
            # A pause as long as the quota's window empties it: what the service admitted
            # over a window is then safe to send again at once, less the headroom. A
            # shorter pause (or none) resumes on a full window: cut the budget instead.
            factor = 1.0 - self.headroom if pause >= _WINDOW else self.decrease_factor
            self._set_rate(state, now, learned * factor)
        if retry_after is not None and retry_after > 0:
            pause = min(retry_after, self.max_pause)
            state.paused_until = max(state.paused_until, now + pause)
        resume = max(now, state.paused_until)
        state.quiet_until = resume + self.decrease_cooldown
        state.probe_at = resume + state.hold
        state.grown_at = resume
        state.binding = False
        state.evidence = 0.0

    def _grow(self, state: BudgetState, now: float) -> None:
        """Consider growth, once per interval, if the budget held requests back."""
        interval = max(self.growth_interval, 2 * state.latency)
        if now - state.grown_at < interval:
            return
        # On the interval's beat, not on whichever request happens to notice it is due.
        state.grown_at = max(state.grown_at + interval, now - interval)
        binding, state.binding = state.binding, False
        if not binding or now < state.paused_until or state.evidence >= _FIRE / 2:
            return
        rate, learned = state.rate, state.learned
        if learned is None:
            rate *= 2.0
        else:
            holding = learned * (1.0 - self.headroom)
            if rate < holding:
                rate = (
                    holding if holding - rate < 0.01 * holding else rate + _CLOSE * (holding - rate)
                )
            elif now >= state.probe_at:
                rate += _PROBE_STEP * learned
        self._set_rate(state, now, rate)


def _number(
    name: str, value: object, *, low: float = 0.0, closed: bool = False, high: float = math.inf
) -> float:
    """``value`` as a float, or a ConfigurationError naming ``name`` if it is out of range."""
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= low if closed else value > low)
        and value < high
    )
    if not ok:
        above = f">= {low:g}" if closed else f"> {low:g}"
        below = "" if high == math.inf else f" and < {high:g}"
        raise ConfigurationError(f"{name} must be a finite number {above}{below}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


class RequestLimiter:
    """A client-wide budget of HTTP requests per second, found from the service's 429s.

    Hold :meth:`slot` around each HTTP request, then report how it went::

        async with limiter.slot():
            response = await transport.send(request, timeout=...)
        if response.status == 429:
            limiter.on_rate_limited(retry_after)
        else:
            limiter.on_success()

    ``rate`` caps the requests per second (``None``: no cap, the quota is found);
    ``start_rate`` is where the budget starts (the cap when there is one, else 10 per
    second), ``min_rate`` its floor, ``burst`` how many requests may leave back to back
    (by default 10 until the quota is learnt and 1 after, or 1 under a cap).
    On load, the budget drops to ``decrease_factor`` of the learned quota and everyone
    waits out ``Retry-After`` (up to ``max_pause``); answers until ``decrease_cooldown``
    after that are one signal. ``growth_interval`` paces growth, ``headroom`` is the
    share of the learned quota left unused, ``probe_after`` how long the budget holds
    there before looking for more (why each is so: the docstring of ``spo_async._limiter``).

    How many requests are in flight at once is the transport's connection pool's
    business (``max_connections``), not the limiter's.

    One limiter belongs to one event loop and one clock, like the client that uses it;
    several clients may share it if they share the clock. :meth:`shared` makes one whose
    budget every process on an API key shares.
    """

    #: Where the budget lives: ``None`` in memory, the store's URI for a shared one.
    _store_uri: str | None = None

    def __init__(
        self,
        rate: float | None = None,
        *,
        start_rate: float | None = None,
        min_rate: float = 0.2,
        burst: float | None = None,
        decrease_factor: float = 0.5,
        decrease_cooldown: float = 1.0,
        growth_interval: float = 0.1,
        headroom: float = 0.02,
        probe_after: float = 60.0,
        max_pause: float = 120.0,
    ) -> None:
        cap = None if rate is None else _number("rate", rate)
        start = 10.0 if cap is None else cap
        if start_rate is not None:
            start = _number("start_rate", start_rate)
        floor = _number("min_rate", min_rate)
        self._policy = BudgetPolicy(
            cap=cap,
            start_rate=start,
            min_rate=floor if cap is None else min(floor, cap),
            burst=(
                (None if cap is None else 1.0)
                if burst is None
                else _number("burst", burst, low=1.0, closed=True)
            ),
            decrease_factor=_number("decrease_factor", decrease_factor, high=1.0),
            decrease_cooldown=_number("decrease_cooldown", decrease_cooldown, closed=True),
            growth_interval=_number("growth_interval", growth_interval),
            headroom=_number("headroom", headroom, closed=True, high=0.5),
            probe_after=_number("probe_after", probe_after),
            max_pause=_number("max_pause", max_pause, closed=True),
        )
        self._state = self._policy.new_state()
        self._clock: Clock = time.monotonic
        self._sleep: Sleep = asyncio.sleep
        self._bound = False
        self._used = False
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._in_flight = 0
        self._requests_sent = 0
        self._rate_limited = 0
        self._load_signals = 0

    def __repr__(self) -> str:
        learned = "unknown" if self.learned_rate is None else f"{self.learned_rate:.3g}/s"
        cap = "none" if self.rate is None else f"{self.rate:g}/s"
        return (
            f"<RequestLimiter rate={self.current_rate:.3g}/s learned={learned} cap={cap} "
            f"in_flight={self._in_flight}>"
        )

    @classmethod
    def shared(
        cls,
        uri: str,
        *,
        name: str | None = None,
        clock: Callable[[], float] | None = None,
        rate: float | None = None,
        start_rate: float | None = None,
        min_rate: float = 0.2,
        burst: float | None = None,
        decrease_factor: float = 0.5,
        decrease_cooldown: float = 1.0,
        growth_interval: float = 0.25,
        headroom: float = 0.02,
        probe_after: float = 60.0,
        max_pause: float = 120.0,
    ) -> RequestLimiter:
        """A limiter whose budget lives in PostgreSQL or Redis, shared by every process on a key.

        ``uri`` is ``postgresql://`` (``postgres://``; needs ``spo-async[postgres]``) or
        ``redis://`` (``rediss://``, ``valkey://``; needs ``spo-async[redis]``). Every
        process that uses the same store and API key draws from one budget, which adapts
        to the fleet's 429s as one client's does. ``name`` picks the budget instead of
        the API key's; ``clock`` replaces the store's clock (tests only: every process of
        the budget must then share it). The other settings are :class:`RequestLimiter`'s;
        give every process the same. Growth is slower by default (every 0.25 s, not
        0.1 s): a fleet hears its 429s later, through the store, so a slow start that
        doubled as fast would pass the quota further before it heard, and learn it less
        exactly. Nothing connects until the first request; a store
        that cannot be reached then fails that request with
        :class:`~spo_async.TransportError` (nothing sent). The connection closes with
        the last client that used the limiter.
        """
        from ._shared_limiter import shared_limiter  # noqa: PLC0415 - only if asked for
        from ._store_uri import store_kind  # noqa: PLC0415

        kind = store_kind(uri, what="RequestLimiter.shared's uri")
        settings = {
            "rate": rate,
            "start_rate": start_rate,
            "min_rate": min_rate,
            "burst": burst,
            "decrease_factor": decrease_factor,
            "decrease_cooldown": decrease_cooldown,
            "growth_interval": growth_interval,
            "headroom": headroom,
            "probe_after": probe_after,
            "max_pause": max_pause,
        }
        return shared_limiter(uri, kind, name=name, clock=clock, settings=settings)

    def _bind(self, clock: Clock, sleep: Sleep, api_key: str | None = None) -> None:
        """Wait on ``clock`` and ``sleep`` from now on: the client calls this when it is made.

        Binding again to the same pair does nothing (clients sharing a limiter and a
        clock). A second, different clock is refused: the state's times are in the
        first one's units. So is a clock bound after the limiter was used on another.
        ``api_key`` (the client's) is what a shared budget is keyed by.
        """
        if self._bound or self._used:
            if clock == self._clock and sleep == self._sleep:
                self._bound = True
                return
            raise ConfigurationError(
                "this RequestLimiter already runs on another clock: give each client "
                "that has its own clock (or sleep) its own limiter"
            )
        self._clock, self._sleep, self._bound = clock, sleep, True

    async def _release(self) -> None:
        """A client that used this limiter closed (a shared one closes its connection)."""

    def _poll_claims(self, clock: Clock, sleep: Sleep) -> PollClaims | None:
        """Claims that keep the polls of one task to one process (a shared budget's store)."""
        return None

    # -- settings and statistics -------------------------------------------------------

    @property
    def rate(self) -> float | None:
        """The configured cap, in requests per second (``None``: none)."""
        return self._policy.cap

    @property
    def current_rate(self) -> float:
        """The requests per second allowed now."""
        return self._state.rate

    @property
    def learned_rate(self) -> float | None:
        """The service's quota as the last load signal showed it (``None``: none seen yet).

        Worth keeping across runs (with what the poll schedule learnt), to start the
        next client there instead of slow-starting: ``RequestLimiter(start_rate=...)``.
        """
        return self._state.learned

    @property
    def in_flight(self) -> int:
        """Requests between leaving :meth:`slot`'s entry and its exit."""
        return self._in_flight

    @property
    def requests_sent(self) -> int:
        """Requests let through since the limiter was made."""
        return self._requests_sent

    @property
    def rate_limited(self) -> int:
        """How many 429 answers were reported, load or not."""
        return self._rate_limited

    @property
    def load_signals(self) -> int:
        """How many times the 429s were judged load, and the budget cut."""
        return self._load_signals

    @property
    def paused_for(self) -> float:
        """Seconds until the current ``Retry-After`` pause ends (0 when not paused)."""
        return max(0.0, self._state.paused_until - self._clock())

    @property
    def requests_per_second(self) -> float:
        """Requests let through during the last second."""
        return self._state.sent.count(self._clock()) / _WINDOW

    # -- the gate ----------------------------------------------------------------------

    def slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Wait for the budget (in order of arrival) and any pause; hold it for one request.

        Use it as ``async with limiter.slot():`` around the request. (A small class
        rather than :func:`contextlib.asynccontextmanager`: this runs once per HTTP
        request, and the generator machinery cost more than the rest of the gate.)
        """
        return _Slot(self)

    def _pass_now(self) -> float | None:
        """Let a request through at once if nobody queues and the budget allows it.

        Returns the time it left, or ``None`` when it must queue (:meth:`_queue`).
        Synchronous, so that a request the budget does not hold back costs no
        coroutine of its own.
        """
        self._used = True
        if self._waiters:
            return None
        policy, state = self._policy, self._state
        now = self._clock()
        if policy.delay(state, now) > 0:
            return None
        policy.take(state, now, waited=False)
        self._in_flight += 1
        self._requests_sent += 1
        return now

    async def _queue(self) -> float:
        """Wait in line for the budget and any pause; return the time the request left."""
        policy, state, waiters = self._policy, self._state, self._waiters
        me: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(me)
        try:
            queued = waiters[0] is not me
            if queued:
                await me
            waited = queued
            while (delay := policy.delay(state, now := self._clock())) > 0:
                waited = waited or now >= state.paused_until  # held back by the rate
                await self._sleep(delay)
        finally:
            self._leave(me)
        policy.take(state, now, waited=waited)
        self._in_flight += 1
        self._requests_sent += 1
        return now

    def _leave(self, me: asyncio.Future[None]) -> None:
        """Take ``me`` out of the queue; if it was first, the next in line is first now."""
        waiters = self._waiters
        if waiters and waiters[0] is me:
            waiters.popleft()
            if waiters and not waiters[0].done():
                waiters[0].set_result(None)
        else:
            with contextlib.suppress(ValueError):
                waiters.remove(me)

    def _exit(self, entered: float) -> None:
        self._in_flight -= 1
        self._policy.answered(self._state, self._clock() - entered)

    # -- feedback ----------------------------------------------------------------------

    def on_rate_limited(self, retry_after: float | None = None) -> None:
        """A request got 429: weigh it, and if it shows load, pause everyone and slow down.

        ``retry_after`` is the service's ``Retry-After`` in seconds. It pauses the whole
        client only when the 429 is judged load; a random one delays only the request
        that got it (its retry waits), which is the retry policy's business.
        """
        self._used = True
        self._rate_limited += 1
        if self._policy.on_answer(
            self._state, self._clock(), limited=True, retry_after=retry_after
        ):
            self._load_signals += 1

    def on_success(self) -> None:
        """A request got an answer other than 429."""
        self._used = True
        self._policy.on_answer(self._state, self._clock(), limited=False)


class _Slot:
    """One pass through a :class:`RequestLimiter`: entered before a request, left after it."""

    __slots__ = ("_entered", "_limiter")

    def __init__(self, limiter: RequestLimiter) -> None:
        self._limiter = limiter
        self._entered = 0.0

    async def __aenter__(self) -> None:
        limiter = self._limiter
        entered = limiter._pass_now()
        self._entered = entered if entered is not None else await limiter._queue()

    async def __aexit__(self, *exc_info: object) -> None:
        self._limiter._exit(self._entered)
