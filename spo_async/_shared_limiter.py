"""One rate budget for every process on an API key, kept in PostgreSQL or Redis.

:meth:`RequestLimiter.shared` builds a :class:`SharedRequestLimiter`: the same
decisions as the in-memory limiter (:class:`~spo_async._limiter.BudgetPolicy`: the
GCRA, the slow start, the test that tells load 429s from random ones, the learnt
quota), run on one :class:`~spo_async._limiter.BudgetState` that lives in the store,
so that the whole fleet is one client to the quota.

**One exchange per request.** Each request's pass through the gate is one
*exchange* (:mod:`spo_async._shared_store`): read the state under the store's lock
(a row lock in PostgreSQL, an optimistic ``WATCH`` in Redis), apply the answers this
process heard since its last exchange, take a slot or learn how long to wait, write
the state back. So a 429 judged load by any process cuts the budget for all of them
at their next request, its ``Retry-After`` pauses all of them, and the answers until
the cooldown after it are one signal, fleet-wide. Within a process, callers queue in
order of arrival as with the in-memory limiter; only the first in line talks to the
store.

**Whose clock.** The state's times are the store's clock (PostgreSQL's
``clock_timestamp()``, Redis's ``TIME``), never a worker's, so machines whose clocks
disagree share one budget correctly. A ``clock`` given to :meth:`RequestLimiter.shared`
replaces it (tests, on a manual clock that every limiter of the budget shares).

**Which budget.** One per API key: the store is keyed by a BLAKE2b digest of the
key (personalised for this use), never by the key itself, so the store holds
nothing that authenticates. ``name=`` picks a budget explicitly instead (several
keys on one quota, or one key split in two budgets).

**When the store fails**, the gate fails closed: the request that needed it raises
:class:`~spo_async.TransportError` (``request_sent=False``: nothing left, so a
submit may be retried without risk) and the client's retry policy decides what
happens next. The budget is never bypassed silently: a fleet that lost its budget
and went on at full speed would hit the quota all at once. What a process heard
while the store was away is applied at its next exchange (up to
:data:`_MAX_PENDING` answers).

A state the store holds that cannot be read (written by a newer version, or by
hand, or with numbers no process writes: an infinity where none belongs, a number
too large for a float) is replaced by a fresh budget, with a warning: a fresh budget
slow-starts, which is safe; refusing every request would not be. A pause or a
schedule further ahead than this process's settings allow is cut back to what they
allow (``paused_until: 1e308`` pauses for ``max_pause``, not for ever).

**Settings.** Each process brings its own :class:`~spo_async._limiter.BudgetPolicy`
(its ``RequestLimiter.shared(...)`` arguments) to the shared state: give every
process of a budget the same ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Callable
from typing import Any, Final, TypeVar, cast

import attrs

from ._errors import ClientClosedError, ConfigurationError, TransportError
from ._limiter import (
    _INITIAL_BURST,
    BudgetPolicy,
    BudgetState,
    Clock,
    RequestLimiter,
    Sleep,
    _Recent,
)
from ._poll_claims import PollClaims, keep_claim
from ._shared_store import check_uri, open_store
from ._store_uri import StoreKind, display_uri

__all__ = ["SharedRequestLimiter", "budget_name", "decode_state", "encode_state"]

log = logging.getLogger("spo_async")

T = TypeVar("T")

#: The layout of a stored state this version writes and reads.
_FORMAT: Final = 1
#: Answers heard while the store could not be reached that are kept for later.
_MAX_PENDING: Final = 10_000
#: A budget nobody used for this long is forgotten (seconds).
_BUDGET_TTL: Final = 7 * 24 * 3600.0


def budget_name(api_key: str) -> str:
    """The budget of ``api_key``: a digest that names it without holding it."""
    digest = hashlib.blake2b(api_key.encode(), digest_size=16, person=b"spo-async-budget")
    return digest.hexdigest()


# -- the state on the wire -------------------------------------------------------------------

_RECENT_FIELDS: Final = ("sent", "accepted", "refused")
_NUMBER_FIELDS: Final = tuple(
    f.name
    for f in attrs.fields(BudgetState)
    if f.name not in _RECENT_FIELDS and f.name not in ("learned", "binding")
)


def encode_state(state: BudgetState) -> str:
    """``state`` as JSON text (infinities as JSON's ``Infinity``, which Python reads back)."""
    data: dict[str, Any] = {"format": _FORMAT}
    for name in _NUMBER_FIELDS:
        data[name] = getattr(state, name)
    data["learned"] = state.learned
    data["binding"] = state.binding
    for name in _RECENT_FIELDS:
        data[name] = list(getattr(state, name)._times)
    return json.dumps(data, separators=(",", ":"))


#: Fields that may be minus infinity ("never yet"), and the one that may be plus
#: infinity ("no probe planned"); every other number must be finite.
_MAY_BE_PAST: Final = frozenset(
    {"next_at", "paused_until", "quiet_until", "grown_at", "pressed_at"}
)
_MAY_BE_NEVER: Final = frozenset({"probe_at"})
#: The fields that count or measure something, never below zero.
_AMOUNTS: Final = (
    "hold",
    "evidence",
    "answers",
    "limited",
    "excursion",
    "admitted_before",
    "latency",
)
#: How far ahead of the store's clock a recorded time may be (a clock stepped back).
_CLOCK_SLACK: Final = 60.0


def decode_state(
    text: str | bytes | None, policy: BudgetPolicy, now: float | None = None
) -> BudgetState:
    """The state ``text`` holds, or a fresh one if there is none or it cannot be read.

    A state no process would write (a non-number, an infinity where none belongs, a
    number too large for a float, JSON nested too deep, request times ahead of
    ``now``) is replaced by a fresh budget, with a warning. Given ``now``, a pause
    or a schedule further ahead than this process's settings allow is cut back to
    what they allow, so a record saying ``paused_until: 1e308`` never stops the fleet.
    """
    if not text:
        return policy.new_state()
    try:
        state = _parse_state(text)
        if now is not None:
            _bound(state, policy, now)
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        log.warning("the shared rate budget held an unreadable state (%s): starting afresh", exc)
        return policy.new_state()
    return state


def _parse_state(text: str | bytes) -> BudgetState:
    """The state ``text`` holds; ValueError, KeyError or TypeError if it holds none.

    OverflowError and RecursionError too (an integer too large for a float, JSON
    nested too deep): :func:`decode_state` catches them all.
    """
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError("not a budget of this version")
    fields: dict[str, Any] = {name: _field(name, data[name]) for name in _NUMBER_FIELDS}
    for name in _AMOUNTS:  # counts, sums and spans: a process only ever writes them >= 0
        if fields[name] < 0:
            raise ValueError(f"{name} is negative")
    if fields["limited"] > fields["answers"]:
        raise ValueError("more 429s than answers")
    fields["admitted_before"] = int(fields["admitted_before"])
    learned = data["learned"]
    fields["learned"] = None if learned is None else _finite(learned)
    if not isinstance(data["binding"], bool):
        raise TypeError("binding is not a boolean")
    fields["binding"] = data["binding"]
    for name in _RECENT_FIELDS:
        times = data[name]
        if not isinstance(times, list):
            raise TypeError(f"{name} is not a list")
        recent = _Recent()
        recent._times.extend(sorted(_finite(t) for t in times))  # counted in order
        fields[name] = recent
    state = BudgetState(**fields)
    if not state.rate > 0:
        raise ValueError("the rate is not a positive number")
    return state


def _bound(state: BudgetState, policy: BudgetPolicy, now: float) -> None:
    """Hold ``state`` to what ``policy`` could have written by ``now`` (see decode_state)."""
    for name in _RECENT_FIELDS:
        times = getattr(state, name)._times
        if times and max(times) > now + _CLOCK_SLACK:
            raise ValueError(f"{name} holds a time ahead of the store's clock")
    state.rate = max(state.rate, policy.min_rate)
    state.paused_until = min(state.paused_until, now + policy.max_pause)
    # A take leaves next_at at most a burst's worth of intervals ahead of now.
    burst = max(policy.burst or 0.0, _INITIAL_BURST)
    state.next_at = min(state.next_at, now + (burst + 1.0) / state.rate)


def _field(name: str, value: object) -> float:
    """A number field of the state: finite, or the one infinity ``name`` may hold."""
    number = _number(value)
    if math.isfinite(number) or (
        (number < 0 and name in _MAY_BE_PAST) or (number > 0 and name in _MAY_BE_NEVER)
    ):
        return number
    raise ValueError(f"{name} is {number}")


def _finite(value: object) -> float:
    number = _number(value)
    if not math.isfinite(number):
        raise ValueError(f"{number} is not a finite number")
    return number


def _number(value: object) -> float:
    """``value`` as a float; OverflowError for an integer too large for one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a {type(value).__name__} is not a number")
    if isinstance(value, float) and math.isnan(value):
        raise ValueError("NaN is not a number")
    return float(value)


# -- the limiter ----------------------------------------------------------------------------------


@attrs.frozen
class _Answer:
    """One answer this process heard, kept until its next exchange with the store."""

    #: When it came, on the store's clock as this process last knew it.
    at: float
    limited: bool
    retry_after: float | None
    latency: float | None


class SharedRequestLimiter(RequestLimiter):
    """A :class:`RequestLimiter` whose budget is shared through a store: see the module."""

    def __init__(
        self,
        uri: str,
        kind: StoreKind,
        *,
        name: str | None,
        clock: Clock | None,
        settings: dict[str, Any],
    ) -> None:
        super().__init__(**settings)
        self._store_uri = self._uri = uri
        self._store = open_store(uri, kind)
        check_uri(uri, kind)  # now, not at the first request
        self._name = name
        self._named = name is not None
        self._store_clock = clock
        self._pending: list[_Answer] = []
        self._flusher: asyncio.Task[None] | None = None
        self._users = 0
        #: The store's clock minus ours, as of the last exchange (to show its times).
        self._offset = 0.0

    def __repr__(self) -> str:
        learned = "unknown" if self.learned_rate is None else f"{self.learned_rate:.3g}/s"
        return (
            f"<RequestLimiter shared={display_uri(self._uri)} "
            f"rate={self.current_rate:.3g}/s learned={learned} in_flight={self._in_flight}>"
        )

    def _bind(self, clock: Clock, sleep: Sleep, api_key: str | None = None) -> None:
        """Bind as any limiter does, and take the budget of the client's API key."""
        super()._bind(clock, sleep)
        if api_key is not None:
            mine = budget_name(api_key)
            if self._name is None:
                self._name = mine
            elif self._name != mine and not self._named:
                raise ConfigurationError(
                    "this shared RequestLimiter already serves another API key: give "
                    "RequestLimiter.shared() a name= to share one budget across keys"
                )
        self._users += 1

    def _poll_claims(self, clock: Clock, sleep: Sleep) -> PollClaims | None:
        """Claims in this budget's store, under its name (so an account sees only its tasks)."""
        if self._name is None:
            return None
        return PollClaims(
            self._store,
            self._name,
            store_clock=self._store_clock,
            clock=clock,
            sleep=sleep,
            paused_for=lambda: self.paused_for,
        )

    async def _release(self) -> None:
        """A client that used this limiter closed; the last one closes the connection.

        From then until a client binds it again, the gate refuses (see :meth:`_closed`).
        """
        self._users = max(0, self._users - 1)
        if self._users == 0:
            await self.aclose()

    def _closed(self) -> bool:
        """Every client that used this limiter is closed.

        Their requests still queued at the gate must not reopen the store's connection
        after ``aclose`` (it would be left behind), nor take the fleet's budget for
        requests the closed client will never send: they raise ClientClosedError, as
        the client itself does, and what they heard waits for the next exchange.
        """
        return self._bound and self._users == 0

    async def aclose(self) -> None:
        """Close the store connection (a later request opens it again)."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            with contextlib.suppress(asyncio.CancelledError, TransportError):
                await flusher
        await self._store.aclose()

    # -- times ------------------------------------------------------------------------------------

    def _store_now(self) -> float:
        if self._store_clock is not None:
            return self._store_clock()
        return self._clock() + self._offset

    @property
    def paused_for(self) -> float:
        """Seconds until the fleet's current ``Retry-After`` pause ends (as last seen)."""
        return max(0.0, self._state.paused_until - self._store_now())

    @property
    def requests_per_second(self) -> float:
        """Requests the whole fleet let through during the last second (as last seen)."""
        return self._state.sent.count(self._store_now()) / 1.0

    # -- the exchange -----------------------------------------------------------------------------

    async def _exchange(self, decide: Callable[[BudgetState, float], T]) -> T:
        """Apply the pending answers and ``decide`` on the stored state, under its lock."""
        if self._name is None:
            raise ConfigurationError(
                "a shared RequestLimiter needs an API key or a name=: use it through a client"
            )
        policy = self._policy
        answers, self._pending = self._pending, []
        signals = 0

        def step(text: str | bytes | None, now: float) -> tuple[str, T]:
            # Redis may run a step again (another process wrote first): count afresh.
            nonlocal signals
            signals = 0
            state = decode_state(text, policy, now)
            for answer in answers:
                if answer.latency is not None:
                    policy.answered(state, answer.latency)
                else:
                    # At the time it came: windows count answers by their time.
                    at = min(now, answer.at)
                    signals += policy.on_answer(
                        state, at, limited=answer.limited, retry_after=answer.retry_after
                    )
            result = decide(state, now)
            self._state = state
            if self._store_clock is None:
                self._offset = now - self._clock()
            return encode_state(state), result

        try:
            result = await self._store.exchange(
                f"budget:{self._name}", step, self._now_override(), ttl=_BUDGET_TTL
            )
        except BaseException:
            # Not applied: keep them for the next exchange (the newest, if too many).
            self._pending = (answers + self._pending)[-_MAX_PENDING:]
            raise
        self._load_signals += signals
        return result

    def _now_override(self) -> float | None:
        return None if self._store_clock is None else self._store_clock()

    def _pass_now(self) -> float | None:
        """Never at once: every request of a shared budget goes through the store."""
        self._used = True
        return None

    async def _queue(self) -> float:
        """Pass the gate through the store; return our clock's time the request left."""
        policy = self._policy
        me: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(me)
        try:
            waited = self._waiters[0] is not me
            if waited:
                # Queued behind this process's own requests, for the pause they wait out at
                # least: a poll's claim must last that long (see _poll_claims.keep_claim).
                await keep_claim(self.paused_for)
                await me

            while True:
                if self._closed():
                    raise ClientClosedError("the client using this rate budget is closed")

                def take(
                    state: BudgetState, now: float, waited: bool = waited
                ) -> tuple[float, bool]:
                    delay = policy.delay(state, now)
                    if delay <= 0:
                        policy.take(state, now, waited=waited)
                    return delay, now < state.paused_until

                # The request may leave now: a poll's claim must last for its GET. (Before
                # the exchange: once it took a slot, nothing may stop the request leaving.)
                await keep_claim(0.0)
                # Shielded: a caller cancelled mid-exchange leaves the store consistent.
                delay, paused = await asyncio.shield(self._exchange(take))
                if delay <= 0:
                    break
                waited = waited or not paused  # held back by the rate, not a pause
                await keep_claim(delay)  # ... and for the wait before it
                await self._sleep(delay)
        finally:
            self._leave(me)
        self._in_flight += 1
        self._requests_sent += 1
        return self._clock()

    def _exit(self, entered: float) -> None:
        self._in_flight -= 1
        self._hear(
            _Answer(
                at=self._store_now(),
                limited=False,
                retry_after=None,
                latency=self._clock() - entered,
            )
        )

    def on_rate_limited(self, retry_after: float | None = None) -> None:
        """A request got 429: the fleet weighs it at this process's next exchange."""
        self._used = True
        self._rate_limited += 1
        self._hear(
            _Answer(at=self._store_now(), limited=True, retry_after=retry_after, latency=None)
        )

    def on_success(self) -> None:
        """A request got an answer other than 429."""
        self._used = True
        self._hear(_Answer(at=self._store_now(), limited=False, retry_after=None, latency=None))

    def _hear(self, answer: _Answer) -> None:
        """Keep ``answer`` for the next exchange; if nobody is about to make one, make one.

        A 429 must reach the other processes even when this one has nothing more to
        send, so an answer heard with nobody waiting at the gate is carried to the store
        by a small task of its own.
        """
        self._pending.append(answer)
        if len(self._pending) > _MAX_PENDING:
            del self._pending[: len(self._pending) - _MAX_PENDING]
        if self._closed() or self._waiters:
            return
        if self._flusher is not None and not self._flusher.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._flusher = loop.create_task(self._flush(), name="spo-async shared budget")

    async def _flush(self) -> None:
        try:
            await self._exchange(lambda state, now: None)
        except TransportError as exc:
            log.warning("%s; its answers are applied at the next request", exc)


def shared_limiter(
    uri: str, kind: StoreKind, *, name: object, clock: object, settings: dict[str, Any]
) -> SharedRequestLimiter:
    """Build the shared limiter (everything checked, nothing connected)."""
    if name is not None and not (isinstance(name, str) and 0 < len(name) <= 200):
        raise ConfigurationError(
            f"name must be a non-empty string of at most 200 characters, got {name!r}"
        )
    if clock is not None and not callable(clock):
        raise ConfigurationError(f"clock must be callable, got {type(clock).__name__}")
    return SharedRequestLimiter(
        uri,
        kind,
        name=name,
        clock=cast("Clock | None", clock),
        settings=settings,
    )
