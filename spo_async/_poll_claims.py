"""At most one poller per task across the processes that share a store.

Replicas of a web service that share a rate budget (:meth:`RequestLimiter.shared`)
often wait on the same task: each of four replicas serving a long poll for one
optimization would GET it four times as often as one. With a shared store, a look
at a task goes through a *claim* first, in the task's record
(``poll:<budget>:<task id>``; by default the budget is named after the API key,
so an account never reads another's snapshots, unless a ``name=`` given to
several keys says they share):

- a snapshot another process published since this look began (or, for a task
  looked at before, within a quarter of the time since this process's previous
  look), or a terminal one of any age, is the answer: no GET;
- a claim another process holds (its GET is in flight) is waited out in short
  steps, for at most the claim's length, after which it has lapsed (its holder
  died or hung) and the look claims it itself;
- otherwise the look claims the task for the request timeout, makes the GET, and
  publishes what it saw (and releases the claim), or only releases it if the GET
  failed.

So the processes' schedules still decide when each wants to know more, each wait
keeps its own deadline, events and retry policy, and one GET in flight at a time
serves them all.

**A claim lasts while its holder waits at the budget.** The GET of a claim may
first wait at the shared budget's gate (a fleet-wide ``Retry-After`` pause of up to
two minutes, or its turn at the rate), longer than the request timeout the claim is
held for. The gate extends the claim of the request it holds back (:func:`keep_claim`,
found through a context variable set around the claim's GET), so the hold counts
from when the GET leaves, and the other processes wait for its snapshot instead of
queueing GETs of their own behind the same pause; while the fleet is paused they
look at the claim once the pause ends rather than every few milliseconds.

**When the store fails**, the look falls back to a plain GET, with one warning per
client: a GET is idempotent, so the worst case is the requests the claims would
have saved, never a failed wait. A published snapshot that cannot be read (written
by hand, or by another version) is ignored the same way, and so is a record no
process would write (times that are not finite numbers, a claim held further ahead
than any hold, a snapshot seen in the future): it never makes a process wait.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Final

from ._errors import SPOError, TransportError
from ._models import TaskResult
from ._shared_store import SharedStore

__all__ = ["PollClaims", "keep_claim"]

log = logging.getLogger("spo_async")

#: A snapshot this recent, as a share of the time since this process's previous look,
#: is as good as a GET of its own.
_FRESH_SHARE: Final = 0.25
#: How long a waiting process sleeps between looks at a claim another process holds.
_WAIT_STEP: Final = 0.05
#: A task's record is forgotten a day after its last change.
_TTL: Final = 24 * 3600.0
#: A claim held further ahead than this (or than the reader's own hold, if longer) was
#: written by no process: a hold is a request timeout, extended at most by a pause.
_LONGEST_HOLD: Final = 3600.0
#: How far ahead of the reader's clock a snapshot's time may be (a clock stepped back).
_CLOCK_SLACK: Final = 60.0
#: The gate extends a claim only when it would otherwise end this share of a hold
#: before the GET's own timeout: most requests pass the gate without an extra exchange.
_EXTEND_SHARE: Final = 0.25

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class PollClaims:
    """The claims of one client (and its views) on the tasks it waits for."""

    def __init__(
        self,
        store: SharedStore,
        budget: str,
        *,
        store_clock: Clock | None,
        clock: Clock,
        sleep: Sleep,
        paused_for: Callable[[], float] | None = None,
    ) -> None:
        self._store = store
        self._budget = budget
        self._store_clock = store_clock
        self._clock = clock
        self._sleep = sleep
        #: Seconds until the budget's current pause ends (no GET leaves before then).
        self._paused_for = paused_for
        #: Who this process is, in the records: random, so two processes never agree.
        self._me = uuid.uuid4().hex
        self._warned = False

    def __repr__(self) -> str:
        return f"<PollClaims budget={self._budget[:8]}... store={self._store!r}>"

    def fetcher(
        self, task_id: str, fetch: Callable[[], Awaitable[TaskResult]], *, hold: float
    ) -> Callable[[], Awaitable[TaskResult]]:
        """``fetch`` for one wait on ``task_id``, its GETs shared with the other processes.

        ``hold`` is how long a claim lasts (the request timeout: a GET that takes
        longer has failed anyway).
        """
        previous: float | None = None

        async def look() -> TaskResult:
            nonlocal previous
            started = self._clock()
            fresh_for = 0.0 if previous is None else _FRESH_SHARE * (started - previous)
            previous = started
            try:
                return await self._look(task_id, fetch, hold=hold, fresh_for=fresh_for)
            except _StoreDownError as down:
                self._warn(down.error)
                return await fetch()

        return look

    async def _look(
        self,
        task_id: str,
        fetch: Callable[[], Awaitable[TaskResult]],
        *,
        hold: float,
        fresh_for: float,
    ) -> TaskResult:
        name = f"poll:{self._budget}:{task_id}"
        me = self._me
        began: float | None = None

        def claim(text: str | bytes | None, now: float) -> tuple[str, tuple[str, Any]]:
            nonlocal began
            if began is None:
                began = now
            record = _read(text, now, hold)
            snapshot, seen = record.get("snapshot"), record.get("seen_at", -math.inf)
            if snapshot is not None and (
                record.get("terminal") is True or seen >= began - fresh_for
            ):
                return _write(record), ("use", snapshot)
            until = record.get("until", -math.inf)
            if until > now and record.get("owner") != me:
                return _write(record), ("wait", until - now)
            record.update(owner=me, until=now + hold)
            return _write(record), ("poll", None)

        while True:
            decision, value = await self._exchange(name, claim)
            if decision == "use":
                result = _snapshot(value)
                if result is not None:
                    return result
                decision = "poll"  # unreadable: look for ourselves (the claim is not ours)
            if decision == "wait":
                await self._sleep(self._wait_step(float(value)))
                continue
            break
        held = _Held(self, name, hold)
        token = _HELD.set(held)
        try:
            result = await fetch()
        except BaseException:
            await self._settle(name, None)
            raise
        finally:
            _HELD.reset(token)
        await self._settle(name, result)
        return result

    def _wait_step(self, left: float) -> float:
        """How long to sleep before looking at another process's claim again.

        Short steps, so its snapshot is used soon after it is published; but while
        the fleet's budget is paused no GET can leave, so nothing is published before
        the pause ends (the claim's end comes first if it is sooner).
        """
        paused = self._paused_for() if self._paused_for is not None else 0.0
        return min(left, max(_WAIT_STEP, paused))

    async def _settle(self, name: str, result: TaskResult | None) -> None:
        """Publish ``result`` (if any) and release the claim; a store error is only logged."""
        me = self._me
        snapshot = None if result is None else result.to_dict()
        terminal = result is not None and result.is_terminal

        def publish(text: str | bytes | None, now: float) -> tuple[str, None]:
            record = _read(text, now, 0.0)
            if snapshot is not None and record.get("seen_at", -math.inf) <= now:
                record.update(snapshot=snapshot, seen_at=now, terminal=terminal)
            if record.get("owner") == me:
                record["until"] = now
            return _write(record), None

        try:
            await self._exchange(name, publish)
        except _StoreDownError as down:
            self._warn(down.error)

    async def _exchange(
        self, name: str, step: Callable[[str | bytes | None, float], tuple[str, Any]]
    ) -> Any:
        now = None if self._store_clock is None else self._store_clock()
        try:
            return await self._store.exchange(name, step, now, ttl=_TTL)
        except TransportError as exc:
            raise _StoreDownError(exc) from None

    def _warn(self, error: TransportError) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s: polling directly until it is back", error)


class _Held:
    """The claim of the look whose GET is under way in this task, as the gate sees it."""

    def __init__(self, claims: PollClaims, name: str, hold: float) -> None:
        self._claims = claims
        self._name = name
        self._hold = hold
        #: When the claim ends, on this process's clock (an estimate: the store's
        #: clock decides, but the two move alike between two exchanges).
        self._until = claims._clock() + hold

    async def cover(self, wait: float) -> None:
        """Make the claim last a hold after a GET that leaves in ``wait`` seconds."""
        claims, hold = self._claims, self._hold
        if claims._clock() + wait + hold <= self._until + _EXTEND_SHARE * hold:
            return
        me = claims._me

        def extend(text: str | bytes | None, now: float) -> tuple[str, bool]:
            record = _read(text, now, wait + hold)
            if record.get("owner") != me:
                return _write(record), False  # taken over: nothing of ours to extend
            record["until"] = max(float(record.get("until", now)), now + wait + hold)
            return _write(record), True

        try:
            ours = await claims._exchange(self._name, extend)
        except _StoreDownError as down:
            claims._warn(down.error)
            ours = False
        # Once not ours (or the store is away), stop trying: the GET goes on regardless.
        self._until = claims._clock() + wait + hold if ours else float("inf")


#: The claim whose GET is under way in the current task (read by the budget's gate).
_HELD: ContextVar[_Held | None] = ContextVar("spo_async_poll_claim", default=None)


async def keep_claim(wait: float) -> None:
    """The gate holds this task's request back ``wait`` seconds: keep its claim that long.

    Called by the shared budget's gate before each wait and as the request leaves
    (``wait=0``); nothing happens outside a claimed GET, or when the claim already
    lasts long enough (most requests).
    """
    held = _HELD.get()
    if held is not None:
        await held.cover(wait)


class _StoreDownError(Exception):
    """Internal: the store failed; the look goes on without it."""

    def __init__(self, error: TransportError) -> None:
        super().__init__(str(error))
        self.error = error


def _read(text: str | bytes | None, now: float, hold: float) -> dict[str, Any]:
    """A task's record, or an empty one if there is none or no process would write it.

    Its times must be finite numbers (a JSON ``Infinity``, ``1e999`` or a 400-digit
    integer are not), the snapshot seen no later than ``now`` (give or take a clock
    step), and the claim held no further ahead than the longest hold (``hold``, the
    reader's own, if longer): else every waiter would wait for ever, or use a
    snapshot that is never replaced.
    """
    if not text:
        return {}
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(record, dict):
        return {}
    limits = {"seen_at": now + _CLOCK_SLACK, "until": now + max(hold, _LONGEST_HOLD)}
    for field, latest in limits.items():
        if field not in record:
            continue
        value = record[field]
        if isinstance(value, bool) or not isinstance(value, int | float):
            del record[field]  # a type no process writes: as if it were not there
            continue
        try:
            number = float(value)
        except OverflowError:
            return {}
        if not (math.isfinite(number) and number <= latest):
            return {}
        record[field] = number
    return record


def _write(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))


def _snapshot(data: object) -> TaskResult | None:
    """The published snapshot, or ``None`` (with a warning) if it cannot be read."""
    try:
        if not isinstance(data, dict):
            raise TypeError(type(data).__name__)  # noqa: TRY301 - one path for every flaw
        return TaskResult.from_dict(data)
    except (SPOError, ValueError, TypeError, KeyError) as exc:
        log.warning("a shared task snapshot could not be read (%s): looking instead", exc)
        return None
