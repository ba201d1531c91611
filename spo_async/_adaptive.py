"""Adaptive polling: look when the task has probably moved, using what earlier tasks taught.

Why. An SPO task reports its rounds one by one, the request says how many there
will be, and rounds on one model take similar times (spec §6.3: three LLM calls
in a row, tens of seconds). A fixed interval (302.AI's web app: 5 s) spends most
of its requests on snapshots that did not change; a blind exponential backoff
either looks too often early on or notices the end late. Knowing when the next
round is due, the client can look just after it instead.

How. :class:`AdaptiveSchedule` is a :class:`~spo_async.PollSchedule`: pure, no
I/O, no clock of its own (it reads ``PollState.elapsed``), no tenacity. It does
three things.

1. **It tracks each task's timeline.** A task moves through *stages*: ``-1``
   queued, ``0`` started, ``k`` = ``k`` rounds done. A round is *seen* at the
   first poll that lists it, which is after it finished: the poll before, which
   did not list it, bounds the true finish time from below. So each stage's
   finish time is kept as a belief (mean and spread, a normal distribution):
   the prediction from the previous stage, cut to the bracket ``(previous
   poll, this poll]`` where it was observed (a truncated normal). Every look
   that does not show the next stage also says something: the next finish
   time is later than now, which (the two being jointly normal) moves the
   current one later too. The observation lag is thus accounted for, and a
   task seen late (or at a poll long after the previous one) is not mistaken
   for a slow one.

2. **It learns across tasks.** One instance serves every wait of a client, so
   it keeps, per model, the durations of round 1 (which only runs the prompt,
   one stage of three, spec §6.2) and of later rounds, and one estimate of the
   time spent in ``queue`` (the service's, not a model's). Each is the median
   of the last ``window`` samples, with a robust spread (MAD): a stalled round
   or a glitch moves neither. A sample is the time between two stages'
   beliefs, taken only when the earlier one was sharp. That choice depends on
   the earlier stage's looks, never on how long the new rounds took, so slow
   and fast rounds are sampled alike (gating on the later stage's bracket
   would keep mostly slow ones: a bracket is tight after a look that came too
   early). A loose later bracket leaves a sample close to its prediction:
   the expectation step of EM, which converges instead of drifting. Each task
   counts each interval once (the track remembers its last stage) and is
   forgotten when its wait ends (a terminal ``state.last``, or
   :meth:`AdaptiveSchedule.task_finished`) or when ``max_tasks`` newer ones
   push it out. Within a task its own rounds refine the model's figure.

3. **It picks the next look from the predicted time of a target stage**, with
   one rule: look when the expected lag, had the stage been reached by then,
   equals a budget (``E[(t - T)+ | T > now] = budget``). A sharp prediction
   gets one look just after it; a loose one a first look early enough to keep
   the budget, then (after a look that came too early) looks closer and
   closer as the stage grows likely. No look is spent where the stage is
   unlikely, and none closer than ``step`` of a round to the previous one.

   - *progress* mode (an ``on_progress`` callback or events): the target is
     the next round, with a budget of ``progress_lag`` of a round.
   - *completion* mode (only the result matters): the target is the last
     round, the end of the task, with ``completion_lag``. Middle rounds are
     not looked for; the looks that happen on the way narrow the prediction.
     Progress mode treats the last round the same way, since that is when the
     caller's ``await`` returns.

   With nothing known about a stage it must predict (a model never seen, the
   first task of a client), it hands over to ``fallback``, a capped, jittered
   exponential schedule, until the task's own rounds teach it enough. A task
   that runs far later than predicted is looked at less and less often (the
   gap grows with the delay, up to ``max_delay``), never in a burst.

Asked for the delay before the first look at a task (``polls == 0``), the
schedule answers ``first`` (default 0: look at once). The service may well
answer ``queue`` then, but a cheap early look anchors the timeline. The
caller's deadline caps every delay in the polling layer, so no look is planned
past it.

Everything random (a small jitter that keeps many tasks from polling in step)
comes from ``rng``: pass a seeded :class:`random.Random` for reproducible delays.
"""

from __future__ import annotations

import collections
import math
import random

import attrs

from ._schedules import ExponentialSchedule, PollMode, PollSchedule, PollState
from ._stats import MEDIAN_SE, Estimate, look_after, truncate_normal

__all__ = ["AdaptiveSchedule"]

