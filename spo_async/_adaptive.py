"""Adaptive polling: look when a task has probably moved, judging by its rounds and others'.

Why. An SPO task reports its rounds one by one, the request says how many there
will be, and one task's rounds take about the same time (three LLM
calls in a row), while tasks differ from each other by tens of percent. A fixed
interval (302.AI's web app: 5 s) spends most of its requests on snapshots that
did not change; a blind backoff notices the end late; and both count in
seconds, so each suits one length of round only. Knowing when the next round,
or the end, is due, the client can look just then, at any length of round.

How. :class:`AdaptiveSchedule` is a :class:`~spo_async.polling.PollSchedule`:
pure, no clock of its own (it reads ``PollState.elapsed``), no I/O except an
optional small cache file. It does four things, all in units of the durations
it has seen, so that it behaves the same whether rounds last two seconds or two
minutes.

1. **It brackets each task's boundaries.** A task passes *boundaries*: ``0`` it
   started (left ``queue``), ``k`` round ``k`` ended; the last one is the end. A
   boundary lies between the last look that did not show it and the first that
   did. Round 1 only runs the prompt, so it lasts a *share* of a
   round (taken between 0.15 and 0.65 until measured: one stage of three);
   a task's later rounds take about the same time, its *pace*. Every pair
   of bracketed boundaries bounds the pace (:meth:`AdaptiveSchedule._own_range`),
   and so does a look that has not seen the next boundary yet.

2. **It learns across tasks, at once and across processes.** One instance serves
   every wait of a client. Per model it keeps the last ``window`` finished tasks
   (rounds and time from start to end, so that a better estimate of round 1's
   share reinterprets them all) and where their round 1 ended; a running task
   shares its pace as soon as its own looks bound it within a factor of two
   (the middle of the bounds), so the other running tasks
   of the model use it on their next look. The span of those paces (widened as
   for a uniform sample, more so when there are few) is the prior range of a new
   task's pace, narrowed by the task's own brackets as they come. Until the first
   task of a model ends, running tasks also share the times from their start to
   each boundary they saw precisely (*marks*; the first mark of a boundary may be as
   loose as the search brackets it) and round 1's share as they show it: a task's
   next boundary is where the others' same boundary fell, whatever round 1's share,
   so the fastest tasks of a first wave aim the looks of the slower ones. A first
   mark moves the others' plans, so in progress mode it reaches them at once: the
   schedule wakes their sleeps (:meth:`AdaptiveSchedule.wake_on_news`), and each is
   planned again from then. The time
   tasks spend in ``queue`` is the common part of their start's brackets (a
   late look widens a bracket, it does not move the queue time), taken as soon as
   a task's start is bracketed, and nothing while no task was ever seen queued.
   With ``persist`` the finished tasks
   are kept in a small file between processes.

3. **It picks each look from a window.** The target is the next round in
   *progress* mode (someone watches the rounds) and the end of the task in
   *completion* mode. Its window is where the pace bounds put it. Inside a
   window the looks step by ``2 * lag`` of a round (the mean delay left is then
   about ``lag``) in progress mode; in completion mode they start farther apart
   and come closer together as the window is used up, where the end grows likelier
   (each gap shorter than the last by the same amount, see
   ``spo_async._placement._completion_look``). A window wider than two steps is
   first *split*: a look in the middle of a middle round's window (completion, if
   no later than the next look through the end's window) or of the target's own (progress,
   while the round after it is uncertain) halves the pace range for
   the rest of the task. In progress mode on a model with finished tasks, where
   the pace is known as well as it will be, a look goes instead where it trades
   best between the delay it may let pass and what a miss teaches (the pace, for
   every later round): ``(worth / spread) ** (1/3)`` of the way in, ``spread``
   being the width of the task's pace range (see ``spo_async._placement``). A task past
   its window, or far slower than any seen, is looked at less and less often, in
   proportion to how late it is; inside a window, looks in progress mode keep at
   least one lag apart (a tenth of a step on a known model), but for one look at
   the window's end, not two in a row (a look there that misses shows a slower
   task, which moves the end a little later every time). While
   fewer than eight tasks of the model have finished, completion mode steps
   by 2.8 times as much: the windows are wide then, and the lag allowed a
   first task (0.15 round) is wider than a known model's (0.10).

4. **It finds the pace from scratch in a few looks.** On a model it has never
   seen, a task doubles the time it has spent in its current stage at each look,
   starting from ``floor`` (the one constant in seconds, 0.25 s) and stopping as
   soon as two boundaries bound the pace. Only one task of the model searches
   that way (the *scout*); the others look four times more rarely until a task has
   pinned the pace, then use it. In progress mode, where every round counts as
   much as the end, a quarter of the tasks (drawn at random) search for round 1
   beside the scout, and the first of them to mark it wakes the others. Once the
   polling layer has kept a wake of the model (it can wake them), while some task
   searches beside the scout and no task was ever seen queued (then starts, and so
   marks, may never be precise), the others sleep until then (at most 64 times
   their time in the stage, should no mark come), and look for round 2 (whose
   window rests on round 1's unknown share) half as often as the searchers until a
   task marks it. A task woken after part of its window went by unseen looks soon
   (its boundary may be behind it); the tasks asleep are woken too when the scout
   leaves (one of them takes its search over), when the last task searching beside
   it leaves, when a task is first seen queued and when the first task finishes.

A tenth of the tasks (chosen at random) aim their first look in each window a
little early: without that, tasks faster than any seen so far would only ever
be seen late, never teach the schedule that they exist, and the learnt range
would drift towards slow tasks. The first look at a task this client has just
submitted (``PollState.submitted_at``) on a known model is planned like the
others; on a model never seen it is the search's first gap (one to two
``floor``, drawn at random: a first wave then looks at many different times, so
its fastest tasks mark the boundaries for the others early, and the search's
looks of its tasks do not all coincide); any other first look is at once.

The caller's deadline caps every delay in the polling layer. Everything random
comes from ``rng``: pass a seeded :class:`random.Random` for reproducible delays.
"""

from __future__ import annotations

