"""What :class:`~spo_async.polling.AdaptiveSchedule` keeps: per model, per task, and ranges.

Why a module of its own. The schedule (``spo_async._adaptive``) decides when to
look; this is the record it decides from: per model (``_Model``: finished tasks,
what running tasks shared, the first wave's scout, searchers and sleepers, and the
wakes that reach them) and per task (``_Track``: each boundary bracketed between
the last look that did not show it and the first that did), with the small range
arithmetic both use. Nothing here plans a look.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable, Iterable

import attrs

from ._models import TaskResult
from ._schedules import PollState
from ._state import TaskStatus

log = logging.getLogger("spo_async")

_QUEUED = -1  # the boundary "submitted": a task before it has started
_INF = math.inf
#: The prior range's relative half-width around a single sample; divided by the count.
_SPREAD = 0.5
#: A task this many times slower than the model's median stays out of its prior range:
#: tasks differ by tens of percent, and one stalled task a hundred times slower would
#: stretch the window of every later task, which would then be seen rounds late. (A fast
#: one stays in: it makes looks come early, which costs looks, never a late sight.)
_OUTLIER = 10.0


def _span(samples: Iterable[float]) -> tuple[float, float] | None:
    """A range that should hold the next sample: the samples' span, widened.

    A uniform sample of ``n`` falls short of its range by about ``span / (n - 1)``
    at each end; with few samples the spread is unknown, so at least
    ``_SPREAD / n`` of the median is added.
    """
    xs = sorted(samples)
    n = len(xs)
    if n == 0:
        return None
    widen = _SPREAD * xs[n // 2] / n
    if n > 1:
        widen = max(widen, (xs[-1] - xs[0]) / (n - 1))
    return max(xs[0] - widen, 0.0), xs[-1] + widen


def _spread_of(bounds: list[tuple[float, float]]) -> tuple[float, float, float]:
    """The middle of bounded samples, and a range that should hold the next sample.

    The samples' own bounds, widened as :func:`_span` widens (at least ``_SPREAD / n``
    of the median): a few samples from tasks whose pace differs by tens of percent.
    """
    n = len(bounds)
    middle = sorted((a + z) / 2 for a, z in bounds)[n // 2]
    widen = _SPREAD * middle / n
    return middle, max(min(a for a, _ in bounds) - widen, 0.0), max(z for _, z in bounds) + widen


def _narrowed(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """The part of range ``a`` inside ``b``; all of ``a`` if they do not meet."""
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo <= hi else a


def _overlap(intervals: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """The range covered by the most intervals: robust to a few that miss the truth."""
    ends = sorted([(a, 0) for a, _ in intervals] + [(b, 1) for _, b in intervals])
    best = depth = 0
    lo = hi = 0.0
    for x, closing in ends:
        if not closing:
            depth += 1
            if depth > best:
                best, lo, hi = depth, x, _INF
        else:
            if depth == best and hi == _INF:
                hi = x
            depth -= 1
    return lo, hi


#: Round 1's share of a round, how sure that is, and a later round's slack around the pace.
_Shape = tuple[float, float, float]


class _Model:
    """What was learnt about one model."""

    __slots__ = (
        "firsts",
        "live",
        "live_firsts",
        "marks",
        "scout",
        "searchers",
        "slack",
        "sleepers",
        "tasks",
        "unsaved_firsts",
        "unsaved_tasks",
        "wakeable",
        "wakes",
    )

    def __init__(self, window: int) -> None:
        #: The last finished tasks: their rounds and their time from start to end. Kept
        #: whole, so that a better estimate of round 1's share reinterprets them all.
        self.tasks: collections.deque[tuple[int, float]] = collections.deque(maxlen=window)
        #: Bounds of round 1's share of a round, one pair per task that showed it.
        self.firsts: collections.deque[tuple[float, float]] = collections.deque(maxlen=window)
        #: How far single rounds ran from their task's pace, at the least (fractions).
        self.slack: collections.deque[float] = collections.deque(maxlen=2 * window)
        #: Running tasks whose own looks pinned their round length.
        self.live: dict[str, float] = {}
        #: Running tasks' bounds of round 1's share of a round (while none has finished).
        self.live_firsts: dict[str, tuple[float, float]] = {}
        #: Running tasks' times from their start to each boundary they showed (bounds).
        self.marks: dict[int, dict[str, tuple[float, float]]] = collections.defaultdict(dict)
        #: The task searching for the round length while nothing is known.
        self.scout: str | None = None
        #: The running tasks that search for round 1 beside the scout (progress mode).
        self.searchers: set[str] = set()
        #: The running tasks asleep until a searcher's mark (see ``AdaptiveSchedule``).
        self.sleepers: set[str] = set()
        #: Whether the polling layer kept a wake of a wait on this model (it can wake them).
        self.wakeable = False
        #: Waits asleep that asked to be woken when the others' news moves their next look.
        self.wakes: dict[str, list[Callable[[], None]]] = {}
        #: How many of the newest ``tasks`` and ``firsts`` the cache file lacks.
        self.unsaved_tasks = self.unsaved_firsts = 0

    def paces(self, first: float) -> list[float]:
        """The finished tasks' round lengths, given round 1's share of a round."""
        return [total / (n - 1 + first) for n, total in self.tasks]

    def prior(self, first: float) -> tuple[float, float] | None:
        """The range that should hold a new task's round length (stalled tasks left out)."""
        paces = sorted([*self.paces(first), *self.live.values()])
        if paces:
            slowest = _OUTLIER * paces[len(paces) // 2]
            paces = [pace for pace in paces if pace <= slowest]
        return _span(paces)

    def first_wave(self) -> bool:
        """Whether no task of the model has finished yet (nothing learnt to plan by)."""
        return not self.tasks

    def others_may_sleep(self) -> bool:
        """Whether the tasks of a first wave that do not search may sleep until a mark.

        Only if their waits can be woken, and while some task searches beside the scout:
        a scout alone is too thin a thread to hang a wave on (it may be slow, or its wait
        may end early).
        """
        if not (self.first_wave() and self.wakeable):
            return False
        return any(task_id != self.scout for task_id in self.searchers)

    def wake_others(self, task_id: str, *, sleepers_only: bool = False) -> None:
        """Wake every wait asleep on this model but ``task_id``'s: their next look moved.

        ``sleepers_only`` wakes only the tasks asleep until a mark (``sleepers``).
        """
        woken = [
            t for t in self.wakes if t != task_id and (not sleepers_only or t in self.sleepers)
        ]
        wakes = [wake for t in woken for wake in self.wakes.pop(t)]
        for wake in wakes:
            try:
                wake()
            except Exception:  # another loop's; the task that brought the news goes on
                log.exception("a poll loop's wake raised; its wait sleeps on")

    def drop(self, task_id: str) -> None:
        """Forget what a running task shared.

        The tasks of a first wave asleep on the search are woken when the scout leaves
        (one of them takes its search over) or the last task searching beside it does
        (they may no longer sleep on it).
        """
        self.live.pop(task_id, None)
        self.live_firsts.pop(task_id, None)
        self.wakes.pop(task_id, None)
        self.sleepers.discard(task_id)
        sleeping_on = self.others_may_sleep()
        self.searchers.discard(task_id)
        for marks in self.marks.values():
            marks.pop(task_id, None)
        was_scout = task_id == self.scout
        if was_scout:
            self.scout = None
        if was_scout or (sleeping_on and not self.others_may_sleep()):
            self.wake_others(task_id, sleepers_only=True)


class _Track:
    """What one wait has shown of its task: a bracket ``(lo, hi]`` per boundary seen."""

    __slots__ = (
        "due",
        "explore",
        "hi",
        "last",
        "lo",
        "phase",
        "polls",
        "searches",
        "seen",
        "stage",
        "taught",
        "to_end",
        "whole",
    )

    def __init__(
        self, now: float, polls: int, phase: float, explore: bool, *, searches: bool = False
    ) -> None:
        self.lo: dict[int, float] = {}
        self.hi: dict[int, float] = {}
        self.stage = _QUEUED
        self.last = now
        self.polls = polls
        self.phase = phase  # in [0, 1): spreads the search's looks apart across tasks
        self.explore = explore
        self.searches = searches  # searches for round 1 beside the scout (progress mode)
        self.due = now  # when the next look was planned
        self.taught = False  # whether its looks taught the queue time (to be saved)
        #: Whether its looks go back to the wait's first (not a track built again later):
        #: only then may the learnt queue time narrow its start (see ``_bracket``).
        self.whole = False
        self.seen: TaskResult | None = None  # the last snapshot taken in
        #: The look (its ``polls``) and round of the last short look at a window's end.
        self.to_end: tuple[int, int] | None = None

    def shares_clock(self, state: PollState) -> bool:
        """Whether ``state`` counts time as this track does: from the same submit."""
        return (
            self.whole
            and state.submitted_at is not None
            and (state.submitted_at == self.hi.get(_QUEUED, -_INF))
        )


def _in_track_time(state: PollState, track: _Track | None) -> PollState:
    """``state`` on the clock of the task's track, when it is another wait's look.

    Each wait counts ``elapsed`` from its own start, so a second wait of one task (a
    view of the client with other settings, or one taking over from a wait that
    left) would look like a new wait and throw the brackets away. When both know the
    submit, the submit is their common origin: one timeline.
    """
    if track is None or (state.polls >= track.polls and state.elapsed >= track.last):
        return state
    submitted = track.hi.get(_QUEUED, -_INF)
    if state.submitted_at is None or submitted == -_INF or not track.whole:
        return state
    shift = submitted - state.submitted_at
    return attrs.evolve(state, elapsed=state.elapsed + shift, submitted_at=submitted)


def _stage_of(state: PollState) -> int:
    if state.last is not None and state.last.status is TaskStatus.QUEUE:
        return _QUEUED
    if state.started_at is None and not state.round_seen_at:
        return _QUEUED
    return len(state.round_seen_at)