_QUEUED = -1  # the stage of a task not started yet
_INF = math.inf
#: Round 1 is measured only when a look falls between the start and its end, which is
#: rare once later rounds are known; until this many such samples exist it is taken
#: as SPO's share of a later round instead.
_TRUSTED = 3


class _Model:
    """What was learnt about one model: the durations of round 1 and of later rounds."""

    __slots__ = ("first", "later")

    def __init__(self, size: int, floor: float) -> None:
        self.first = Estimate(size, floor)
        self.later = Estimate(size, floor)


class _Track:
    """What one wait has shown of its task: the belief about the latest stage's finish time."""

    __slots__ = ("last", "mean", "misses", "own_n", "own_sum", "polls", "sd", "seen", "stage")

    def __init__(self, polls: int, last: float, stage: int) -> None:
        self.polls = polls
        #: Time of the latest look: the lower bound of the next stage's finish time.
        self.last = last
        #: The latest stage seen, when it was first seen, and the belief about when it
        #: was reached (mean and spread).
        self.stage = stage
        self.seen = last
        self.mean = last
        self.sd = 0.0
        #: Looks in a row that saw nothing new.
        self.misses = 0
        #: The task's own later rounds: their number and total duration.
        self.own_n = 0
        self.own_sum = 0.0


#: A stage's expected duration: (mean, spread of one draw, standard error of the mean).
_Duration = tuple[float, float, float]


class _Rates:
    """The expected durations of a task's stages, worked out once per look.

    Each is ``(mean, spread of one draw, standard error of the mean)`` or ``None``
    when unknown: ``queue`` (to the start), ``first`` (round 1), ``later`` (each
    round after it).
    """

    __slots__ = ("first", "later", "queue")

    def __init__(self, queue: _Duration | None, first: _Duration | None, later: _Duration | None):
        self.queue = queue
        self.first = first
        self.later = later

    def of(self, stage: int) -> _Duration | None:
        """The duration that ends at ``stage``."""
        if stage <= 0:
            return self.queue
        return self.first if stage == 1 else self.later

    def span(self, start: int, stop: int) -> tuple[float, float] | None:
        """Mean and spread of the time from reaching stage ``start - 1`` to reaching ``stop``."""
        mean = var = error = 0.0
        for part, count in (
            (self.queue, start <= 0 <= stop),
            (self.first, start <= 1 <= stop),
            (self.later, max(0, stop - max(start, 2) + 1)),
        ):
            if count:
                if part is None:
                    return None
                mean += count * part[0]
                var += count * part[1] * part[1]
                error += count * part[2]
        # The error of a learnt mean repeats in every stage it predicts: errors add up.
        return mean, math.sqrt(var + error * error)


