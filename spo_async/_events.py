"""Progress as typed events, from single waits and from batches alike.

Every event is a frozen attrs value. Task events carry the batch item's ``key``
(``None`` for a single wait without one) and the ``task_id`` once it is known.
For one task they come in this order::

    TaskSubmitted?  TaskQueued?  RoundCompleted(1) ... RoundCompleted(k)  <one final event>

with :class:`TaskRetrying` anywhere before the end, and exactly one final event:
:class:`TaskSucceeded`, :class:`TaskFailed`, :class:`TaskTimedOut`,
:class:`TaskErrored` or :class:`TaskOutcomeUnknown` (which has no task id and
nothing before it but retries). A task resumed from a journal has no
``TaskSubmitted`` (an earlier run sent it). :class:`BatchProgress` carries a
batch's counters.

:class:`~spo_async.EventStream` (in :mod:`spo_async._stream`) delivers them
to a callback and to async iterators.

The adapters turn the client's hooks into events: :func:`hooks_for` gives an
``on_progress`` / ``on_retry`` pair, :func:`events_between` diffs two snapshots,
and :func:`final_event` names the end of a wait from its result or error. The
final event is never derived from snapshots, because only the code that ends
the wait knows whether it ended with a result, a timeout or an error.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, TypeVar

import attrs

from ._errors import SubmitOutcomeUnknownError, TaskFailedError, WaitTimeoutError
from ._models import OptimizationRequest, Round, TaskResult
from ._polling import RetryNotice
from ._state import TaskStatus

__all__ = [
    "BatchKey",
    "BatchProgress",
    "Event",
    "EventCallback",
    "RoundCompleted",
    "TaskErrored",
    "TaskEvent",
    "TaskFailed",
    "TaskOutcomeUnknown",
    "TaskQueued",
    "TaskRetrying",
    "TaskSubmitted",
    "TaskSucceeded",
    "TaskTimedOut",
    "chain_hooks",
    "events_between",
    "final_event",
    "hooks_for",
]

T = TypeVar("T")

#: How a batch item is named: the caller's own key, or one the batch derives.
BatchKey: TypeAlias = str | int


@attrs.frozen(kw_only=True)
class TaskEvent:
    """Something happened to one task. ``key`` names the batch item, if any."""

    key: BatchKey | None = None
    task_id: str | None = None


@attrs.frozen(kw_only=True)
class TaskSubmitted(TaskEvent):
    """The service accepted the submit; from now on the task is billed."""

    task_id: str


@attrs.frozen(kw_only=True)
class TaskQueued(TaskEvent):
    """The service reports the task waiting in its queue."""

    task_id: str


@attrs.frozen(kw_only=True)
class RoundCompleted(TaskEvent):
    """Round ``number`` of ``total`` finished (``total`` is ``None`` when unknown).

    ``success`` says whether this round's prompt beat the best so far;
    ``best_prompt`` is the best prompt after this round (SPO's rule: the most
    recent successful round's).
    """

    task_id: str
    number: int
    total: int | None
    success: bool
    prompt: str
    best_prompt: str | None


@attrs.frozen(kw_only=True)
class TaskRetrying(TaskEvent):
    """A submit or poll failed in a passing way and is tried again after ``wait`` seconds."""

    operation: str
    attempt: int
    wait: float
    cause: BaseException = attrs.field(eq=False)


@attrs.frozen(kw_only=True)
class TaskSucceeded(TaskEvent):
    """The task finished with a result."""

    task_id: str
    result: TaskResult


@attrs.frozen(kw_only=True)
class TaskFailed(TaskEvent):
    """The task finished in ``fail``; ``result.error`` says why, when the service said."""

    task_id: str
    result: TaskResult


@attrs.frozen(kw_only=True)
class TaskTimedOut(TaskEvent):
    """The wait's deadline passed; the task keeps running (and billing) on the service."""

    task_id: str
    timeout: float
    last_result: TaskResult | None


@attrs.frozen(kw_only=True)
class TaskErrored(TaskEvent):
    """The submit or the wait ended with an error; ``task_id`` is set when a task exists."""

    error: BaseException = attrs.field(eq=False)


@attrs.frozen(kw_only=True)
class TaskOutcomeUnknown(TaskEvent):
    """A submit may have created (and billed) a task whose id never arrived."""

    error: BaseException = attrs.field(eq=False)


@attrs.frozen(kw_only=True)
class BatchProgress:
    """A batch's counters.

    ``pending`` items have not started, ``running`` are being submitted or
    waited for, ``done`` have an outcome (``failed`` of them are anything but a
    success). ``requests_per_second`` is the client's recent HTTP request rate,
    when its limiter counts it.
    """

    total: int
    pending: int
    running: int
    done: int
    failed: int
    requests_per_second: float | None = None


#: Every event an :class:`EventStream` carries.
Event: TypeAlias = (
    TaskSubmitted
    | TaskQueued
    | RoundCompleted
    | TaskRetrying
    | TaskSucceeded
    | TaskFailed
    | TaskTimedOut
    | TaskErrored
    | TaskOutcomeUnknown
    | BatchProgress
)

#: A consumer of events: a plain function, or an ``async def`` one.
EventCallback: TypeAlias = Callable[[Event], Any]

# -- adapters from the client's hooks ------------------------------------------------------


def _best_prompt_up_to(rounds: Sequence[Round], number: int) -> str | None:
    for r in reversed(rounds):
        if r.number <= number and r.success:
            return r.prompt
    return None


def events_between(
    previous: TaskResult | None,
    current: TaskResult,
    *,
    key: BatchKey | None = None,
    total: int | None = None,
) -> list[Event]:
    """The progress events that lead from snapshot ``previous`` to ``current``.

    A newly queued task gives :class:`TaskQueued`; each round completed since
    ``previous`` gives a :class:`RoundCompleted`, in order. Final events are
    not produced here (see :func:`final_event`). ``total`` is the number of
    rounds, when the snapshot does not know it.
    """
    events: list[Event] = []
    task_id = current.task_id
    if current.status is TaskStatus.QUEUE and (
        previous is None or previous.status is not TaskStatus.QUEUE
    ):
        events.append(TaskQueued(key=key, task_id=task_id))
    done = current.completed_rounds
    seen = len(previous.completed_rounds) if previous is not None else 0
    rounds_total = current.max_rounds if current.max_rounds is not None else total
    for r in done[seen:]:
        events.append(
            RoundCompleted(
                key=key,
                task_id=task_id,
                number=r.number,
                total=rounds_total,
                success=r.success,
                prompt=r.prompt,
                best_prompt=_best_prompt_up_to(done, r.number),
            )
        )
    return events


def final_event(
    *,
    key: BatchKey | None,
    task_id: str | None,
    result: TaskResult | None = None,
    error: BaseException | None = None,
) -> Event:
    """The event that ends a task's story: from its final snapshot, or from the error."""
    if error is not None:
        known: str | None = getattr(error, "task_id", None)
        task_id = task_id if task_id is not None else known
        if isinstance(error, SubmitOutcomeUnknownError):
            return TaskOutcomeUnknown(key=key, error=error)
        if isinstance(error, WaitTimeoutError) and task_id is not None:
            return TaskTimedOut(
                key=key, task_id=task_id, timeout=error.timeout, last_result=error.last_result
            )
        if isinstance(error, TaskFailedError) and task_id is not None:
            return TaskFailed(key=key, task_id=task_id, result=error.result)
        return TaskErrored(key=key, task_id=task_id, error=error)
    if result is None or not result.is_terminal:
        raise ValueError("final_event needs a terminal result or an error")
    if result.succeeded:
        return TaskSucceeded(key=key, task_id=result.task_id, result=result)
    return TaskFailed(key=key, task_id=result.task_id, result=result)


def chain_hooks(*hooks: Callable[[T], Any] | None) -> Callable[[T], Any] | None:
    """One hook calling each given hook in turn (sync or async ones); ``None`` if none given."""
    present = [h for h in hooks if h is not None]
    if len(present) <= 1:
        return present[0] if present else None

    async def chained(value: T) -> None:
        for hook in present:
            outcome = hook(value)
            if inspect.isawaitable(outcome):
                await outcome

    return chained


def hooks_for(
    stream: Callable[[Event], None],
    key: BatchKey | None = None,
    request: OptimizationRequest | None = None,
) -> tuple[Callable[[TaskResult], None], Callable[[RetryNotice], None]]:
    """``(on_progress, on_retry)`` hooks for one wait that emit its progress events.

    ``stream`` is an :class:`EventStream` (or any function taking an event);
    ``request``, when known, gives the number of rounds. Pass the hooks to
    :meth:`AsyncSPOClient.wait_for_result` (progress polling then looks at every
    round), and emit :func:`final_event` when the wait ends.
    """
    total = request.max_rounds if request is not None else None
    previous: TaskResult | None = None

    def on_progress(result: TaskResult) -> None:
        nonlocal previous
        for event in events_between(previous, result, key=key, total=total):
            stream(event)
        previous = result

    def on_retry(notice: RetryNotice) -> None:
        stream(
            TaskRetrying(
                key=key,
                task_id=notice.task_id,
                operation=notice.operation,
                attempt=notice.attempt,
                wait=notice.wait,
                cause=notice.cause,
            )
        )

    return on_progress, on_retry
