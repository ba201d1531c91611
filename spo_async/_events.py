"""What happens to a task, as values: progress events on the way, and one outcome at the end.

One vocabulary serves single waits and batches alike. For one task the events
come in this order::

    TaskSubmitted?  TaskQueued?  RoundCompleted(1) ... RoundCompleted(k)  <one Outcome>

with :class:`TaskRetrying` anywhere before the end. The outcome is exactly one
of :class:`Succeeded`, :class:`Failed` (the task ended in ``fail``),
:class:`Errored` (the submit or the wait ended with an error, a timeout
included; ``task_id`` says whether a task exists) or :class:`OutcomeUnknown` (a
submit may have created a task whose id never arrived). A batch yields the
same outcome objects, and :class:`BatchProgress` carries its counters.

Every event is a frozen attrs value; task events carry the batch item's ``key``
(``None`` outside a batch) and the ``task_id`` once it is known.
:class:`~spo_async.EventStream` (in :mod:`spo_async._stream`) delivers them.

:class:`Reporter` turns what one wait sees (snapshots, retries) into events
for one consumer; :func:`outcome_of` names the end of a wait from its result or
error. The outcome is never derived from snapshots, because only the code that
ends the wait knows whether it ended with a result, a timeout or an error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import attrs

from ._errors import SubmitOutcomeUnknownError, TaskFailedError
from ._models import OptimizationRequest, Round, TaskResult
from ._polling import Retry
from ._state import TaskStatus

__all__ = [
    "AnyOutcome",
    "BatchKey",
    "BatchProgress",
    "Errored",
    "Event",
    "EventCallback",
    "Failed",
    "Outcome",
    "OutcomeUnknown",
    "Reporter",
    "RoundCompleted",
    "Succeeded",
    "TaskQueued",
    "TaskRetrying",
    "TaskSubmitted",
    "outcome_of",
]

#: How a batch item is named: the caller's own key, or one the batch derives.
BatchKey: TypeAlias = str | int


# -- on the way ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _TaskEvent:
    """Something happened to one task. ``key`` names the batch item, if any."""

    key: BatchKey | None = None
    task_id: str | None = None


@attrs.frozen(kw_only=True)
class TaskSubmitted(_TaskEvent):
    """The service accepted the submit: from now on the task exists and is billed.

    This is the moment to record ``task_id`` if the caller may be cancelled
    before the wait ends.
    """

    task_id: str


@attrs.frozen(kw_only=True)
class TaskQueued(_TaskEvent):
    """The service reports the task waiting in its queue. ``result`` is that snapshot."""

    task_id: str
    result: TaskResult = attrs.field(repr=False, eq=False)


@attrs.frozen(kw_only=True)
class RoundCompleted(_TaskEvent):
    """Round ``number`` of ``total`` finished (``total`` is ``None`` when unknown).

    ``success`` says whether this round's prompt beat the best so far;
    ``best_prompt`` is the best prompt after this round (SPO's rule: the most
    recent successful round's). ``result`` is the snapshot that showed the round.
    """

    task_id: str
    number: int
    total: int | None
    success: bool
    prompt: str
    best_prompt: str | None
    result: TaskResult = attrs.field(repr=False, eq=False)


@attrs.frozen(kw_only=True)
class TaskRetrying(_TaskEvent):
    """A submit or poll failed in a passing way and is tried again after ``wait`` seconds.

    ``attempt`` is the number of the attempt that failed; ``cause`` its error.
    """

    operation: str
    attempt: int
    wait: float
    cause: BaseException = attrs.field(eq=False)


@attrs.frozen(kw_only=True)
class BatchProgress:
    """A batch's counters.

    ``pending`` items have not started, ``running`` are being submitted or waited
    for, ``done`` have an outcome: ``succeeded + failed + errored + unknown``.
    ``requests_per_second`` is the client's recent HTTP request rate, when its
    limiter counts it.
    """

    total: int
    pending: int
    running: int
    succeeded: int = 0
    failed: int = 0
    errored: int = 0
    unknown: int = 0
    requests_per_second: float | None = None

    @property
    def done(self) -> int:
        """Items with an outcome."""
        return self.succeeded + self.failed + self.errored + self.unknown


# -- at the end ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Outcome:
    """How one task ended: the last event of a wait, and what a batch yields per item.

    In a batch, ``key`` and ``index`` (the item's position in the input) name
    the item and ``request`` is its request; outside a batch ``key`` and
    ``index`` are ``None``. ``from_journal`` is true when the outcome was read
    from the journal of an earlier run, without any request. ``ok`` is true
    only for :class:`Succeeded`.
    """

    key: BatchKey | None = None
    index: int | None = None
    request: OptimizationRequest | None = attrs.field(default=None, repr=False)
    task_id: str | None = None
    from_journal: bool = False

    @property
    def ok(self) -> bool:
        """Whether the task finished with a result."""
        return False


@attrs.frozen(kw_only=True)
class Succeeded(Outcome):
    """The task finished with a result."""

    task_id: str
    result: TaskResult = attrs.field(repr=False)

    @property
    def ok(self) -> bool:
        """Always true."""
        return True


@attrs.frozen(kw_only=True)
class Failed(Outcome):
    """The task ended in ``fail``; ``result.error`` holds the service's reason."""

    task_id: str
    result: TaskResult = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class Errored(Outcome):
    """The submit or the wait ended with ``error``; a wait's timeout is one such error.

    ``task_id`` is ``None`` when no task was created (the item can simply be run
    again) and set when a task exists: it may still be running (and billing),
    and a run with the same journal polls it instead of submitting again.
    """

    task_id: str | None = None
    error: BaseException = attrs.field(eq=False)


@attrs.frozen(kw_only=True)
class OutcomeUnknown(Outcome):
    """A submit may have created (and billed) a task, but its id never arrived.

    It was not resubmitted, since that could pay twice: look for the task in
    your 302.AI account, or run the batch again with ``resubmit_unknown=True``.
    """

    error: SubmitOutcomeUnknownError = attrs.field(eq=False)


#: An outcome as it is made: always one of the four kinds.
AnyOutcome: TypeAlias = Succeeded | Failed | Errored | OutcomeUnknown

#: Every event an :class:`~spo_async.EventStream` carries.
Event: TypeAlias = (
    TaskSubmitted
    | TaskQueued
    | RoundCompleted
    | TaskRetrying
    | Succeeded
    | Failed
    | Errored
    | OutcomeUnknown
    | BatchProgress
)

#: A consumer of events: a plain function, or an ``async def`` one.
EventCallback: TypeAlias = Callable[[Event], Any]


def outcome_of(
    *,
    key: BatchKey | None = None,
    index: int | None = None,
    request: OptimizationRequest | None = None,
    task_id: str | None = None,
    result: TaskResult | None = None,
    error: BaseException | None = None,
) -> AnyOutcome:
    """The outcome that ends a task's story: from its final snapshot, or from the error."""
    where: dict[str, Any] = {"key": key, "index": index, "request": request}
    if error is not None:
        if isinstance(error, SubmitOutcomeUnknownError):
            return OutcomeUnknown(**where, error=error)
        known: str | None = task_id if task_id is not None else getattr(error, "task_id", None)
        if isinstance(error, TaskFailedError):
            return Failed(**where, task_id=error.result.task_id, result=error.result)
        return Errored(**where, task_id=known, error=error)
    if result is None or not result.is_terminal:
        raise ValueError("outcome_of needs a terminal result or an error")
    cls = Succeeded if result.succeeded else Failed
    return cls(**where, task_id=result.task_id, result=result)


# -- from what a wait sees to events -------------------------------------------------------


def _best_prompt_up_to(rounds: Sequence[Round], number: int) -> str | None:
    for r in reversed(rounds):
        if r.number <= number and r.success:
            return r.prompt
    return None


class Reporter:
    """One consumer's view of one task: turns snapshots and retries into its events.

    ``emit`` must not block (an :meth:`EventStream.emit`); ``total`` is the
    number of rounds when the snapshots do not say. Each waiter of a shared
    poll has a reporter of its own, so what one consumer sees never depends on
    another's.
    """

    __slots__ = ("_emit", "_key", "_previous", "_total")

    def __init__(
        self, emit: Callable[[Event], None], *, key: BatchKey | None = None, total: int | None
    ) -> None:
        self._emit = emit
        self._key = key
        self._total = total
        self._previous: TaskResult | None = None

    def snapshot(self, current: TaskResult) -> None:
        """Emit what changed since the last snapshot: a newly queued task, each new round."""
        previous, key = self._previous, self._key
        self._previous = current
        task_id = current.task_id
        if current.status is TaskStatus.QUEUE and (
            previous is None or previous.status is not TaskStatus.QUEUE
        ):
            self._emit(TaskQueued(key=key, task_id=task_id, result=current))
        done = current.completed_rounds
        seen = len(previous.completed_rounds) if previous is not None else 0
        total = current.max_rounds if current.max_rounds is not None else self._total
        for r in done[seen:]:
            self._emit(
                RoundCompleted(
                    key=key,
                    task_id=task_id,
                    number=r.number,
                    total=total,
                    success=r.success,
                    prompt=r.prompt,
                    best_prompt=_best_prompt_up_to(done, r.number),
                    result=current,
                )
            )

    def retrying(self, retry: Retry) -> None:
        """Emit a :class:`TaskRetrying`."""
        self._emit(TaskRetrying(key=self._key, **retry._asdict()))
