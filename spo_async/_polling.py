"""The loops that repeat calls: retries of one call, and polling a task to its end.

This is the only module that imports tenacity (on first use), and no tenacity
type leaves it: schedules (:mod:`spo_async._schedules`) and retry policies
(:mod:`spo_async._retry`) are the SDK's own objects, adapted here into tenacity
wait, stop and retry strategies (stamina wraps tenacity the same way). It is
imported inside the functions that use it: nothing needs it before a client
makes a request, and it is a noticeable share of ``import spo_async``'s time
(``bench/README.md`` measures it).

Clock and sleep are parameters, so tests run whole waits at zero delay.

Contradicting snapshots. A snapshot that moves backwards (``success`` then
``processing``, rounds that vanish or change, ``best_round`` going down) is not
believed: the last good snapshot is kept, a warning is logged, and the task is
polled again after an error backoff. Only when
:data:`MAX_CONTRADICTIONS` answers in a row contradict it does the wait end
with :class:`~spo_async.TaskStateError`.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import random
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import SPOError, TaskStateError, WaitTimeoutError
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
    "DEFAULT_WAIT_TIMEOUT",
    "DEADLINE_GRACE",
    "MAX_CONTRADICTIONS",
    "RetryNotice",
    "current_attempt",
    "poll_until_done",
    "retry_call",
]

T = TypeVar("T")
log = logging.getLogger("spo_async")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
#: Called with each new snapshot; may be sync or async.
SnapshotHook = Callable[[TaskResult], Any]

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

    Set by :func:`retry_call` and :func:`poll_until_done` around each call they make,
    so that the layer below can put it in its log line for each HTTP attempt.
    """
    return _attempt.get()


class RetryNotice:
    """What a retry is about to do; handed to ``on_retry`` hooks and logged."""

    __slots__ = ("attempt", "cause", "operation", "task_id", "wait")

    def __init__(
        self, operation: str, attempt: int, wait: float, cause: BaseException, task_id: str | None
    ) -> None:
        self.operation = operation
        self.attempt = attempt
        self.wait = wait
        self.cause = cause
        self.task_id = task_id

    def __repr__(self) -> str:
        return (
            f"RetryNotice(operation={self.operation!r}, attempt={self.attempt}, "
            f"wait={self.wait:.3f}, cause={type(self.cause).__name__}, task_id={self.task_id!r})"
        )


RetryHook = Callable[[RetryNotice], Any]


async def _call_hook(hook: Callable[[T], Any] | None, value: T) -> None:
    if hook is None:
        return
    outcome = hook(value)
    if inspect.isawaitable(outcome):
        await outcome


def _remaining(deadline: float | None, clock: Clock) -> float:
    return float("inf") if deadline is None else deadline - clock()