import collections
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from ._adaptive_state import (
    _INF,
    _QUEUED,
    _in_track_time,
    _Model,
    _narrowed,
    _overlap,
    _Shape,
    _span,
    _spread_of,
    _stage_of,
    _Track,
)
from ._placement import (
    _KNOWN_GAP,
    _LOOK_WORTH,
    _MIN_GAP,
    _completion_look,
    _known_look,
    _progress_look,
)
from ._schedule_cache import CacheFile, Knowledge, default_cache_path
from ._schedules import PollMode, PollState

__all__ = ["AdaptiveSchedule", "default_cache_path"]

#: Round 1 runs one LLM stage of a later round's three (it executes the prompt; nothing
#: is written or judged), so until measured its share of a later round is taken between
#: 0.15 and 0.65 (the middle and the half-width): stages of unequal length, not equal
#: thirds. Once measured, never surer than ±0.01.
_FIRST_SHARE, _FIRST_SHARE_SPREAD, _SHARE_FLOOR = 0.4, 0.25, 0.01
#: How far one later round of a task may run from the task's pace (a fraction of it).
_ROUND_SLACK = 0.01
#: A running task's own bounds on its round length, close enough to share their middle
#: (max / min): loose, since the prior widens every sample, and a first wave gains more
#: from samples early than from exact ones late; and close enough to learn from at its end.
_SHARE_RATIO, _LEARN_RATIO = 2.0, 1.25
#: Tasks that aim early, and by how much of the learnt range's low edge.
_EXPLORE, _EXPLORE_BY = 0.1, 0.2
#: The widest relative range kept beside a task's own bounds when it is outside the prior.
_WIDEST = 4.0
#: A task this much slower than the slowest seen counts as stalled: looks back off.
_STALLED = 1.5
#: How far the learnt range's slow end gives way to a task whose looks show it slower
#: than nearly all of the range: the range's ratio (max / min) to this power over the
#: number of tasks it was learnt from (a quarter for one task, almost nothing for
#: thirty); past the end, to this power whatever the number. See ``_pace``.
_SOFT_EDGE = 0.25
#: How much more rarely than the scout the other tasks of a model never seen look, in
#: completion mode (in progress mode each round counts as much as the end: all search).
_SPARSE = 4.0
#: In progress mode, when the waits of a first wave can be woken, the tasks that do not
#: search look for round 1 at this many times their time in the stage (not four times):
#: they sleep until a searcher marks it, and this only bounds the sleep (six doublings of
#: the search) should no mark ever come.
_ASLEEP = 64.0
#: A start-to-boundary time another running task showed, precise enough to share (max / min);
#: the first of a boundary is shared looser, as the search brackets it (a factor of two).
_MARK_RATIO, _FIRST_MARK_RATIO = 1.5, 2.5
#: In progress mode, the share of the tasks of a model never seen that search for round 1
#: beside the scout (drawn at random): a slow scout alone would find it late for the others.
_SCOUTS = 0.25
#: In progress mode, how soon a task woken in its window looks, in steps.
_SOON = 0.25
#: In a first wave, how much farther apart the looks for round 2 of a task that does not
#: search are, until a task marks round 2 (see ``_waits_for_round_two``).
_ROUND_TWO_SPARSE = 2.0
#: While a model has fewer finished tasks than this, completion mode steps by this many
#: times as much as ``completion_lag`` asks: the windows are wide then, and a look saved
#: is worth more than a little lag (a first task is allowed 0.15 round, 0.10 after).
_COLD_TASKS, _COLD_LAG = 8, 2.8
#: The cache file is written after a process's 1st, 2nd, 4th ... 16th lesson, then every 16th,
#: and whenever no task is left to wait for: a first run keeps what it learnt at once, and a
#: batch of thousands of tasks does not rewrite the file for each.
_SAVE_EVERY = 16
#: While a task is queued, its looks are at least this part of its time queued apart.
_QUEUED_STEP = 0.25


