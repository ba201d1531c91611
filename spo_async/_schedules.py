"""When to look at a task next: poll schedules as plain, pure objects.

A schedule maps what is known about a task (a :class:`PollState`) to the delay
before the next query. It never sleeps and never sees tenacity: the polling
layer adapts it into a tenacity wait strategy, caps it at the caller's deadline,
and handles errors with its own backoff. Write your own by implementing
:class:`PollSchedule` (one method) or passing any ``Callable[[PollState], float]``;
either is asked for the delay before the first look too (``state.polls == 0``).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from typing import Literal, Protocol, runtime_checkable

import attrs

from ._models import TaskResult

__all__ = [
    "ExponentialSchedule",
    "FixedSchedule",
    "PollMode",
    "PollModeLike",
    "PollSchedule",
    "PollState",
    "ScheduleLike",
]


class PollMode(enum.StrEnum):
    """What the caller wants to see of a task, which decides how often to look."""

    #: Every round as it lands (the default when someone passed ``on_event``).
    PROGRESS = "progress"
    #: Only the final result: looks at middle rounds can be skipped (``poll_mode=``
    #: picks either for a call).
    COMPLETION = "completion"


#: What ``poll_mode=`` accepts: a :class:`PollMode` or its value as a plain string.
PollModeLike = PollMode | Literal["progress", "completion"]


@attrs.frozen(kw_only=True)
class PollState:
    """What a schedule knows when it picks the next delay (times: seconds since the wait began)."""

    task_id: str
    #: Successful queries so far in this wait.
    polls: int
    #: Seconds since the wait began.
    elapsed: float
    #: The last snapshot believed, or ``None`` before the first one.
    last: TaskResult | None
    #: Rounds the task will run, when known.
    max_rounds: int | None = None
    #: The model of the request, when known (round times depend on it).
    model: str | None = None
    #: When each completed round was first seen: ``round_seen_at[i]`` is round ``i + 1``'s.
    round_seen_at: tuple[float, ...] = ()
    #: When the task was first seen out of ``queue`` (``None`` while queued or unknown).
    started_at: float | None = None
    mode: PollMode = PollMode.COMPLETION
    #: When this client submitted the task, on the same timeline (0 or less: the wait
    #: began after the submit); ``None`` for a task it did not submit. A learning
    #: schedule may then plan the first look instead of looking at once.
    submitted_at: float | None = None


@runtime_checkable
class PollSchedule(Protocol):
    """Anything that picks the delay before the next poll.

    A schedule may also define ``task_finished(state: PollState) -> None``: the
    polling layer then calls it once when a wait ends (``state.last`` is the
    final snapshot when the task finished), so that a learning schedule such as
    :class:`~spo_async.polling.AdaptiveSchedule` can learn from the last round and forget
    the task.

    And ``wake_on_news(state: PollState, wake: Callable[[], None]) -> bool``: the
    polling layer calls it before it sleeps the delay just given after a good
    look. A schedule that may learn, during that sleep, something that moves the
    task's next look (what other tasks showed) keeps ``wake``, returns ``True``,
    and calls ``wake()`` when that happens: the sleep ends, and ``next_delay`` is
    asked again with the same ``polls`` (nothing new seen) and the time now.
    """

    def next_delay(self, state: PollState) -> float:
        """Seconds to wait before the next query (the deadline caps it afterwards).

        It is asked once before the first query of a wait too, with
        ``state.polls == 0`` and ``state.last`` ``None``: return 0 to look at once.
        """
        ...


#: What the client accepts as a schedule: a :class:`PollSchedule` or a plain function.
ScheduleLike = PollSchedule | Callable[[PollState], float]


def _jittered(delay: float, jitter: float, rng: random.Random) -> float:
    if jitter <= 0 or delay <= 0:
        return delay
    return max(0.0, delay * (1.0 + rng.uniform(-jitter, jitter)))


def _check_jitter(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{attribute.name} must be in [0, 1), got {value!r}")


@attrs.frozen(kw_only=True)
class FixedSchedule:
    """Look every ``interval`` seconds, like 302.AI's web app (5 s).

    ``first`` is the delay before the very first look (0: at once).
    """

    interval: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    first: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    jitter: float = attrs.field(default=0.0, validator=_check_jitter)
    rng: random.Random = attrs.field(factory=random.Random, eq=False, repr=False)

    def next_delay(self, state: PollState) -> float:
        """The fixed interval, jittered."""
        if state.polls == 0:
            return self.first
        return _jittered(self.interval, self.jitter, self.rng)


@attrs.frozen(kw_only=True)
class ExponentialSchedule:
    """Look early, then less and less often: ``initial * factor**k``, capped at ``maximum``.

    A queued or early task is seen soon; a long one costs few queries. The delay
    starts again from ``initial`` whenever the task shows a change (a new round
    or status), since changes tend to come in steps. ``jitter`` spreads many
    tasks' polls apart (±``jitter`` of each delay). ``first`` is the delay before
    the very first look (0: at once).
    """

    initial: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    factor: float = attrs.field(default=1.5, validator=attrs.validators.ge(1))
    maximum: float = attrs.field(default=15.0, validator=attrs.validators.ge(0))
    first: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    jitter: float = attrs.field(default=0.1, validator=_check_jitter)
    rng: random.Random = attrs.field(factory=random.Random, eq=False, repr=False)

    def next_delay(self, state: PollState) -> float:
        """``initial * factor**k``, where ``k`` counts polls since the last change."""
        if state.polls == 0:
            return self.first
        last_change = max(
            (t for t in (*state.round_seen_at, state.started_at) if t is not None), default=0.0
        )
        quiet = state.elapsed - last_change
        # Walk the geometric series until it covers the quiet time so far.
        total = 0.0
        delay = self.initial
        # With a zero initial delay or a factor of 1 the series never grows: no walk.
        while 0 < delay < self.maximum and self.factor > 1 and total + delay <= quiet:
            total += delay
            delay *= self.factor
        return _jittered(min(delay, self.maximum), self.jitter, self.rng)


def as_schedule(schedule: ScheduleLike) -> PollSchedule:
    """Accept a :class:`PollSchedule` or a plain function of :class:`PollState`."""
    if isinstance(schedule, PollSchedule):
        return schedule
    if callable(schedule):
        return _FunctionSchedule(schedule)
    raise TypeError(f"expected a PollSchedule or a callable, got {type(schedule).__name__}")


@attrs.frozen
class _FunctionSchedule:
    function: Callable[[PollState], float]

    def next_delay(self, state: PollState) -> float:
        return self.function(state)
