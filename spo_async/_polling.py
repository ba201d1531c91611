"""The loops that repeat calls: retries of one call, and polling a task to its end.

Both loops are :class:`tenacity.AsyncRetrying`, called through its public API
(stamina's ``_core.py`` composes tenacity the same way). The SDK's own objects
become tenacity strategies here: a retry policy becomes the stop and the
failure backoff, and a poll schedule becomes the wait between successful looks.
No tenacity type leaves this module, and tenacity is imported on first use
only: nothing needs it before a client makes a request, and it is a noticeable
share of ``import spo_async``'s time.

Every wait goes through the ``sleep`` and ``clock`` the client was given, so a
test runs whole waits at zero delay.

Contradicting snapshots. A snapshot that moves backwards (``success`` then
``processing``, completed rounds that vanish or change, ``best_round`` going
down) is not believed: the last good snapshot is kept, a warning is logged,
and the task is polled again after an error backoff. Only when
:data:`MAX_CONTRADICTIONS` answers in a row contradict it does the wait end
with a :class:`~spo_async.ProtocolError`. Fields the SDK does not know never
take part (they are not part of a model's equality), so a service rolling out
a new field behind a load balancer cannot make a finished round look changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Generic, NamedTuple, Protocol, TypeVar

from ._errors import ConfigurationError, SPOError, WaitTimeoutError, contradicting_task
from ._models import TaskResult
from ._retry import (
    RetryPolicy,
    backoff_delay,
    exceeds_retry_after,
    is_query_retryable,
    retry_after_of,
)
from ._schedules import PollMode, PollSchedule, PollState
from ._state import TaskStatus, is_legal_move

if TYPE_CHECKING:
    import tenacity

__all__ = [
    "DEADLINE_GRACE",
    "DEFAULT_WAIT_TIMEOUT",
    "MAX_CONTRADICTIONS",
    "Clock",
    "LoopObserver",
    "Observer",
    "Retry",
    "Sleep",
    "by_deadline",
    "current_attempt",
    "poll_until_done",
    "retry_call",
]

T = TypeVar("T")
log = logging.getLogger("spo_async")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: The overall wait deadline, in seconds, when none is given: 15 minutes, several
#: times what a 10-round task usually takes.
DEFAULT_WAIT_TIMEOUT = 900.0

#: Consecutive contradicting snapshots tolerated before the wait gives up.
MAX_CONTRADICTIONS = 3

#: Seconds a poll still in flight at the deadline may take to land. A poll that
#: hangs (a stalled gateway, a long ``request_timeout``) is abandoned then, so a
#: wait ends at most this long after its deadline; the grace lets the last look,
#: taken at the deadline itself, complete.
DEADLINE_GRACE = 0.25

_rng = random.Random()

_attempt: contextvars.ContextVar[int] = contextvars.ContextVar("spo_async_attempt", default=1)


def current_attempt() -> int:
    """The try number of the call running now: 1 at first, ``n`` after ``n - 1`` failures.

    Set by both loops around each call they make, so that the layer below can put
    it in its log line for each HTTP attempt.
    """
    return _attempt.get()


class Observer(Protocol):
    """Who hears what a loop sees: new snapshots and retries. Both calls must not block."""

    def snapshot(self, result: TaskResult) -> None:
        """A snapshot that changed something worth reporting."""

    def retrying(self, retry: Retry) -> None:
        """A passing failure, tried again after ``retry.wait`` seconds."""


class LoopObserver(Observer, Protocol):
    """What a poll loop reports to: an :class:`Observer` that also hears every look end."""

    def tick(self) -> None:
        """A look ended, whatever it saw."""

    def earliest_deadline(self) -> float | None:
        """The soonest deadline of anyone waiting on this loop: no sleep may cross it."""


def _remaining(deadline: float | None, clock: Clock) -> float:
    return float("inf") if deadline is None else deadline - clock()


class Retry(NamedTuple):
    """A passing failure about to be tried again: what failed, how often, and the wait."""

    operation: str
    #: The number of the attempt that failed.
    attempt: int
    wait: float
    cause: BaseException
    task_id: str | None


def _retry_noticed(observer: Observer | None, retry: Retry) -> None:
    """Log a retry at INFO and tell the observer, which must never break the loop."""
    log.info(
        "retrying %s in %.2f s after attempt %d failed: %s: %s",
        retry.operation,
        retry.wait,
        retry.attempt,
        type(retry.cause).__name__,
        retry.cause,
        extra={"task_id": retry.task_id},
    )
    if observer is not None:
        try:
            observer.retrying(retry)
        except Exception:
            log.exception("an observer raised on a retry notice; the loop goes on")


class _Call(Generic[T]):
    """One call that tenacity retries: the call, its policy, and the strategies made of them.

    Methods of one object per call rather than closures, reached through the
    module's ``_strategies`` (see there): a client runs this loop for every submit.
    """

    __slots__ = (
        "call",
        "clock",
        "deadline",
        "observer",
        "operation",
        "policy",
        "retryable",
        "task_id",
        "tries",
    )

    def __init__(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        operation: str,
        policy: RetryPolicy,
        retryable: Callable[[BaseException], bool],
        clock: Clock,
        deadline: float | None,
        task_id: str | None,
        observer: Observer | None,
    ) -> None:
        self.call = call
        self.operation = operation
        self.policy = policy
        self.retryable = retryable
        self.clock = clock
        self.deadline = deadline
        self.task_id = task_id
        self.observer = observer
        self.tries = 0

    async def attempt(self) -> T:
        self.tries += 1
        token = _numbered(self.tries)
        try:
            return await self.call()
        finally:
            if token is not None:
                _attempt.reset(token)

    def retry(self, state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        assert outcome is not None  # noqa: S101 - tenacity sets it before deciding
        exc = outcome.exception()
        return exc is not None and self.retryable(exc)

    def wait(self, state: tenacity.RetryCallState) -> float:
        assert state.outcome is not None  # noqa: S101 - tenacity sets it before waiting
        return backoff_delay(self.policy, state.attempt_number, state.outcome.exception(), _rng)

    def stop(self, state: tenacity.RetryCallState) -> bool:
        assert state.outcome is not None  # noqa: S101
        exc = state.outcome.exception()
        return (
            state.attempt_number >= self.policy.attempts
            or (exc is not None and exceeds_retry_after(self.policy, exc))
            or state.upcoming_sleep > _remaining(self.deadline, self.clock)
        )

    def before_sleep(self, state: tenacity.RetryCallState) -> None:
        assert state.outcome is not None  # noqa: S101
        exc = state.outcome.exception()
        assert exc is not None  # noqa: S101 - only failures are retried here
        retry = Retry(self.operation, state.attempt_number, state.upcoming_sleep, exc, self.task_id)
        _retry_noticed(self.observer, retry)


def _numbered(attempt: int) -> contextvars.Token[int] | None:
    """Make :func:`current_attempt` give ``attempt``; the token to reset, if it was set.

    The variable is set only when it changes: a first attempt (the usual case) finds
    it at its default already, and setting a context variable costs a new context.
    """
    return None if _attempt.get() == attempt else _attempt.set(attempt)


# -- the strategies given to tenacity --------------------------------------------------
#
# Both loops hand tenacity the same module functions: the loop's own object (a _Call or
# a _PollLoop) travels as the call's one argument (``RetryCallState.args``), so a loop
# allocates no closure and no bound method per strategy, which every submit and every
# wait would otherwise leave to the garbage collector. The ones tenacity runs at every
# attempt are coroutine functions: it takes those as they are, where it inspects and
# wraps a plain function again each time.


def _wait(state: tenacity.RetryCallState) -> float:
    return state.args[0].wait(state)  # type: ignore[no-any-return]


def _stop(state: tenacity.RetryCallState) -> bool:
    return state.args[0].stop(state)  # type: ignore[no-any-return]


async def _retry(state: tenacity.RetryCallState) -> bool:
    return state.args[0].retry(state)  # type: ignore[no-any-return]


async def _before_sleep(state: tenacity.RetryCallState) -> None:
    state.args[0].before_sleep(state)


async def _nothing(state: tenacity.RetryCallState) -> None:
    """Nothing to do before or after an attempt."""


def _resolve(future: asyncio.Future[None]) -> None:
    """End the sleep a wake interrupts, if that is still going (on the future's loop)."""
    if not future.done():
        future.set_result(None)


def _wake(future: asyncio.Future[None] | None) -> None:
    """A schedule's wake, callable from any thread.

    One schedule may serve clients on several event loops (a sync client runs its own
    in a thread), so the task that brings the news may run on another loop than the
    sleep it ends: the future is then resolved on its own loop's thread.
    """
    if future is None:
        return
    loop = future.get_loop()
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        _resolve(future)
    else:
        with contextlib.suppress(RuntimeError):  # that loop has closed: nothing sleeps
            loop.call_soon_threadsafe(_resolve, future)


def _forget(retrying: tenacity.AsyncRetrying) -> None:
    """Drop what ``retrying`` keeps of its last call, so that it is freed at once.

    tenacity keeps each call's plan (a list of its own bound methods and closures) in
    per-thread state on the retrying object: a reference cycle. Left alone, every
    submit and every wait would leave one behind for the garbage collector, about
    36 objects each, which by then have usually outlived the young generations;
    with a thousand tasks in flight that is most of what the full collections sweep
    (``bench/README.md``, "Client overhead"). The pickle protocol's public pair
    rebuilds the object without its per-thread state (``__getstate__`` leaves the
    ``threading.local`` out), which breaks the cycle; the strategies and settings stay.
    A tenacity without its own ``__setstate__`` keeps the cycle: slower, never wrong.
    """
    rebuild = getattr(retrying, "__setstate__", None)
    if rebuild is not None:
        rebuild(retrying.__getstate__())


def _checked(delay: object, task_id: str) -> float:
    """A schedule's delay, if it is a number of seconds a sleep can take (negative: none).

    NaN would become a look at once after every look (``min``/``max`` pass it through
    as 0), and infinity a sleep until the deadline, or for ever without one: a
    schedule's bug surfaces here, typed and at once, rather than as a storm or a hang.
    """
    if isinstance(delay, int | float) and not isinstance(delay, bool) and math.isfinite(delay):
        return delay
    raise ConfigurationError(
        f"the poll schedule gave {delay!r} as the delay before the next look at task "
        f"{task_id}: it must be a finite number of seconds (the task goes on on the service)"
    )


def _give_up(state: tenacity.RetryCallState) -> TaskResult:
    return state.args[0].give_up(state)  # type: ignore[no-any-return]


async def retry_call(
    call: Callable[[], Awaitable[T]],
    *,
    operation: str,
    policy: RetryPolicy,
    retryable: Callable[[BaseException], bool],
    sleep: Sleep,
    clock: Clock,
    deadline: float | None = None,
    task_id: str | None = None,
    observer: Observer | None = None,
) -> T:
    """Run ``call`` until it succeeds, fails for good, or the policy or deadline says stop.

    The last error is re-raised as it is. No wait crosses ``deadline`` (on ``clock``):
    when the next wait would, the last error is raised at once.
    """
    import tenacity  # noqa: PLC0415 - on first use; see the module docstring

    one = _Call(
        call,
        operation=operation,
        policy=policy,
        retryable=retryable,
        clock=clock,
        deadline=deadline,
        task_id=task_id,
        observer=observer,
    )
    retrying = tenacity.AsyncRetrying(
        sleep=sleep,
        wait=_wait,
        stop=_stop,
        retry=_retry,
        before=_nothing,
        after=_nothing,
        before_sleep=_before_sleep,
        reraise=True,
    )
    try:
        result: T = await retrying(_Call.attempt, one)
    finally:
        _forget(retrying)
    return result


def contradiction(before: TaskResult, after: TaskResult) -> str | None:
    """Why ``after`` cannot be a later snapshot of the task seen as ``before``, if it cannot."""
    if not is_legal_move(before.status, after.status):
        return f"status went from {before.raw_status!r} to {after.raw_status!r}"
    done_before, done_after = before.completed_rounds, after.completed_rounds
    if len(done_after) < len(done_before):
        return f"completed rounds went from {len(done_before)} to {len(done_after)}"
    for old, new in zip(done_before, done_after, strict=False):
        if old != new:
            return f"round {old.number} changed after it was complete"
    if (
        before.best_round is not None
        and after.best_round is not None
        and after.best_round < before.best_round
    ):
        return f"best_round went back from {before.best_round} to {after.best_round}"
    return None


def _changed(before: TaskResult | None, after: TaskResult) -> bool:
    return before is None or (
        before.raw_status != after.raw_status
        or before.status is not after.status
        or len(before.completed_rounds) != len(after.completed_rounds)
        or before.best_round != after.best_round
    )


class _ContradictedError(SPOError):
    """Internal: a snapshot that was not believed; retried like a passing failure."""


class _TaskWatch:
    """What one poll loop has learnt about its task: the timeline the schedule reads."""

    def __init__(
        self,
        task_id: str,
        *,
        clock: Clock,
        mode: Callable[[], PollMode],
        max_rounds: int | None,
        model: str | None,
        submitted_at: float | None = None,
    ) -> None:
        self.task_id = task_id
        self.clock = clock
        self.started = clock()
        self.submitted_at = submitted_at
        self.mode = mode
        self.max_rounds = max_rounds
        self.model = model
        self.last: TaskResult | None = None
        self.polls = 0
        self.failures = 0
        self.contradictions = 0
        self.round_seen_at: list[float] = []
        self.started_at: float | None = None
        self.warned_unknown = False

    def state(self) -> PollState:
        return PollState(
            task_id=self.task_id,
            polls=self.polls,
            elapsed=self.clock() - self.started,
            last=self.last,
            max_rounds=self.max_rounds,
            model=self.model,
            round_seen_at=tuple(self.round_seen_at),
            started_at=self.started_at,
            mode=self.mode(),
            submitted_at=(
                None if self.submitted_at is None else min(0.0, self.submitted_at - self.started)
            ),
        )

    def believe(self, result: TaskResult) -> bool:
        """Take in a new snapshot; return whether it changed anything worth reporting."""
        previous = self.last
        if previous is not None:
            problem = contradiction(previous, result)
            if problem is not None:
                self.contradictions += 1
                log.warning(
                    "task %s: not believing a snapshot that contradicts the last one (%s)",
                    self.task_id,
                    problem,
                    extra={"task_id": self.task_id},
                )
                if self.contradictions >= MAX_CONTRADICTIONS:
                    raise contradicting_task(
                        self.task_id, f"{problem} ({self.contradictions} answers in a row)"
                    )
                raise _ContradictedError(problem)
        self.contradictions = 0
        self.polls += 1
        now = self.clock() - self.started
        if self.started_at is None and result.status not in (TaskStatus.QUEUE, TaskStatus.UNKNOWN):
            self.started_at = now
        done = len(result.completed_rounds)
        while len(self.round_seen_at) < done:
            self.round_seen_at.append(now)
        if result.status is TaskStatus.UNKNOWN and not self.warned_unknown:
            self.warned_unknown = True
            log.warning(
                "task %s: unknown status %r, treated as not finished",
                self.task_id,
                result.raw_status,
                extra={"task_id": self.task_id},
            )
        self.last = result
        return _changed(previous, result)


async def by_deadline(
    pending: Awaitable[T],
    deadline: float,
    clock: Clock,
    expired: Callable[[], BaseException],
) -> T:
    """Await ``pending``, abandoning it :data:`DEADLINE_GRACE` seconds after ``deadline``.

    The grace is measured with ``asyncio.timeout`` on the event loop, because a
    request in flight is bounded by real time; the deadline itself is read on ``clock``.
    """
    try:
        bound = asyncio.timeout(max(0.0, deadline - clock()) + DEADLINE_GRACE)
    except BaseException:
        close = getattr(pending, "close", None)  # a coroutine never awaited: no warning
        if close is not None:
            close()
        raise
    try:
        async with bound:
            return await pending
    except TimeoutError:
        if bound.expired():  # the deadline, not the request's own timeout
            raise expired() from None
        raise


class _PollLoop:
    """One poll loop's look and its strategies for tenacity, over what it has seen (its watch).

    ``look`` is the one GET per attempt; ``retry`` says whether to look again (a
    passing failure, or a task not finished); ``wait`` is the schedule after a good
    look and the policy's backoff after a failed one, capped at the deadline;
    ``stop`` ends the loop when failures are used up or the deadline has come;
    ``give_up`` says how it ended. Methods of one object rather than closures,
    reached through the module's ``_strategies`` (see there).
    """

    __slots__ = (
        "deadline",
        "fetch",
        "observer",
        "policy",
        "schedule",
        "sleep",
        "timeout",
        "wake_on_news",
        "watch",
        "woken",
    )

    def __init__(
        self,
        watch: _TaskWatch,
        fetch: Callable[[], Awaitable[TaskResult]],
        *,
        schedule: PollSchedule,
        policy: RetryPolicy,
        deadline: float | None,
        timeout: float | None,
        observer: LoopObserver | None,
        sleep: Sleep,
    ) -> None:
        self.watch = watch
        self.fetch = fetch
        self.schedule = schedule
        self.policy = policy
        self.deadline = deadline
        self.timeout = timeout
        self.observer = observer
        self.sleep = sleep
        self.wake_on_news: Callable[[PollState, Callable[[], None]], object] | None = getattr(
            schedule, "wake_on_news", None
        )
        self.woken: asyncio.Future[None] | None = None  # the sleep a wake would end

    async def look(self) -> TaskResult:
        """One GET of the task, taken in by the watch."""
        watch, observer = self.watch, self.observer
        token = _numbered(max(watch.failures, watch.contradictions) + 1)
        deadline = self.deadline
        try:
            if deadline is None:
                result = await self.fetch()
            else:  # by_deadline's bound, inline: one coroutine fewer for every look
                bound = asyncio.timeout(max(0.0, deadline - watch.clock()) + DEADLINE_GRACE)
                try:
                    async with bound:
                        result = await self.fetch()
                except TimeoutError:
                    if bound.expired():  # the deadline, not the request's own timeout
                        raise self.timed_out() from None
                    raise
        except BaseException:
            watch.failures += 1
            raise
        finally:
            if token is not None:
                _attempt.reset(token)
            if observer is not None:
                observer.tick()
        watch.failures = 0
        if watch.believe(result) and observer is not None:
            try:
                observer.snapshot(result)
            except Exception:
                log.exception("an observer raised on a snapshot; the loop goes on")
        assert watch.last is not None  # noqa: S101 - believe() just set it
        return watch.last

    def remaining(self) -> float:
        return _remaining(self.deadline, self.watch.clock)

    def until_someone_is_due(self) -> float:
        """Time until the soonest deadline among the loop's waiters (its own included)."""
        soonest = self.observer.earliest_deadline() if self.observer is not None else None
        return min(self.remaining(), _remaining(soonest, self.watch.clock))

    def asks_past_deadline(self, exc: BaseException | None) -> bool:
        """Whether the service's Retry-After outlasts the deadline.

        Looking again at the deadline would ignore what the service asked, so the
        wait ends at once, with the service's own error.
        """
        if exc is None or not self.policy.respect_retry_after:
            return False
        asked = retry_after_of(exc)
        return asked is not None and asked > self.remaining()

    def timed_out(self, cause: BaseException | None = None) -> WaitTimeoutError:
        watch = self.watch
        error = WaitTimeoutError(watch.task_id, self.timeout or 0.0, watch.last)
        error.__cause__ = cause
        return error

    def failed_for_good(self, exc: BaseException | None) -> bool:
        return exc is not None and (
            self.watch.failures >= self.policy.attempts or exceeds_retry_after(self.policy, exc)
        )

    def retry(self, state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        assert outcome is not None  # noqa: S101 - tenacity sets it before deciding
        exc = outcome.exception()
        if exc is not None:
            return isinstance(exc, _ContradictedError) or is_query_retryable(exc)
        finished: bool = outcome.result().is_terminal
        return not finished

    def wait(self, state: tenacity.RetryCallState) -> float:
        assert state.outcome is not None  # noqa: S101 - tenacity sets it before waiting
        exc, watch = state.outcome.exception(), self.watch
        if exc is None:
            delay = _checked(self.schedule.next_delay(watch.state()), watch.task_id)
        else:
            failures = max(watch.failures, watch.contradictions)
            delay = backoff_delay(self.policy, failures, exc, _rng)
        return max(0.0, min(delay, self.until_someone_is_due()))

    def stop(self, state: tenacity.RetryCallState) -> bool:
        assert state.outcome is not None  # noqa: S101
        exc = state.outcome.exception()
        return self.failed_for_good(exc) or self.remaining() <= 0 or self.asks_past_deadline(exc)

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds`` before the next look, unless the schedule has news first.

        A schedule with ``wake_on_news`` may wake a sleep that follows a good look (what
        other tasks showed moved this one's next look); the loop then asks it for the
        delay again, from now, and sleeps that. A backoff after a failure is the retry
        policy's: it is slept whole. tenacity sleeps through this method (its public
        ``sleep`` argument), so the client's ``sleep`` still does every wait. A
        ``wake_on_news`` that raises or answers other than ``True``/``False`` costs the
        loop its wakes (logged once), never the wait.
        """
        watch = self.watch
        while seconds > 0:
            if self.wake_on_news is None or watch.failures or watch.contradictions:
                await self.sleep(seconds)
                return
            woken = self.woken = asyncio.get_running_loop().create_future()
            if not self.offer_wake():
                await self.sleep(seconds)
                return
            sleeping = asyncio.ensure_future(self.sleep(seconds))
            stopped = False
            try:
                await asyncio.wait((sleeping, woken), return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()  # a wake that comes later finds it done
                if not sleeping.done():  # woken, or cancelled: no sleep is left behind
                    stopped = True
                    sleeping.cancel()
                    await asyncio.wait((sleeping,))
                elif not sleeping.cancelled():
                    sleeping.exception()  # retrieved here, whatever ends the wait
            if not (stopped and sleeping.cancelled()):
                sleeping.result()  # the sleep ran out (or raised, or was cancelled): look
                return
            seconds = min(self.schedule.next_delay(watch.state()), self.until_someone_is_due())

    def offer_wake(self) -> bool:
        """Offer the schedule this loop's wake; whether it kept it."""
        assert self.wake_on_news is not None  # noqa: S101 - pause checked
        try:
            kept = self.wake_on_news(self.watch.state(), self.wake)
        except Exception:
            log.exception("the schedule's wake_on_news raised; this wait sleeps unwoken")
            kept = None
        if kept is True or kept is False:
            return kept
        close = getattr(kept, "close", None)  # a coroutine (an async wake_on_news), say
        if close is not None:
            close()
        if kept is not None:
            log.warning("wake_on_news answered %r, not True or False: ignored", type(kept))
        self.wake_on_news = None
        return False

    def wake(self) -> None:
        """Wake this loop's sleep: one wake for every sleep, callable from any thread."""
        _wake(self.woken)

    def give_up(self, state: tenacity.RetryCallState) -> TaskResult:
        assert state.outcome is not None  # noqa: S101
        exc = state.outcome.exception()
        if exc is not None and (
            self.failed_for_good(exc) or self.deadline is None or self.asks_past_deadline(exc)
        ):
            raise exc
        raise self.timed_out(exc)

    def before_sleep(self, state: tenacity.RetryCallState) -> None:
        assert state.outcome is not None  # noqa: S101
        exc, watch = state.outcome.exception(), self.watch
        if exc is not None:
            attempt = watch.failures or watch.contradictions
            operation = f"GET task {watch.task_id}"
            retry = Retry(operation, attempt, state.upcoming_sleep, exc, watch.task_id)
            _retry_noticed(self.observer, retry)


async def poll_until_done(
    fetch: Callable[[], Awaitable[TaskResult]],
    *,
    task_id: str,
    schedule: PollSchedule,
    policy: RetryPolicy,
    deadline: float | None,
    timeout: float | None,
    sleep: Sleep,
    clock: Clock,
    mode: Callable[[], PollMode],
    max_rounds: int | None = None,
    model: str | None = None,
    submitted_at: float | None = None,
    observer: LoopObserver | None = None,
    look_at_once: bool = False,
) -> TaskResult:
    """Query a task until it reaches a terminal status, and return that snapshot.

    The first look comes after ``schedule``'s delay for a task not looked at yet
    (``polls == 0``), or at once with ``look_at_once`` (a loop that takes over
    from another, which has looked at the task already). Then tenacity decides:
    a terminal snapshot ends the loop; a running one waits ``schedule``'s delay;
    a passing failure waits ``policy``'s backoff, and ``policy.attempts``
    failures in a row end the wait with the last error. No sleep crosses
    ``deadline`` (on ``clock``): the last look happens at the deadline, and if
    the task is still running then, :class:`~spo_async.WaitTimeoutError` (with
    ``timeout`` in its message) carries the last snapshot.
    """
    import tenacity  # noqa: PLC0415 - on first use; see the module docstring

    watch = _TaskWatch(
        task_id,
        clock=clock,
        mode=mode,
        max_rounds=max_rounds,
        model=model,
        submitted_at=submitted_at,
    )
    loop = _PollLoop(
        watch,
        fetch,
        schedule=schedule,
        policy=policy,
        deadline=deadline,
        timeout=timeout,
        observer=observer,
        sleep=sleep,
    )
    retrying = tenacity.AsyncRetrying(
        sleep=sleep if loop.wake_on_news is None else loop.pause,
        wait=_wait,
        stop=_stop,
        retry=_retry,
        before=_nothing,
        after=_nothing,
        before_sleep=_before_sleep,
        retry_error_callback=_give_up,
    )
    finished = getattr(schedule, "task_finished", None)
    try:
        if not look_at_once:
            # The schedule's delay before the first look (``polls == 0``), usually 0.
            delay = _checked(schedule.next_delay(watch.state()), task_id)
            first = min(delay, loop.until_someone_is_due())
            if first > 0:
                await sleep(first)
        result: TaskResult = await retrying(_PollLoop.look, loop)
    finally:
        _forget(retrying)
        if finished is not None:
            # A learning schedule sees the final snapshot too, and forgets the task.
            finished(watch.state())
    return result