async def _drive(
    retrying: tenacity.Retrying,
    attempt: Callable[[], Awaitable[T]],
    *,
    sleep: Sleep,
    before_sleep: Callable[[tenacity.RetryCallState], Awaitable[None]],
) -> T:
    """Run ``attempt`` under ``retrying``'s decisions, doing the awaiting here.

    tenacity decides everything (retry or not, how long to wait, when to stop,
    what to raise); this loop only awaits the attempt, the hook and the sleep.
    Why not ``tenacity.AsyncRetrying``: in tenacity 9 it inspects every strategy
    with :func:`inspect.iscoroutinefunction` again on every attempt, which was
    the largest single cost of a poll in the profile (``bench/README.md``). The
    decisions come from the same state machine (``Retrying.iter``, the loop
    ``AsyncRetrying`` itself ran until tenacity 8.3) with plain calls, so every
    strategy given to ``retrying`` must be synchronous; the one async hook,
    ``before_sleep``, runs here, at the point where tenacity would run it.
    """
    import tenacity  # noqa: PLC0415 - on first use; see the module docstring

    retrying.begin()
    state = tenacity.RetryCallState(retrying, fn=None, args=(), kwargs={})
    while True:
        do = retrying.iter(state)
        if isinstance(do, tenacity.DoAttempt):
            try:
                result = await attempt()
            except BaseException:  # judged by the retry strategy, re-raised if not retried
                state.set_exception(sys.exc_info())  # type: ignore[arg-type]
            else:
                state.set_result(result)
        elif isinstance(do, tenacity.DoSleep):
            await before_sleep(state)
            state.prepare_for_next_attempt()
            await sleep(float(do))
        else:
            return do  # type: ignore[no-any-return]


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
    on_retry: RetryHook | None = None,
) -> T:
    """Run ``call`` until it succeeds, fails for good, or the policy or deadline says stop.

    The last error is re-raised as it is. No wait crosses ``deadline``: when the
    next wait would, the last error is raised at once.
    """

    def wait(state: tenacity.RetryCallState) -> float:
        assert state.outcome is not None  # noqa: S101 - tenacity sets it before waiting
        return backoff_delay(policy, state.attempt_number, state.outcome.exception(), _rng)

    def stop(state: tenacity.RetryCallState) -> bool:
        assert state.outcome is not None  # noqa: S101
        exc = state.outcome.exception()
        return (
            state.attempt_number >= policy.attempts
            or (exc is not None and exceeds_retry_after(policy, exc))
            or state.upcoming_sleep > _remaining(deadline, clock)
        )

    async def before_sleep(state: tenacity.RetryCallState) -> None:
        assert state.outcome is not None  # noqa: S101
        exc = state.outcome.exception()
        assert exc is not None  # noqa: S101 - only failures are retried here
        notice = RetryNotice(operation, state.attempt_number, state.upcoming_sleep, exc, task_id)
        _log_retry(notice)
        await _call_hook(on_retry, notice)

    tries = 0

    async def attempt() -> T:
        nonlocal tries
        tries += 1
        token = _attempt.set(tries)
        try:
            return await call()
        finally:
            _attempt.reset(token)

    import tenacity  # noqa: PLC0415 - on first use; see the module docstring

    retrying = tenacity.Retrying(
        stop=stop, wait=wait, retry=tenacity.retry_if_exception(retryable), reraise=True
    )
    return await _drive(retrying, attempt, sleep=sleep, before_sleep=before_sleep)