def _check_fraction(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{attribute.name} must be in (0, 1), got {value!r}")


def _check_jitter(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{attribute.name} must be in [0, 1), got {value!r}")


@attrs.define(kw_only=True, eq=False)
class AdaptiveSchedule:
    """Look at a task when its next round (or its end) is due, learning round times as it goes.

    Share one instance among all the waits of a client (the client does, when it
    is its ``schedule``): that is how a new task profits from the rounds of
    earlier ones on the same model. See the module docstring for the reasoning.

    Times are in seconds, learnt from the tasks themselves; the fractions below
    are of a round. ``fallback`` (by default ``ExponentialSchedule()``: 1 s times
    1.5 up to 15 s, ±10 % jitter) is used while nothing is known.
    """

    #: The lag allowed at a middle round in progress mode, as a fraction of a round: a
    #: look goes where a round that is in by then waited that long on average.
    progress_lag: float = attrs.field(default=0.3, validator=attrs.validators.gt(0))
    #: The same for the end of the task (completion mode, and the last round of any
    #: mode): what the caller's ``await`` waits after the task ends, on average.
    completion_lag: float = attrs.field(default=0.015, validator=attrs.validators.gt(0))
    #: The smallest gap between two looks, as a fraction of a round: how gently the
    #: schedule backs off after looking too early.
    step: float = attrs.field(default=0.1, validator=attrs.validators.gt(0))
    #: Round 1 runs one LLM stage of three (spec §6.2): its share of a later round,
    #: assumed until round 1 itself has been measured.
    first_round_fraction: float = attrs.field(default=1 / 3, validator=_check_fraction)
    #: Relative spread of a duration assumed while fewer than three samples exist.
    default_spread: float = attrs.field(default=0.3, validator=attrs.validators.gt(0))
    #: The smallest relative spread ever assumed for a duration.
    min_spread: float = attrs.field(default=0.1, validator=attrs.validators.ge(0))
    #: How many tasks' worth of evidence the model's estimate counts as against a
    #: task's own rounds (a task's own rounds weigh more as they accumulate).
    prior_weight: float = attrs.field(default=4.0, validator=attrs.validators.gt(0))
    #: A span is learnt only when the spread of its start is at most this fraction
    #: of its length.
    learn_gate: float = attrs.field(default=0.25, validator=attrs.validators.gt(0))
    #: Delay before a look at a task not looked at yet.
    first: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    #: Bounds of every delay, in seconds.
    min_delay: float = attrs.field(default=0.05, validator=attrs.validators.ge(0))
    max_delay: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    #: Relative jitter of each delay, so that many tasks do not poll in step.
    jitter: float = attrs.field(default=0.05, validator=_check_jitter)
    #: Samples kept per estimate; models and tasks remembered at most.
    window: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    max_models: int = attrs.field(default=256, validator=attrs.validators.ge(1))
    max_tasks: int = attrs.field(default=100_000, validator=attrs.validators.ge(1))
    rng: random.Random = attrs.field(factory=random.Random, repr=False)
    fallback: PollSchedule = attrs.field()

    _models: collections.OrderedDict[str | None, _Model] = attrs.field(
        init=False, factory=collections.OrderedDict, repr=False
    )
    _tasks: collections.OrderedDict[str, _Track] = attrs.field(
        init=False, factory=collections.OrderedDict, repr=False
    )
    _queue: Estimate = attrs.field(init=False, repr=False)

    @fallback.default
    def _default_fallback(self) -> PollSchedule:
        return ExponentialSchedule(rng=self.rng)

    @_queue.default
    def _default_queue(self) -> Estimate:
        return Estimate(self.window, self.min_spread)

    # -- public --------------------------------------------------------------------------

    def next_delay(self, state: PollState) -> float:
        """Seconds until the next look at ``state.task_id``; learns from ``state`` first."""
        if state.polls <= 0:
            return self.first
        track = self._observe(state)
        if track is None:  # the task has ended: nothing more to look at
            return 0.0
        delay = self._plan(state, track, self._models.get(state.model))
        if delay is None:
            return max(0.0, self.fallback.next_delay(state))
        if self.jitter:
            delay *= 1.0 + self.rng.uniform(-self.jitter, self.jitter)
        return min(max(delay, self.min_delay), self.max_delay)

    def task_finished(self, state: PollState) -> None:
        """Learn from a wait's last snapshot and forget the task.

        The polling layer calls this when a wait ends; a terminal ``state.last``
        passed to :meth:`next_delay` has the same effect. Without it, a task is
        forgotten only when ``max_tasks`` newer ones push it out.
        """
        if state.polls > 0 and state.last is not None and state.last.is_terminal:
            self._observe(state)
        else:
            self.forget(state.task_id)

    def forget(self, task_id: str) -> None:
        """Drop what is tracked about one task (what it taught about its model stays)."""
        self._tasks.pop(task_id, None)

    def round_seconds(self, model: str | None) -> float | None:
        """The learnt duration of a round after the first on ``model``, if any."""
        entry = self._models.get(model)
        summary = entry.later.summary() if entry is not None else None
        return summary[0] if summary is not None else None

    def queue_seconds(self) -> float | None:
        """The learnt time a task spends in ``queue``, if any."""
        summary = self._queue.summary()
        return summary[0] if summary is not None else None

    # -- the timeline ----------------------------------------------------------------------

    def _model(self, key: str | None) -> _Model:
        entry = self._models.get(key)
        if entry is None:
            entry = self._models[key] = _Model(self.window, self.min_spread)
            if len(self._models) > self.max_models:
                self._models.popitem(last=False)
        return entry

    def _observe(self, state: PollState) -> _Track | None:
        """Fold one poll into its task's track; ``None`` once the task has ended."""
        now = state.elapsed
        last = state.last
        done = last is not None and last.is_terminal
        if state.started_at is None and not state.round_seen_at:
            stage = _QUEUED
        else:
            stage = len(state.round_seen_at)
        tasks = self._tasks
        track = tasks.get(state.task_id)
        model = self._models.get(state.model)
        if track is None or state.polls <= track.polls or now < track.last:
            # A new wait (or one not seen from its start): open a track at this look.
            track = self._open(state, stage, self._rates(None, model))
            tasks[state.task_id] = track
            if len(tasks) > self.max_tasks:
                tasks.popitem(last=False)
        elif stage > track.stage and not (done and last is not None and last.failed):
            # A failed task ends at no particular round boundary: nothing to learn there.
            model = self._model(state.model)
            self._advance(track, stage, now, model)
        else:
            track.misses += 1
        track.polls = state.polls
        track.last = now
        if done:
            del tasks[state.task_id]
            return None
        if state.max_rounds is None or stage < state.max_rounds:
            self._not_yet(track, now, self._rates(track, model))
        return track

    def _open(self, state: PollState, stage: int, rates: _Rates) -> _Track:
        now = state.elapsed
        track = _Track(state.polls, now, stage)
        if stage == _QUEUED:
            # Queued at the first look: assume the wait began with the submit.
            track.mean = track.seen = 0.0
        else:
            # Seen already in this stage: it began at most one duration ago, uniformly.
            seen_at = state.round_seen_at[-1] if state.round_seen_at else state.started_at
            track.seen = now if seen_at is None else seen_at
            duration = rates.of(stage + 1)
            age = duration[0] if duration is not None else 0.0
            track.mean, track.sd = track.seen - age / 2.0, age / math.sqrt(12.0)
        return track

    def _advance(self, track: _Track, stage: int, now: float, model: _Model) -> None:
        """The task reached ``stage`` between the last look and this one: update and learn.

        The new stage's finish time is its prediction cut to the bracket
        ``(last look, now]``. What it says about the rounds in between is learnt
        only when the belief about the old stage was sharp: that depends on the
        old stage's own looks, never on how long the new rounds took, so the
        samples are not biased towards slow or fast rounds. A wide bracket
        leaves the new stage's estimate close to its prediction, which is the
        right sample to give (the expectation step of EM); a sharp one moves it.
        """
        rates = self._rates(track, model)
        rest = rates.span(track.stage + 1, stage)
        lo = track.last
        if rest is None:
            mean, sd = (lo + now) / 2.0, (now - lo) / math.sqrt(12.0)
        else:
            mean, sd = truncate_normal(track.mean + rest[0], math.hypot(track.sd, rest[1]), lo, now)
        span = mean - track.mean
        # With nothing known yet the new end is the bracket's middle: only a tight one will do.
        usable = rest is not None or now - lo <= self.learn_gate * 2.0 * span
        if usable and span > 0.0 and track.sd <= self.learn_gate * span:
            var = max(sd * sd - track.sd * track.sd, 0.0)
            self._learn(track, stage, span, var=var, m=model, rates=rates)
        track.stage, track.mean, track.sd, track.seen = stage, mean, sd, now
        track.misses = 0

    def _not_yet(self, track: _Track, now: float, rates: _Rates) -> None:
        """The next stage was not reached by ``now``: that moves the current stage's belief.

        The two finish times are jointly normal (the next is this one plus a
        duration), so cutting the next one at ``now`` shifts this one by the
        regression of one on the other. A task whose next round is overdue was
        probably at its current stage later than thought, not only slower.
        """
        following = rates.of(track.stage + 1)
        if following is None or track.sd <= 0.0:
            return
        var = track.sd * track.sd
        total = var + following[1] ** 2 + following[2] ** 2
        mean = track.mean + following[0]
        cut_mean, cut_sd = truncate_normal(mean, math.sqrt(total), now, _INF)
        gain = var / total
        track.mean = min(track.mean + gain * (cut_mean - mean), track.seen)
        track.sd = math.sqrt(max(var - gain * gain * (total - cut_sd * cut_sd), 0.0))

    def _learn(
        self, track: _Track, stage: int, span: float, *, var: float, m: _Model, rates: _Rates
    ) -> None:
        """Learn from ``span``, the time from the track's stage to ``stage``.

        A span may cover several kinds of stage at once (a look that skipped the
        start, or middle rounds). The queue is the service's, not the model's,
        and the most variable part: a span from the queue credits the queue
        with whatever the rounds in it are not expected to take. Round 1 is
        learnt only when seen on its own; within a span from the start it is
        taken as known (or, before anything is known, as SPO's share of a
        round) and the rest goes to the later rounds. ``var`` is the uncertainty
        (variance) of ``span`` left by the looks.
        """
        start = track.stage
        if start == _QUEUED:
            if stage == 0:
                self._queue.add(span, 1, var)
                return
            rounds = rates.span(1, stage)
            if rounds is not None:
                self._queue.add(span - rounds[0], 1, var)
                return
            queue = self._queue.summary()
            if queue is None:
                return
            span -= queue[0]
            start = 0
        count = stage - max(start, 1)  # later rounds inside the span
        if start == 0:
            if stage == 1:
                m.first.add(span, 1, var)
                return
            first = m.first.summary()
            if first is not None and first[2] >= _TRUSTED:
                per_round = (span - first[0]) / count
            else:
                per_round = span / (count + self.first_round_fraction)
        else:
            per_round = span / count
        if per_round > 0.0:
            m.later.add(per_round, count, var / (count * count))
            track.own_n += count
            track.own_sum += per_round * count

    # -- predictions -----------------------------------------------------------------------

    def _rates(self, track: _Track | None, model: _Model | None) -> _Rates:
        """The stage durations for a task: the model's, refined by the task's own rounds."""
        queue = _duration_of(self._queue.summary(), self.default_spread)
        first = model.first.summary() if model is not None else None
        later = self._later(track, model, first)
        if first is not None and (first[2] >= _TRUSTED or later is None):
            first_duration = _duration_of(first, self.default_spread)
        elif later is not None:
            f = self.first_round_fraction
            first_duration = (later[0] * f, later[1] * f, later[2] * f)
        else:
            first_duration = None
        return _Rates(queue, first_duration, later)

    def _later(
        self,
        track: _Track | None,
        model: _Model | None,
        first: tuple[float, float | None, int] | None,
    ) -> _Duration | None:
        """A later round's duration: the model's estimate refined by the task's own rounds."""
        own_n = track.own_n if track is not None else 0
        own_sum = track.own_sum if track is not None else 0.0
        summary = model.later.summary() if model is not None else None
        if summary is None:
            if own_n == 0:
                if first is None:
                    return None
                mean = first[0] / self.first_round_fraction
                spread = mean * self.default_spread
                return (mean, spread, spread)
            mean = own_sum / own_n
            spread = mean * self.default_spread
            return (mean, spread, MEDIAN_SE * spread / math.sqrt(own_n))
        median, learnt_spread, n = summary
        weight = min(float(n), self.prior_weight)
        mean = (weight * median + own_sum) / (weight + own_n)
        spread = mean * self.default_spread if learnt_spread is None else learnt_spread
        return (mean, spread, MEDIAN_SE * spread / math.sqrt(weight + own_n))

    def _plan(self, state: PollState, track: _Track, model: _Model | None) -> float | None:
        """The next delay, or ``None`` when too little is known (the fallback decides)."""
        rates = self._rates(track, model)
        if rates.later is None:
            return None
        now = state.elapsed
        stage = track.stage
        total = state.max_rounds
        round_time = rates.later[0]
        if total is not None and stage >= total:
            # Every round is in but the task has not ended yet: it should, any moment.
            return self.step * round_time * (1.0 + track.misses)
        completion = state.mode is PollMode.COMPLETION and total is not None
        target = total if completion else max(stage + 1, 1)
        assert target is not None  # noqa: S101 - total is set in completion mode
        at_end = target == total
        budget = (self.completion_lag if at_end else self.progress_lag) * round_time
        floor = self.step * round_time
        following = rates.of(stage + 1)
        if following is None:
            return None
        mean = track.mean + following[0]
        sd = math.sqrt(track.sd**2 + following[1] ** 2 + following[2] ** 2)
        if target > stage + 1:
            rest = rates.span(stage + 2, target)
            if rest is None:
                return None
            late = now - (mean + rest[0] + 2.0 * math.hypot(sd, rest[1]))
            # The next stage has not been reached by now: that cuts its prediction first.
            mean, sd = truncate_normal(mean, sd, now, _INF)
            mean, sd = mean + rest[0], math.hypot(sd, rest[1])
        else:
            late = now - (mean + 2.0 * sd)
        delay = look_after(mean, sd, now, budget) - now
        if late > 0.0:  # later than the spread explains: back off with the delay
            floor *= 1.0 + late / round_time
        return max(delay, floor)


def _duration_of(
    summary: tuple[float, float | None, int] | None, default: float
) -> _Duration | None:
    if summary is None:
        return None
    median, spread, n = summary
    if spread is None:
        spread = median * default
    return (median, spread, MEDIAN_SE * spread / math.sqrt(n))