def _check_lag(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{attribute.name} must be in (0, 1], got {value!r}")


def _persist_converter(value: bool | str | os.PathLike[str] | None) -> Path | None:
    if value is None or value is False:
        return None
    if value is True:
        return default_cache_path()
    return Path(value)


@attrs.define(kw_only=True, eq=False)
class AdaptiveSchedule:
    """Look at a task when its next round (or its end) is due, learning round times as it goes.

    Share one instance among all the waits of a client (the client does, when it
    is its ``schedule``): that is how a task profits from the rounds of the
    others on the same model, even while they run. See the module docstring of
    ``spo_async._adaptive`` for the reasoning.

    Every setting is relative to the rounds the schedule sees, except ``floor``.
    ``persist`` keeps what was learnt in a small file between processes:
    ``True`` for ``schedule.json`` in the user's cache folder
    (``$XDG_CACHE_HOME/spo-async``, else ``~/.cache/spo-async``), a path for
    another file, ``None`` or ``False`` (the default) for none. It is read once,
    here, and added to as tasks teach something (after the 1st, 2nd, 4th, 8th
    and 16th, then every 16th), whenever no task is left to wait for, and on
    :meth:`save`. The file holds model names and durations only; processes
    sharing it merge their samples into it under a lock and replace it atomically
    (none sees it half written, none loses another's samples), and it is ignored
    when unreadable, foreign or too large.
    """

    #: How soon after the end of the task a look should see it, as a fraction of a round,
    #: in completion mode (nobody watches the rounds). A step is twice this; looks inside
    #: the end's window come closer together as it is used up (each gap shorter by 0.3 of
    #: a step, the first 2.3 steps long in a window a round wide); the mean delay comes
    #: out higher than this: about 0.08 round with the default, on a known model.
    completion_lag: float = attrs.field(default=0.05, validator=_check_lag)
    #: The same for every round, the last included, in progress mode. On a model never
    #: seen, looks inside a window step by twice this (a window narrower than a step is
    #: looked at 70 % into it); once tasks of the model have finished, a look is taken as
    #: worth 1.6 times this of a round of delay, and placed where that trade is best.
    #: Either way the mean delay comes out lower: about 0.1 round with the default.
    progress_lag: float = attrs.field(default=0.15, validator=_check_lag)
    #: Seconds: the first gap of the search on a model never seen. The one constant in
    #: seconds; the search doubles it, so it costs one look per doubling of the round.
    floor: float = attrs.field(default=0.25, validator=attrs.validators.gt(0))
    #: Delay before the first look. ``None``: at once, unless the task was just submitted
    #: (``PollState.submitted_at``): then when it may first move on a model already known,
    #: and one to two ``floor`` later (drawn at random) on a model never seen.
    first: float | None = attrs.field(default=None)
    #: Where to keep what was learnt between processes (see the class docstring).
    persist: Path | None = attrs.field(default=None, converter=_persist_converter)
    #: Tasks remembered per model; models and running tasks tracked at most.
    window: int = attrs.field(default=32, validator=attrs.validators.ge(2))
    max_models: int = attrs.field(default=256, validator=attrs.validators.ge(1))
    max_tasks: int = attrs.field(default=100_000, validator=attrs.validators.ge(1))
    rng: random.Random = attrs.field(factory=random.Random, repr=False)

    _models: collections.OrderedDict[str | None, _Model] = attrs.field(
        init=False, factory=collections.OrderedDict, repr=False
    )
    _tasks: collections.OrderedDict[str, _Track] = attrs.field(
        init=False, factory=collections.OrderedDict, repr=False
    )
    #: Bounds of the time the last tasks spent in ``queue`` (the service's, not a model's).
    _queue: collections.deque[tuple[float, float]] = attrs.field(init=False, repr=False)
    #: Whether a look ever showed a task in ``queue``: then no task sleeps on marks.
    _queued_seen: bool = attrs.field(init=False, default=False, repr=False)
    #: The cache file (``persist``), and how many of the newest queue samples it lacks.
    _file: CacheFile | None = attrs.field(init=False, default=None, repr=False)
    _unsaved_queue: int = attrs.field(init=False, default=0, repr=False)
    #: Tasks that taught something: the file is written after the 1st, 2nd, 4th, ... of them.
    _lessons: int = attrs.field(init=False, default=0, repr=False)

    @first.validator
    def _check_first(self, _attribute: attrs.Attribute[float | None], value: float | None) -> None:
        if value is not None and not value >= 0:
            raise ValueError(f"first must be None or >= 0, got {value!r}")

    @_queue.default
    def _default_queue(self) -> collections.deque[tuple[float, float]]:
        return collections.deque(maxlen=self.window)

    def __attrs_post_init__(self) -> None:
        if self.persist is not None:
            self._file = CacheFile(self.persist)
            self._load(self._file)

    # -- public ----------------------------------------------------------------------------

    def next_delay(self, state: PollState) -> float:
        """Seconds until the next look at ``state.task_id``; learns from ``state`` first.

        Asked again with the same ``polls`` (after :meth:`wake_on_news`'s wake), it
        plans again from what it knows now, without taking ``state`` as a new look.
        """
        model = self._model(state.model)
        if state.polls <= 0:
            return self._first_delay(state, model)
        known = self._tasks.get(state.task_id)
        state = _in_track_time(state, known)
        if (
            known is not None
            and (state.polls < known.polls or state.elapsed < known.last)
            and not known.shares_clock(state)
            and not (state.last is not None and state.last.is_terminal)
        ):
            # Another wait of the task, running beside the one this track follows, on a
            # clock it cannot read (one of them does not know the submit). Built again at
            # each of its looks, the track would lose its brackets, and both waits would
            # search from scratch, at a few of ``floor`` apart: the same pace as the other.
            return max(known.due - known.last, self.floor)
        if state.last is not None and state.last.is_terminal:
            self.task_finished(state)
            return 0.0
        known = self._tasks.get(state.task_id)
        # The same polls and the same snapshot as the last look: asked again, nothing seen
        # (another wait of the task, in step with this one, brings its own snapshot).
        replan = (
            known is not None
            and state.polls == known.polls
            and state.elapsed >= known.last
            and state.last == known.seen
        )
        track = known if replan and known is not None else self._observe(state)
        if track.stage == _QUEUED and not self._queued_seen:
            self._queued_seen = True  # marks may never be precise: the sleepers plan again
            model.wake_others(state.task_id, sleepers_only=True)
        if track.searches and state.mode is PollMode.PROGRESS:
            model.searchers.add(state.task_id)
        else:  # a track built again (another wait of the task) draws its part again
            model.searchers.discard(state.task_id)
        now = state.elapsed
        at = self._plan(state, track, model)
        if at is not None:
            model.sleepers.discard(state.task_id)
            track.due = max(at, now + 1e-3 * self.floor)
            return track.due - now
        searched = model.scout in self._tasks or not model.first_wave()
        slept = state.task_id in model.sleepers
        if replan and searched and not (slept and not self._may_sleep(model)):
            return max(track.due - now, 0.0)  # woken, and nothing bounds the pace still
        # (Woken because the scout left, or the task may sleep no longer: plan from now.)
        # Nothing bounds the round length yet: double the time spent in this stage.
        began = track.lo.get(track.stage, -_INF)
        if began == -_INF:
            began = track.hi.get(track.stage, now)
        if began == -_INF:  # queued since a submit this client did not see: from now on
            began = now
        wait = now - began
        if wait < self.floor:
            wait = self.floor * (1.0 + track.phase)
        # Shorter tasks may end before a rare look. In progress mode each round counts, so
        # only the search for round 1 is left to the scout: the first task to mark it
        # wakes the others (see wake_on_news).
        progress = state.mode is PollMode.PROGRESS
        sparse = not progress or track.stage < 1
        if (state.max_rounds or 0) >= 4 and sparse:
            if model.scout is None or model.scout not in self._tasks:
                model.scout = state.task_id
            scout = model.scout == state.task_id or (progress and track.searches)
            asleep = not scout and progress and self._may_sleep(model)
            (model.sleepers.add if asleep else model.sleepers.discard)(state.task_id)
            if not scout:  # look four times later than now, not twice; or until woken
                wait *= (_ASLEEP if asleep else _SPARSE) - 1.0
        if replan and track.due > now:
            wait = min(wait, track.due - now)  # a wake never puts a look off
        track.due = now + wait
        return wait

    def wake_on_news(self, state: PollState, wake: Callable[[], None]) -> bool:
        """Keep ``wake`` and call it when another task's looks move this one's next look.

        The polling layer calls this before it sleeps the delay :meth:`next_delay` just
        gave, and on ``wake`` asks :meth:`next_delay` again with the same ``polls``. Only
        the first wave of a model never seen in progress mode is woken: the first task
        to mark a round's end says where the others' is, so they need not search for it
        themselves. Returns whether ``wake`` was kept.
        """
        model = self._models.get(state.model)
        if model is None or state.mode is not PollMode.PROGRESS or not model.first_wave():
            return False
        if state.task_id not in self._tasks:
            return False
        kept = model.wakes.setdefault(state.task_id, [])
        if wake not in kept:  # one per wait: several waits may watch one task
            kept.append(wake)
        model.wakeable = True  # the waits of this model can be woken: some may sleep long
        return True

    def task_finished(self, state: PollState) -> None:
        """Learn from a wait's last snapshot and forget the task.

        The polling layer calls this when a wait ends; a terminal ``state.last``
        passed to :meth:`next_delay` has the same effect.
        """
        state = _in_track_time(state, self._tasks.get(state.task_id))
        track = self._tasks.pop(state.task_id, None)
        model = self._models.get(state.model)
        if model is not None:
            model.drop(state.task_id)
        last = state.last
        done = last is not None and last.is_terminal and not last.failed
        if track is not None and model is not None and done:
            first_wave = model.first_wave()
            taught = self._learn(track, model, _stage_of(state), state.elapsed)
            if first_wave and not model.first_wave():  # the first to finish: a pace to plan by
                model.wake_others(state.task_id, sleepers_only=True)
            if taught:
                self._lessons += 1
                if self._lessons % _SAVE_EVERY == 0 or self._lessons & (self._lessons - 1) == 0:
                    self.save()
        if not self._tasks:
            self.save()  # idle: what is left unwritten would wait for the next task

    def forget(self, task_id: str) -> None:
        """Drop what is tracked about one task (what it taught about its model stays)."""
        self._tasks.pop(task_id, None)
        for model in self._models.values():
            model.drop(task_id)
        if not self._tasks:
            self.save()

    def round_seconds(self, model: str | None) -> float | None:
        """The median learnt duration of a round after the first on ``model``, if any."""
        entry = self._models.get(model)
        if entry is None or not entry.tasks:
            return None
        ordered = sorted(entry.paces(self._shape(entry)[0]))
        return ordered[len(ordered) // 2]

    def queue_seconds(self) -> float | None:
        """The learnt time a task spends in ``queue`` (the middle of its range), if any."""
        known = self._queue_range()
        return None if known is None else (known[0] + known[1]) / 2

    def save(self) -> None:
        """Add what was learnt since the last write to ``persist`` (see the class docstring).

        The samples go into what the file holds now (see ``spo_async._schedule_cache``):
        processes sharing the file keep each other's. Should another process hold the
        file's lock, they wait for the next write.
        """
        if self._file is None:
            return
        fresh = Knowledge(queue=_newest(self._queue, self._unsaved_queue))
        for name, model in self._models.items():
            if name is not None and (model.unsaved_tasks or model.unsaved_firsts):
                learnt = fresh.model(name)
                learnt.tasks = _newest(model.tasks, model.unsaved_tasks)
                learnt.firsts = _newest(model.firsts, model.unsaved_firsts)
        if fresh and self._file.merge(fresh):
            self._unsaved_queue = 0
            for model in self._models.values():
                model.unsaved_tasks = model.unsaved_firsts = 0

    def _load(self, file: CacheFile) -> None:
        """Take in what other processes learnt (nothing if the file is not ours or not sane)."""
        known = file.read()
        self._queue.extend(known.queue)
        for name, learnt in known.models.items():
            model = self._model(name)
            model.tasks.extend(learnt.tasks)
            model.firsts.extend(learnt.firsts)

    # -- one task's timeline -----------------------------------------------------------------

    def _model(self, key: str | None) -> _Model:
        entry = self._models.get(key)
        if entry is None:
            entry = self._models[key] = _Model(self.window)
            if len(self._models) > self.max_models:
                self._models.popitem(last=False)
        else:
            self._models.move_to_end(key)
        return entry

    def _observe(self, state: PollState) -> _Track:
        """Fold one look into its task's brackets."""
        now = state.elapsed
        stage = _stage_of(state)
        track = self._tasks.get(state.task_id)
        if (
            track is not None
            and track.shares_clock(state)
            and state.polls < track.polls
            and (stage <= track.stage or now >= track.last)
        ):
            # Another wait of the task, on the same timeline (see _in_track_time): its
            # look adds to this track, unless it contradicts a later look of it.
            for j in range(track.stage + 1, stage + 1):
                track.lo[j], track.hi[j] = track.last, now
            track.stage = max(track.stage, stage)
            track.last, track.seen = max(track.last, now), state.last
            return track
        if track is None or state.polls < track.polls or now < track.last:
            # A new wait (or one not seen from its start): every boundary seen is in
            # (submit, now]; before the submit when this client did not submit it.
            rng = self.rng
            track = _Track(
                now,
                state.polls,
                rng.random(),
                rng.random() < _EXPLORE,
                # A task keeps its part in the search when another wait of it starts over.
                searches=rng.random() < _SCOUTS if track is None else track.searches,
            )
            base = state.submitted_at
            if base is None:
                # Not submitted by this client, as far as it says: a task that has not
                # started a round at the first look is taken as just submitted.
                base = 0.0 if state.polls == 1 and stage <= 0 else -_INF
            track.lo[_QUEUED] = track.hi[_QUEUED] = base
            for j in range(stage + 1):
                track.lo[j], track.hi[j] = base, now
            # (That submit is a guess: how long tasks queue says nothing of when this one
            # started. Only a track that saw the task from its real submit is whole.)
            track.whole = state.polls <= 1 and state.submitted_at is not None
            self._tasks[state.task_id] = track
            if len(self._tasks) > self.max_tasks:
                old, _ = self._tasks.popitem(last=False)
                self.forget(old)
        else:
            for j in range(track.stage + 1, stage + 1):
                track.lo[j], track.hi[j] = track.last, now
        if track.stage < 0 <= stage and self._learn_queue(track):
            track.taught = True  # now, not at the end: the first wave plans by it
        track.stage = max(track.stage, stage)
        track.last, track.polls, track.seen = now, state.polls, state.last
        return track

    def _learn_queue(self, track: _Track) -> bool:
        """Take the time the task spent in ``queue`` once its start is bracketed; True if kept.

        A task never seen queued started at its submit, which pins its start even when
        its first look came late. Only from a whole track: one built again later, or
        one whose submit is a guess, bounds nothing worth keeping.
        """
        submitted = track.hi[_QUEUED]
        if not track.whole or 0 not in track.hi or track.lo[0] == -_INF:
            return False
        # A loose bracket bounds the queue time too (see _queue_range); one that holds
        # the whole range known already adds nothing, and would push out tight ones.
        q_lo, q_hi = max(track.lo[0] - submitted, 0.0), track.hi[0] - submitted
        known = self._queue_range()
        if known is not None and q_lo <= known[0] <= known[1] <= q_hi:
            return False
        self._queue.append((q_lo, q_hi))
        self._unsaved_queue += 1
        return True

    def _shape(self, model: _Model) -> _Shape:
        """How a task of ``model`` is shaped, as learnt so far.

        Round 1's share of a round (the middle of the range most tasks agree on,
        and its half-width), and how far one later round may run from its task's
        pace (the 80th percentile of what finished tasks showed, at least 1 %).
        """
        share, spread = _FIRST_SHARE, _FIRST_SHARE_SPREAD
        firsts = [*model.firsts, *model.live_firsts.values()]
        if len(firsts) >= 2:
            lo, hi = _overlap(firsts)
            if hi < _INF:
                share, spread = (lo + hi) / 2, max((hi - lo) / 2, _SHARE_FLOOR)
        slack = _ROUND_SLACK
        if len(model.slack) >= 4:
            ordered = sorted(model.slack)
            slack = max(slack, ordered[int(0.8 * (len(ordered) - 1))])
        return share, spread, slack

    def _queue_range(self) -> tuple[float, float] | None:
        """Where the time in ``queue`` of a task should lie.

        Brackets that all overlap fit one queue time: their common part. A first look
        that came late (behind a burst of submits, say) gives a loose bracket; it
        still bounds the time, where its middle would be a wrong sample. Brackets that
        do not overlap show a queue that varies: the middles of the tighter half, widened.
        """
        if not self._queue:
            return None
        lo = max(a for a, _ in self._queue)
        hi = min(z for _, z in self._queue)
        if lo == 0.0:
            return 0.0, 0.0  # no task was ever seen queued: none waits long enough to matter
        if lo <= hi:
            return lo, hi
        widths = sorted(z - a for a, z in self._queue)
        tight = widths[len(widths) // 2]
        return _span((a + z) / 2 for a, z in self._queue if z - a <= tight)

    def _bracket(
        self, track: _Track, j: int, queue: tuple[float, float] | None
    ) -> tuple[float, float]:
        """Boundary ``j``'s bracket; the start's narrowed by the learnt queue time.

        Only on a track that saw the task from its wait's first look: one built again
        later (another wait of the task took over, say) has lost the looks that showed
        the task still queued, and this task may have queued far longer than others.
        """
        lo, hi = track.lo[j], track.hi[j]
        submitted = track.hi[_QUEUED]
        if j == 0 and queue is not None and submitted > -_INF and track.whole:
            a, z = max(lo, submitted + queue[0]), min(hi, submitted + queue[1])
            if a <= z:
                return a, z
        return lo, hi

    @staticmethod
    def _rounds_between(i: int, j: int, shape: _Shape) -> tuple[float, float]:
        """Bounds of ``(b_j - b_i) / L``: how many rounds lie between boundaries i < j."""
        share, share_spread, slack = shape
        later = j - max(i, 1)
        low, high = later * (1 - slack), later * (1 + slack)
        if i <= 0 < j:
            low, high = low + share - share_spread, high + share + share_spread
        return low, high

    def _own_range(
        self,
        track: _Track,
        now: float,
        shape: _Shape,
        queue: tuple[float, float] | None,
        *,
        done: bool = False,
        rounds_only: bool = False,
    ) -> tuple[float, float]:
        """Bounds of the task's round length from its own looks alone.

        Boundaries ``i < j`` bracketed in ``(lo_i, hi_i]`` and ``(lo_j, hi_j]`` lie
        ``(lo_j - hi_i, hi_j - lo_i)`` apart, which is between ``low * L`` and
        ``high * L``. With one pace per task and round 1's share known, these
        pairs give exactly the range of ``L`` that fits every look (eliminating
        the start time leaves only pairwise bounds). Looks that contradict each
        other (rounds that vary more than assumed) give the range between the
        bounds that clash. The next boundary, not seen yet, is after ``now``,
        which raises the lower bound while the rounds seen allow it.
        ``rounds_only`` leaves out the pairs with the start (and round 1's share).
        """
        points = [(j, *self._bracket(track, j, queue)) for j in sorted(track.hi) if j >= 0]
        # Pairs of rounds come first; pairs with the start go through round 1's share,
        # which may be wrong for a model seen little: they narrow, never contradict.
        ranges = []
        for from_start in (False, True):
            lo, hi = 0.0, _INF
            for i, lo_i, hi_i in points:
                for j, lo_j, hi_j in points:
                    if j <= i or j < 1 or (i <= 0) is not from_start:
                        continue
                    low, high = self._rounds_between(i, j, shape)
                    if lo_j > -_INF and hi_i < _INF:
                        lo = max(lo, (lo_j - hi_i) / high)
                    if lo_i > -_INF and low > 0:
                        hi = min(hi, (hi_j - lo_i) / low)
                if not done and (i >= 1) is not from_start:
                    # The next boundary is not there yet: the pace is at least this slow,
                    # unless that contradicts the rounds seen (the task is late, not slow).
                    slowest = (now - hi_i) / self._rounds_between(i, track.stage + 1, shape)[1]
                    if slowest <= hi or from_start:
                        lo = max(lo, slowest)
            ranges.append((hi, lo) if lo > hi else (lo, hi))
        (lo, hi), (start_lo, start_hi) = ranges
        if rounds_only:
            return lo, hi
        if max(lo, start_lo) <= min(hi, start_hi):
            return max(lo, start_lo), min(hi, start_hi)
        return (lo, hi) if hi < _INF else (start_lo, start_hi)

    def _window(
        self,
        track: _Track,
        target: int,
        now: float,
        pace: tuple[float, float],
        *,
        shape: _Shape,
        queue: tuple[float, float] | None,
    ) -> tuple[float, float]:
        """Where boundary ``target`` can be, from every boundary seen and the pace bounds."""
        lo_t, hi_t = now, _INF
        for i in track.hi:
            if i >= target:
                continue
            lo_i, hi_i = self._bracket(track, i, queue)
            if i == _QUEUED:  # (a track built again may have queued longer: see _bracket)
                q_lo, q_hi = queue if queue is not None and track.whole else (0.0, _INF)
                low, high = self._rounds_between(0, target, shape)
                d_lo, d_hi = q_lo + low * pace[0], q_hi + high * pace[1]
            else:
                low, high = self._rounds_between(i, target, shape)
                d_lo, d_hi = low * pace[0], high * pace[1]
            if lo_i > -_INF:
                lo_t = max(lo_t, lo_i + d_lo)
            if hi_i > -_INF:  # (a submit this client did not see: no bound)
                hi_t = min(hi_t, hi_i + d_hi)
        return lo_t, hi_t

    def _pace(
        self, own: tuple[float, float], prior: tuple[float, float] | None, *, learnt_from: int
    ) -> tuple[float, float]:
        """The task's round length: its own bounds within the model's prior range.

        The range's slow end is soft, the more so the fewer tasks it was learnt from
        (``learnt_from``): the next task lies past the slowest of n with a chance of
        about one in n + 1, and once its own looks have ruled out most of the range,
        that chance is no longer small. Held hard, the end draws each look closer to
        it, miss after miss (a window that shrinks puts its look nearer its end), and
        a task past it is then searched for from scratch (on a model known from one
        task, the tasks more than 1.5 times slower than it, one in twelve, took ten
        looks and saw their rounds a quarter of a round late). Instead the end stays a
        little ahead of the task's own lower bound. Past the end, the window reaches
        as far beyond that bound as for a range from one task, however many made it:
        each miss then moves it on by a factor, where a window reaching only a hair
        beyond would creep along (a range from thirty tasks gives way by 0.6 %).
        ``learnt_from`` counts the finished tasks and the running ones sharing a pace.
        """
        if prior is None:
            return own
        # (A range from tasks far apart in pace is widened by at most a factor of four.)
        ratio = min(prior[1] / prior[0], _WIDEST) if prior[0] > 0 else 2.0
        if own[0] > 0:
            # Inside the range its slow end gives way, less the more tasks made it; past
            # the end (a task slower than any seen) the window reaches ratio ** _SOFT_EDGE
            # beyond the task's own bound, so that each miss moves it on by that factor.
            soft = _SOFT_EDGE if own[0] > prior[1] else _SOFT_EDGE / max(learnt_from, 1)
            prior = (prior[0], max(prior[1], own[0] * ratio**soft))
        lo, hi = max(own[0], prior[0]), min(own[1], prior[1])
        if lo <= hi:
            return lo, hi
        # Faster than everything seen: keep the prior's relative width below its bounds.
        return max(own[0], own[1] / ratio), own[1]

    # -- planning ----------------------------------------------------------------------------

    def _first_delay(self, state: PollState, model: _Model) -> float:
        if self.first is not None:
            return self.first
        if state.submitted_at is None:
            return 0.0
        if model.prior(self._shape(model)[0]) is None:
            # A model never seen: the search's first gap, not at once. Where in it is drawn
            # at random, so that the tasks of a first wave look at different times.
            return self.floor * (1.0 + self.rng.random())
        track = _Track(state.elapsed, 0, 0.0, False)
        track.lo[_QUEUED] = track.hi[_QUEUED] = state.submitted_at
        track.whole = True
        at = self._plan(state, track, model, share=False)
        return 0.0 if at is None else max(at - state.elapsed, 0.0)

    def _plan(
        self, state: PollState, track: _Track, model: _Model, *, share: bool = True
    ) -> float | None:
        """When to look next, or ``None`` while nothing bounds the round length."""
        now = state.elapsed
        shape = self._shape(model)
        queue = self._queue_range()
        own = self._own_range(track, now, shape, queue)
        if share:
            self._share(state.task_id, track, model, now, shape=shape, queue=queue)
        prior = model.prior(shape[0])
        if prior is not None and track.explore:
            prior = (prior[0] * (1 - _EXPLORE_BY), prior[1])
        pace = self._pace(own, prior, learnt_from=len(model.tasks) + len(model.live))
        progress = state.mode is PollMode.PROGRESS
        marked = self._marked(track, model, shape, queue) if share and progress else None
        if (pace[1] == _INF or pace[1] <= 0) and marked is None:
            return None
        if track.stage == _QUEUED and queue is None and state.polls > 0:
            return None  # how long tasks queue is not known yet: search
        rounds = state.max_rounds
        completion = state.mode is PollMode.COMPLETION and rounds is not None
        if completion and track.stage < 1 and len(model.firsts) < 3:
            completion = False  # round 1's share is not known yet: look for round 1 too
        target = rounds if completion and rounds is not None else max(track.stage + 1, 1)
        last = rounds is None or target >= rounds
        if marked is not None and (pace[1] == _INF or pace[1] <= 0):
            lo_t, hi_t, round_time = marked  # no pace yet: where the others' marks say
        else:
            lo_t, hi_t = self._window(track, target, now, pace, shape=shape, queue=queue)
            round_time = (pace[0] + pace[1]) / 2
            if marked is not None and target == track.stage + 1:  # both, where they agree
                lo_t, hi_t = _narrowed((lo_t, hi_t), marked[:2])
        step = self._step(track, model, now, round_time, completion=completion)
        start = max(now, lo_t)
        if prior is not None and own[0] > _STALLED * prior[1]:
            # Far slower than any task seen: stalled. How late it is, by the slowest pace.
            hi_t = min(hi_t, self._window(track, target, now, prior, shape=shape, queue=queue)[1])
        if hi_t <= start:  # later than its window: back off, relative to how late
            return now + max(step / 2, 0.5 * (now - hi_t))
        width = hi_t - start
        if prior is None:  # a range from this task's looks alone: never past doubling
            began = track.lo.get(track.stage, -_INF)
            if began > -_INF:
                hi_t = min(hi_t, now + max(now - began, step))
                width = max(hi_t - start, 0.0)
        if completion:  # (target is the last round)
            at = start + _completion_look(width, step)
            split = (
                self._split(track, target, now, pace, shape=shape, queue=queue, by=at, step=step)
                if width > 2 * step
                else None
            )
            return at if split is None else split
        if track.last < lo_t < now:
            # Woken: part of the window went by while the task slept, unseen. Its boundary
            # may be behind it already: look soon (and if not, the look bounds it closely).
            return now + _SOON * step
        known = 0 < pace[0] <= pace[1] < _INF and hi_t < _INF
        if progress and known and not model.first_wave():
            return _known_look(
                now,
                (start, hi_t),
                (pace[1] - pace[0]) / round_time,  # how loosely the pace is known
                first=target <= 1,
                worth=_LOOK_WORTH * self.progress_lag,
                gap=_KNOWN_GAP * step,
            )
        nxt = None if last else self._window(track, target + 1, now, pace, shape=shape, queue=queue)
        at = self._stepped_look(track, (state.polls, target), now, (start, hi_t), step, nxt=nxt)
        if target == 2 and self._waits_for_round_two(state.task_id, track, model):
            at = now + _ROUND_TWO_SPARSE * (at - now)
        return at

    @staticmethod
    def _stepped_look(
        track: _Track,
        look: tuple[int, int],
        now: float,
        window: tuple[float, float],
        step: float,
        *,
        nxt: tuple[float, float] | None,
    ) -> float:
        """:func:`_progress_look` for ``look`` (this look's ``polls``, the round aimed at).

        A look short of a step, at the window's end, not twice in a row for one round:
        if the first missed, the window moved (see ``_progress_look``).
        """
        done = track.to_end
        again = done is not None and done[1] == look[1] and done[0] < look[0]
        at = _progress_look(now, window, step, nxt, to_end=not again)
        track.to_end = look if at - now < _MIN_GAP * step else None
        return at

    def _step(
        self, track: _Track, model: _Model, now: float, round_time: float, *, completion: bool
    ) -> float:
        """How far apart the looks inside a window go: twice the lag aimed at, in rounds."""
        step = 2.0 * (self.completion_lag if completion else self.progress_lag) * round_time
        if completion and len(model.tasks) < _COLD_TASKS:
            step *= _COLD_LAG
        submitted = track.hi[_QUEUED]
        if track.stage == _QUEUED and submitted > -_INF:
            # Queued: when it starts depends on the service's queue, not on the rounds the
            # model's tasks took (one very fast task makes those tiny). Looks a part of the
            # time queued apart: a task that waits long is looked at a few times, not many.
            step = max(step, _QUEUED_STEP * (now - submitted))
        return step

    def _waits_for_round_two(self, task_id: str, track: _Track, model: _Model) -> bool:
        """Whether this task of a first wave may look for round 2 more rarely, to be woken.

        Round 2's window rests on round 1's share of a round, unknown until some task
        shows round 2: every window is wide then. The tasks that search (the scout and
        those beside it) step through theirs; the others step half as often, if the
        polling layer wakes them when a task marks round 2 (then they look where it says).
        """
        if track.searches or model.scout == task_id or model.marks.get(2):
            return False
        return self._may_sleep(model)

    def _may_sleep(self, model: _Model) -> bool:
        """Whether a first wave's tasks that do not search may sleep on the searchers' marks.

        Not once a task was seen queued: starts are then bracketed as loosely as the
        search looks, so the searchers' rounds may never be precise enough to mark.
        """
        return model.others_may_sleep() and not self._queued_seen

    def _split(
        self,
        track: _Track,
        rounds: int,
        now: float,
        pace: tuple[float, float],
        *,
        shape: _Shape,
        queue: tuple[float, float] | None,
        by: float,
        step: float,
    ) -> float | None:
        """A look that splits the pace range through a middle round (completion mode).

        The middle of the last middle round's window wider than a step, if it comes no
        later than ``by``, the next look through the end's window (then it is worth
        more: it may see the end as well); else ``None``. (A split held back to the
        start of the end's window chose round 2 or round 3 on a knife's edge, by how
        wide the learnt range came out: a look more a task, or not.)
        """
        split = None
        for j in range(max(track.stage + 1, 1), rounds):
            a, z = self._window(track, j, now, pace, shape=shape, queue=queue)
            a = max(a, now)
            middle = (a + z) / 2
            if z - a > step and now < middle <= by:
                split = middle
        return split

    def _share(
        self,
        task_id: str,
        track: _Track,
        model: _Model,
        now: float,
        *,
        shape: _Shape,
        queue: tuple[float, float] | None,
    ) -> None:
        """Share what the task's looks showed with the other running tasks of its model.

        Its pace once the rounds seen pin it (not a late round: only boundaries seen),
        and the times from its start to each boundary it has shown precisely.
        """
        first_wave = model.first_wave()
        if first_wave and track.stage >= 2:
            share = self._share_bounds(track, model, track.stage, queue)
            if share is not None:
                model.live_firsts[task_id] = share
        seen = self._own_range(track, now, shape, queue, done=True)
        if seen[0] > 0 and seen[1] <= _SHARE_RATIO * seen[0]:
            model.live[task_id] = (seen[0] + seen[1]) / 2
        if 0 not in track.hi:
            return
        lo_0, hi_0 = self._bracket(track, 0, queue)
        for j in range(1, track.stage + 1):
            if lo_0 > -_INF and j in track.lo and track.lo[j] > hi_0:
                low, high = track.lo[j] - hi_0, track.hi[j] - lo_0
                first = not model.marks.get(j)
                if high <= (_FIRST_MARK_RATIO if first else _MARK_RATIO) * low:
                    model.marks[j][task_id] = (low, high)
                    if first and first_wave:
                        model.wake_others(task_id)  # their next look is where this says

    def _marked(
        self, track: _Track, model: _Model, shape: _Shape, queue: tuple[float, float] | None
    ) -> tuple[float, float, float] | None:
        """Where the task's next boundary is by the marks other running tasks shared.

        Only while no task of the model has finished (then the paces learnt say more):
        the first wave of a model never seen. A task's time from its start to boundary
        ``k`` is ``(k - 1 + share) * pace``: the same boundary of the others says where
        this one is without knowing round 1's share, and as soon as the fastest task
        shows it. Returns the window and a round length to step by, or ``None``.
        """
        target = max(track.stage + 1, 1)
        marks = model.marks.get(target)
        if model.tasks or not marks or 0 not in track.hi:
            return None
        lo_0, hi_0 = self._bracket(track, 0, queue)
        if lo_0 == -_INF:
            return None
        middle, low, high = _spread_of(list(marks.values()))
        return lo_0 + low, hi_0 + high, middle / (target - 1 + shape[0])

    # -- learning ----------------------------------------------------------------------------

    def _learn(self, track: _Track, model: _Model, stage: int, now: float) -> bool:
        """Take a finished task's processing time, round-1 share and queue time; True if any.

        The rounds not seen before ``now``, the end's look, ended since the last look.
        """
        for j in range(track.stage + 1, stage + 1):
            track.lo[j], track.hi[j] = track.last, now
        track.stage = stage
        # The queue first (learnt when the start was bracketed, or now if it was not).
        learnt = self._learn_queue(track) or track.taught
        shape = self._shape(model)
        queue = self._queue_range()
        rounds = stage - 1 + shape[0]  # the task's length in rounds, from its start
        lo_0, hi_0 = self._bracket(track, 0, queue) if 0 in track.hi else (-_INF, _INF)
        lo_n, hi_n = self._bracket(track, stage, queue)
        total = None
        prior = model.prior(shape[0])
        # A loose bracket is a poor sample, but better than none for a model never seen.
        ratio = _LEARN_RATIO if prior is not None else _INF
        if lo_0 > -_INF and hi_n - lo_0 <= ratio * (lo_n - hi_0):
            total = (lo_n + hi_n - lo_0 - hi_0) / 2
        else:
            lo, hi = self._own_range(track, track.last, shape, queue, done=True)
            if lo > 0 and hi <= ratio * lo:
                total = (lo + hi) / 2 * rounds
            elif prior is not None and 0 < hi <= prior[0] * 1.05:
                total = hi * rounds  # faster than anything seen: it was over at the first look
        learnt = total is not None and stage >= 1 and total > 0
        if total is not None and learnt:
            model.tasks.append((stage, total))
            model.unsaved_tasks += 1
            self._learn_slack(track, model, stage, total / rounds)
        return self._learn_share(track, model, stage, queue) or learnt

    @staticmethod
    def _learn_slack(track: _Track, model: _Model, stage: int, pace: float) -> None:
        """How far each later round ran from the pace, at the least its brackets allow."""
        for k in range(1, stage):
            lo_a, hi_a = track.lo.get(k, -_INF), track.hi.get(k, _INF)
            lo_b, hi_b = track.lo.get(k + 1, -_INF), track.hi.get(k + 1, _INF)
            if lo_a > -_INF and hi_a - lo_a + hi_b - lo_b <= 0.2 * pace:
                shortest, longest = (lo_b - hi_a) / pace, (hi_b - lo_a) / pace
                model.slack.append(max(shortest - 1.0, 1.0 - longest, 0.0))

    def _learn_share(
        self, track: _Track, model: _Model, stage: int, queue: tuple[float, float] | None
    ) -> bool:
        """Keep round 1's share of a round as a finished task showed it; True if kept."""
        bounds = self._share_bounds(track, model, stage, queue)
        if bounds is not None:
            model.firsts.append(bounds)
            model.unsaved_firsts += 1
        return bounds is not None

    def _share_bounds(
        self, track: _Track, model: _Model, stage: int, queue: tuple[float, float] | None
    ) -> tuple[float, float] | None:
        """Bounds of round 1's share of a round, from the boundaries up to ``stage``.

        Round 1 against the pace of the later rounds bounds it; so does each
        middle boundary ``k``, which lies ``r = (share + k - 1) / (share + n - 1)``
        of the way from the start to boundary ``n`` whatever the task's pace.
        ``None`` while what was seen leaves it loose.
        """
        lo_0, hi_0 = self._bracket(track, 0, queue) if 0 in track.hi else (-_INF, _INF)
        lo_n, hi_n = self._bracket(track, stage, queue)
        if lo_0 == -_INF or stage < 2 or lo_n <= hi_0:
            return None
        low, high = 0.0, _INF
        # Round 1 against the pace its later rounds showed, whatever share was assumed.
        shape = self._shape(model)
        pace = self._own_range(track, track.last, shape, queue, done=True, rounds_only=True)
        lo_1, hi_1 = self._bracket(track, 1, queue)
        if pace[0] > 0 and pace[1] < _INF and lo_1 > -_INF:
            low, high = max(lo_1 - hi_0, 0.0) / pace[1], (hi_1 - lo_0) / pace[0]
        for k in range(1, stage):
            lo_k, hi_k = self._bracket(track, k, queue)
            if lo_k == -_INF:
                continue
            r_lo = max(lo_k - hi_0, 0.0) / (hi_n - lo_0)
            r_hi = min((hi_k - lo_0) / (lo_n - hi_0), 0.999)
            low = max(low, (r_lo * (stage - 1) - (k - 1)) / (1 - r_lo))
            high = min(high, (r_hi * (stage - 1) - (k - 1)) / (1 - r_hi))
        if low <= high and high - low < 0.6:
            return low, high
        return None


def _newest(samples: collections.deque[Any], count: int) -> list[Any]:
    """The last ``count`` of ``samples`` (all of them if fewer are left)."""
    return list(samples)[max(len(samples) - count, 0) :] if count > 0 else []