def _log_retry(notice: RetryNotice) -> None:
    log.info(
        "retrying %s in %.2f s after attempt %d failed: %s: %s",
        notice.operation,
        notice.wait,
        notice.attempt,
        type(notice.cause).__name__,
        notice.cause,
        extra={"task_id": notice.task_id},
    )


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
    """What one wait has learnt about its task: the timeline the schedule reads."""

    def __init__(
        self,
        task_id: str,
        *,
        clock: Clock,
        mode: PollMode | Callable[[], PollMode],
        max_rounds: int | None,
        model: str | None,
    ) -> None:
        self.task_id = task_id
        self.clock = clock
        self.started = clock()
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
            mode=self.mode() if callable(self.mode) else self.mode,
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
                    raise TaskStateError(
                        f"{problem} ({self.contradictions} answers in a row)",
                        task_id=self.task_id,
                        previous=previous,
                        current=result,
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


def _asks_to_wait_past(policy: RetryPolicy, exc: BaseException | None, remaining: float) -> bool:
    """Whether the service's Retry-After outlasts the deadline.

    Looking again at the deadline would then ignore the service's request, so the
    wait ends at once instead.
    """
    asked = retry_after_of(exc) if exc is not None and policy.respect_retry_after else None
    return asked is not None and asked > remaining


async def _by_deadline(
    fetch: Callable[[], Awaitable[T]],
    deadline: float | None,
    clock: Clock,
    expired: Callable[[], BaseException],
) -> T:
    """Run ``fetch``, abandoning it :data:`DEADLINE_GRACE` seconds after ``deadline``."""
    if deadline is None:
        return await fetch()
    bound = asyncio.timeout(max(0.0, deadline - clock()) + DEADLINE_GRACE)
    try:
        async with bound:
            return await fetch()
    except TimeoutError:
        if bound.expired():  # the deadline, not the request's own timeout
            raise expired() from None
        raise


async def poll_until_done(  # noqa: PLR0915 - one loop, its strategies as closures
    fetch: Callable[[], Awaitable[TaskResult]],
    *,
    task_id: str,
    schedule: PollSchedule,
    policy: RetryPolicy,
    timeout: float | None,
    sleep: Sleep,
    clock: Clock,
    mode: PollMode | Callable[[], PollMode] = PollMode.COMPLETION,
    max_rounds: int | None = None,
    model: str | None = None,
    on_snapshot: SnapshotHook | None = None,
    on_retry: RetryHook | None = None,
    look_at_once: bool = False,
) -> TaskResult:
    """Query a task until it reaches a terminal status, and return that snapshot.

    The first look comes after ``schedule``'s delay for a task not looked at yet
    (``polls == 0``; 0 for the built-in schedules unless their ``first`` says
    otherwise), or at once with ``look_at_once`` (a loop that takes over from
    another, which has looked at the task already). Successful polls are spaced
    by ``schedule``; failed ones by ``policy``'s backoff, ``policy.attempts``
    failures in a row ending the wait with the last error. No sleep crosses the
    deadline (``timeout`` seconds from now, ``None`` for none): the last look
    happens at the deadline, and if the task is still running then,
    :class:`~spo_async.WaitTimeoutError` carries the last snapshot.
    A poll still in flight :data:`DEADLINE_GRACE` seconds after the deadline is
    abandoned with the same error.
    """
    watch = _TaskWatch(task_id, clock=clock, mode=mode, max_rounds=max_rounds, model=model)
    deadline = None if timeout is None else watch.started + timeout

    async def attempt() -> TaskResult:
        token = _attempt.set(max(watch.failures, watch.contradictions) + 1)
        try:
            result = await _by_deadline(
                fetch,
                deadline,
                clock,
                lambda: WaitTimeoutError(task_id, timeout or 0.0, watch.last),
            )
        except BaseException:
            watch.failures += 1
            raise
        finally:
            _attempt.reset(token)
        watch.failures = 0
        if watch.believe(result):
            await _call_hook(on_snapshot, result)
        assert watch.last is not None  # noqa: S101 - believe() just set it
        return watch.last

    def retryable(exc: BaseException) -> bool:
        return isinstance(exc, _ContradictedError) or is_query_retryable(exc)

    def wait(state: tenacity.RetryCallState) -> float:
        assert state.outcome is not None  # noqa: S101
        exc = state.outcome.exception()
        if exc is not None:
            delay = backoff_delay(policy, max(watch.failures, watch.contradictions), exc, _rng)
        else:
            delay = schedule.next_delay(watch.state())
        return max(0.0, min(delay, _remaining(deadline, clock)))

    def stop(state: tenacity.RetryCallState) -> bool:
        assert state.outcome is not None  # noqa: S101
        exc = state.outcome.exception()
        if exc is not None and (
            watch.failures >= policy.attempts or exceeds_retry_after(policy, exc)
        ):
            return True
        remaining = _remaining(deadline, clock)
        return remaining <= 0 or _asks_to_wait_past(policy, exc, remaining)

    def give_up(state: tenacity.RetryCallState) -> TaskResult:
        assert state.outcome is not None  # noqa: S101
        exc = state.outcome.exception()
        gave_up_on_error = exc is not None and (
            watch.failures >= policy.attempts or exceeds_retry_after(policy, exc)
        )
        if not gave_up_on_error and timeout is not None:
            raise WaitTimeoutError(task_id, timeout, watch.last) from exc
        assert exc is not None  # noqa: S101 - only failures or the deadline stop a wait
        raise exc

    async def before_sleep(state: tenacity.RetryCallState) -> None:
        assert state.outcome is not None  # noqa: S101
        exc = state.outcome.exception()
        if exc is not None:
            notice = RetryNotice(
                f"GET task {task_id}", watch.failures, state.upcoming_sleep, exc, task_id
            )
            _log_retry(notice)
            await _call_hook(on_retry, notice)

    import tenacity  # noqa: PLC0415 - on first use; see the module docstring

    retrying = tenacity.Retrying(
        stop=stop,
        wait=wait,
        retry=(
            tenacity.retry_if_exception(retryable)
            | tenacity.retry_if_result(lambda r: not r.is_terminal)
        ),
        retry_error_callback=give_up,
    )
    finished = getattr(schedule, "task_finished", None)
    try:
        if not look_at_once:
            # The schedule's delay before the first look (``polls == 0``), usually 0.
            first = min(schedule.next_delay(watch.state()), _remaining(deadline, clock))
            if first > 0:
                await sleep(first)
        result: TaskResult = await _drive(retrying, attempt, sleep=sleep, before_sleep=before_sleep)
    finally:
        if finished is not None:
            # A learning schedule sees the final snapshot too, and forgets the task.
            finished(watch.state())
    return result
