"""AdaptiveSchedule: behaviours checked on simulated task timelines, without a clock.

Nothing here sleeps, reads a clock or opens a socket. A task is a list of round
finish times; :func:`simulate` walks time the way the polling layer does (look,
build a ``PollState``, ask for the delay, move on) and counts the looks and the
lag between the task's end and the look that saw it. How many requests the
schedule spends on real HTTP is measured in ``bench/``, not here.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import itertools
import json
import os
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import pytest
from spo_async import Round, Sample, TaskResult, TaskStatus
from spo_async._placement import _CLOSER, _completion_look, _known_look
from spo_async._schedule_cache import (
    MAX_BYTES,
    SAMPLES,
    CacheFile,
    Knowledge,
    default_cache_path,
    parse,
    render,
)
from spo_async.polling import AdaptiveSchedule, FixedSchedule, PollMode, PollSchedule, PollState

MODEL = "claude-3-5-sonnet-20240620"


# -- a pure simulator ----------------------------------------------------------------------


@attrs.frozen
class FakeTask:
    """One task's true timeline, in seconds from its submit (and from the wait's start)."""

    queue_ends: float
    finishes: tuple[float, ...]  # round i + 1 finishes at finishes[i]
    fails: bool = False

    @property
    def ends(self) -> float:
        return self.finishes[-1]


def make_task(
    rng: random.Random,
    *,
    rounds: int = 4,
    round_time: float = 1.0,
    pace_jitter: float = 0.3,
    round_jitter: float = 0.0,
    queue: float = 0.0,
) -> FakeTask:
    """A task like the bench's: one pace per task, round 1 a third of a round."""
    pace = round_time * rng.uniform(1 - pace_jitter, 1 + pace_jitter)
    t = queue
    finishes = []
    for number in range(1, rounds + 1):
        share = 1 / 3 if number == 1 else 1.0
        t += pace * share * rng.uniform(1 - round_jitter, 1 + round_jitter)
        finishes.append(t)
    return FakeTask(queue, tuple(finishes))


_SAMPLE = (Sample("q", "a"),)


def snapshot(task: FakeTask, task_id: str, t: float) -> TaskResult:
    """What the service would answer at ``t``."""
    done = bisect.bisect_right(task.finishes, t)
    if t < task.queue_ends:
        status = TaskStatus.QUEUE
    elif t >= task.ends:
        status = TaskStatus.FAIL if task.fails else TaskStatus.SUCCESS
    else:
        status = TaskStatus.PROCESSING
    rounds = tuple(Round(n, f"prompt {n}", _SAMPLE, success=True) for n in range(1, done + 1))
    return TaskResult(task_id=task_id, status=status, raw_status=status.value, rounds=rounds)


@attrs.frozen
class Outcome:
    looks: tuple[float, ...]
    lag: float

    @property
    def polls(self) -> int:
        return len(self.looks)


def simulate(
    schedule: PollSchedule,
    task: FakeTask,
    *,
    task_id: str = "t",
    mode: PollMode = PollMode.COMPLETION,
    max_rounds: int | None = 4,
    model: str | None = MODEL,
    submitted_at: float | None = 0.0,
    limit: int = 1000,
) -> Outcome:
    """Poll ``task`` from its submit as the polling layer would, until it ends."""

    def state(t: float, polls: int, last: TaskResult | None) -> PollState:
        return PollState(
            task_id=task_id,
            polls=polls,
            elapsed=t,
            last=last,
            max_rounds=max_rounds,
            model=model,
            round_seen_at=tuple(seen),
            started_at=started_at,
            mode=mode,
            submitted_at=submitted_at,
        )

    seen: list[float] = []
    started_at: float | None = None
    looks: list[float] = []
    t = schedule.next_delay(state(0.0, 0, None))
    while len(looks) < limit:
        result = snapshot(task, task_id, t)
        looks.append(t)
        if started_at is None and result.status is not TaskStatus.QUEUE:
            started_at = t
        while len(seen) < len(result.completed_rounds):
            seen.append(t)
        if result.is_terminal:
            finished = getattr(schedule, "task_finished", None)
            if finished is not None:
                finished(state(t, len(looks), result))
            return Outcome(tuple(looks), t - task.ends)
        delay = schedule.next_delay(state(t, len(looks), result))
        assert delay >= 0
        t += delay
    raise AssertionError(f"no end after {limit} looks")


def run_many(
    schedule: PollSchedule,
    tasks: int,
    *,
    seed: int = 0,
    round_time: float = 1.0,
    mode: PollMode = PollMode.COMPLETION,
    pace_jitter: float = 0.3,
    round_jitter: float = 0.0,
    queue: float = 0.0,
    max_rounds: int | None = 4,
    model: str | None = MODEL,
) -> list[Outcome]:
    """Run ``tasks`` tasks one after the other through one schedule, so that it learns."""
    rng = random.Random(seed)
    out = []
    for i in range(tasks):
        task = make_task(
            rng,
            round_time=round_time,
            pace_jitter=pace_jitter,
            round_jitter=round_jitter,
            queue=queue,
        )
        out.append(
            simulate(
                schedule, task, task_id=f"task-{i}", mode=mode, max_rounds=max_rounds, model=model
            )
        )
    return out


def adaptive(seed: int = 1, **changes: object) -> AdaptiveSchedule:
    """An adaptive schedule with a seeded RNG."""
    return AdaptiveSchedule(rng=random.Random(seed), **changes)  # type: ignore[arg-type]


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values)


def processing(task_id: str = "t", rounds: int = 0) -> TaskResult:
    done = tuple(Round(n, "p", _SAMPLE, success=True) for n in range(1, rounds + 1))
    return TaskResult(
        task_id=task_id, status=TaskStatus.PROCESSING, raw_status="processing", rounds=done
    )


# -- the first look --------------------------------------------------------------------------


def test_first_look_on_a_model_never_seen_is_the_search_s_first_gap() -> None:
    """Knowing nothing, the first look is one to two floors after the submit, drawn at random."""
    schedule = adaptive()
    delays = [
        schedule.next_delay(
            PollState(
                task_id=f"t{i}", polls=0, elapsed=0.0, last=None, model=MODEL, submitted_at=0.0
            )
        )
        for i in range(20)
    ]
    assert all(0.25 <= d < 0.5 for d in delays)
    assert max(delays) - min(delays) > 0.15  # a first wave does not look all at once


def test_first_look_waits_for_the_first_round_once_the_model_is_known() -> None:
    """A task just submitted on a known model is first looked at when its first round may land."""
    schedule = adaptive()
    run_many(schedule, 10, mode=PollMode.PROGRESS)
    state = PollState(
        task_id="new",
        polls=0,
        elapsed=0.0,
        last=None,
        model=MODEL,
        submitted_at=0.0,
        max_rounds=4,
        mode=PollMode.PROGRESS,
    )
    first = schedule.next_delay(state)
    assert 0.2 < first < 0.45  # round 1: a third of a round of 1 s, ±30 %


def test_first_look_is_at_once_for_a_task_this_client_did_not_submit() -> None:
    """Without ``submitted_at`` the task may be far along already: look at once."""
    schedule = adaptive()
    run_many(schedule, 10)
    state = PollState(task_id="old", polls=0, elapsed=0.0, last=None, model=MODEL, max_rounds=4)
    assert schedule.next_delay(state) == 0.0


def test_first_setting_fixes_the_first_delay() -> None:
    """``first`` overrides the planned first look, whatever is known."""
    state = PollState(task_id="t", polls=0, elapsed=0.0, last=None, submitted_at=0.0)
    assert adaptive(first=0.7).next_delay(state) == 0.7


# -- finding the round length from scratch ---------------------------------------------------


def test_search_doubles_the_time_in_the_current_stage_from_the_floor() -> None:
    """On a model never seen, each look comes twice as long after the stage began as the last."""
    schedule = adaptive()
    delays, t = [], 0.0
    for polls in range(1, 6):
        state = PollState(
            task_id="t",
            polls=polls,
            elapsed=t,
            last=processing(),
            model="new",
            started_at=0.0,
            max_rounds=4,
            mode=PollMode.PROGRESS,
            submitted_at=0.0,
        )
        delay = schedule.next_delay(state)
        delays.append(delay)
        t += delay
    assert 0.25 <= delays[0] <= 0.5  # the floor, spread by up to 2x across tasks
    assert delays[1:] == pytest.approx([delays[0] * 2**k for k in range(4)])


def test_a_model_never_seen_is_found_in_a_few_looks_and_then_followed() -> None:
    """Cold, the first task costs a search; the rounds it saw aim the next task's looks."""
    schedule = adaptive()
    first, second = run_many(schedule, 2, round_time=8.0, mode=PollMode.PROGRESS)
    assert first.polls <= 16
    assert second.polls < first.polls
    assert schedule.round_seconds(MODEL) == pytest.approx(8.0, rel=0.35)


def searching(task_id: str, t: float, polls: int, mode: PollMode) -> PollState:
    """A look at a task of a model never seen that has not finished round 1 yet."""
    return PollState(
        task_id=task_id,
        polls=polls,
        elapsed=t,
        last=processing(task_id),
        model="new",
        started_at=0.0,
        max_rounds=4,
        mode=mode,
        submitted_at=0.0,
    )


@pytest.mark.parametrize("mode", list(PollMode))
def test_while_one_task_searches_the_others_of_its_model_look_rarely(mode: PollMode) -> None:
    """The first task searches by doubling; the others look four times as late."""
    schedule = adaptive()
    scout = schedule.next_delay(searching("scout", 1.0, 2, mode))
    other = schedule.next_delay(searching("other", 1.0, 2, mode))
    assert scout == pytest.approx(1.0)  # doubles the time since the start
    assert other == pytest.approx(3.0)


def test_in_a_first_wave_that_can_be_woken_the_tasks_that_do_not_search_sleep_on() -> None:
    """Once the polling layer keeps wakes, a task that does not search waits to be woken.

    It sleeps 64 times its time in the stage, not four (six doublings of the search:
    a bound should no mark ever come); the scout and the few that search beside it
    double, as before. (With nobody searching beside the scout, the others look four
    times more rarely than it, as the test above shows.)
    """
    schedule = adaptive()
    names = [f"t{i}" for i in range(8)]
    for name in ["scout", *names]:  # the first looks: some are drawn to search
        schedule.next_delay(searching(name, 0.5, 1, PollMode.PROGRESS))
    scout = searching("scout", 1.0, 2, PollMode.PROGRESS)
    assert schedule.next_delay(scout) == pytest.approx(1.0)
    assert schedule.wake_on_news(scout, lambda: None)
    delays = {
        round(schedule.next_delay(searching(name, 1.0, 2, PollMode.PROGRESS)), 6) for name in names
    }
    assert delays == {1.0, 63.0}  # a few search beside the scout; the rest sleep on


def test_when_the_scout_of_a_first_wave_goes_a_task_asleep_takes_its_search_over() -> None:
    """The tasks asleep on a scout that is cancelled are woken; one of them searches on."""
    schedule = adaptive()
    woken: list[str] = []
    names = ["scout", "a", "b", "c", "d"]
    for name in names:
        state = searching(name, 1.0, 2, PollMode.PROGRESS)
        schedule.next_delay(state)
        schedule.wake_on_news(state, functools.partial(woken.append, name))
    schedule.forget("scout")  # its wait was cancelled
    assert woken  # the tasks asleep on its search (those searching beside it are awake)
    assert set(woken) <= set(names[1:])
    # Asked again from the moment they were woken: the first doubles its time since the
    # start (the new scout); the others keep their plans or look sooner, never later.
    replans = [schedule.next_delay(searching(name, 2.0, 2, PollMode.PROGRESS)) for name in woken]
    assert replans[0] == pytest.approx(2.0)
    assert all(0.0 < delay <= 62.0 for delay in replans[1:])


def looked(task_id: str, t: float, polls: int, rounds_seen_at: tuple[float, ...]) -> PollState:
    """A look in progress mode at a task of the model "new", submitted and started at 0."""
    return PollState(
        task_id=task_id,
        polls=polls,
        elapsed=t,
        last=processing(task_id, len(rounds_seen_at)),
        model="new",
        round_seen_at=rounds_seen_at,
        started_at=0.0,
        max_rounds=4,
        mode=PollMode.PROGRESS,
        submitted_at=0.0,
    )


def test_in_a_first_wave_the_round_one_another_task_showed_aims_the_next_look() -> None:
    """A task that has not seen round 1 looks where another running task's round 1 fell."""
    schedule = adaptive()
    schedule.next_delay(looked("scout", 0.0, 1, ()))  # the first to search: the scout
    schedule.next_delay(looked("other", 0.0, 1, ()))
    schedule.next_delay(looked("scout", 3.0, 2, ()))
    schedule.next_delay(looked("scout", 3.5, 3, (3.5,)))  # round 1 ended 3.0 to 3.5 in
    at = 2.0 + schedule.next_delay(looked("other", 2.0, 2, ()))
    assert 2.0 < at < 3.75  # not at 6.0, three times as late (see the test above)
    # What the scout showed goes when it ends: the other task searches on its own again,
    # as the new scout (its next look doubles the time since its start).
    schedule.forget("scout")
    assert 3.0 + schedule.next_delay(looked("other", 3.0, 3, ())) == pytest.approx(6.0)


def test_the_first_task_to_mark_round_one_wakes_the_rest_of_a_first_wave() -> None:
    """A task asleep for long is woken when another marks round 1, and looks where that says."""
    schedule = adaptive()
    schedule.next_delay(looked("scout", 0.0, 1, ()))  # the first to search: the scout
    schedule.next_delay(looked("other", 0.0, 1, ()))
    schedule.next_delay(looked("scout", 3.0, 2, ()))
    planned = 2.0 + schedule.next_delay(looked("other", 2.0, 2, ()))
    assert planned == pytest.approx(8.0)  # four times the time since its start
    woken: list[str] = []
    assert schedule.wake_on_news(looked("other", 2.0, 2, ()), lambda: woken.append("other"))
    schedule.next_delay(looked("scout", 3.5, 3, (3.5,)))  # round 1 ended 3.0 to 3.5 in
    assert woken == ["other"]
    # Asked again with the same polls (nothing new seen): a re-plan, from now.
    again = 3.5 + schedule.next_delay(looked("other", 3.5, 2, ()))
    assert 3.5 < again < 5.25  # inside the window the mark gives, not at 8.0


def test_a_task_woken_after_sleeping_through_part_of_its_window_looks_soon() -> None:
    """Its boundary may lie in the part it slept through: it looks sooner than a task that
    looked inside the window, which knows the boundary is still ahead of that look."""
    schedule = adaptive()
    for name in ("scout", "slept", "looked"):
        schedule.next_delay(looked(name, 0.0, 1, ()))
    woken: list[str] = []
    for name, t in (("slept", 1.0), ("looked", 3.0)):
        schedule.next_delay(looked(name, t, 2, ()))
        schedule.wake_on_news(looked(name, t, 2, ()), functools.partial(woken.append, name))
    schedule.next_delay(looked("scout", 3.0, 2, ()))
    schedule.next_delay(looked("scout", 3.5, 3, (3.5,)))  # round 1 ended 3.0 to 3.5 in
    assert sorted(woken) == ["looked", "slept"]
    slept = schedule.next_delay(looked("slept", 3.5, 2, ()))
    inside = schedule.next_delay(looked("looked", 3.5, 2, ()))
    assert 0 < slept < inside / 1.5


def test_in_a_first_wave_only_the_searchers_step_at_full_pace_until_round_two_is_marked() -> None:
    """Round 2's window rests on round 1's share of a round, unknown until a task shows it.

    The tasks that search step through the window; the others, which a mark will wake,
    look half as often; once a task has marked round 2, all plan alike.
    """
    schedule = adaptive()
    names = [f"t{i}" for i in range(8)]
    for name in ["scout", *names]:
        schedule.next_delay(looked(name, 0.0, 1, ()))
    schedule.wake_on_news(looked("scout", 0.0, 1, ()), lambda: None)  # wakes are kept
    delays = {round(schedule.next_delay(looked(name, 3.5, 2, (3.5,))), 6) for name in names}
    assert len(delays) == 2
    assert max(delays) == pytest.approx(2 * min(delays))
    schedule.next_delay(looked("scout", 3.5, 2, (3.5,)))
    schedule.next_delay(looked("scout", 12.0, 3, (3.5,)))
    schedule.next_delay(looked("scout", 13.0, 4, (3.5, 13.0)))  # round 2 ended 12 to 13 in
    after = {round(schedule.next_delay(looked(name, 13.0, 3, (3.5,))), 6) for name in names}
    assert len(after) == 1


def test_a_wake_that_brings_no_news_keeps_the_plan() -> None:
    """A re-plan that learns nothing new looks when the search had planned, not later."""
    schedule = adaptive()
    planned = 2.0 + schedule.next_delay(looked("scout", 2.0, 2, ()))
    assert 3.0 + schedule.next_delay(looked("scout", 3.0, 2, ())) == pytest.approx(planned)


def test_only_a_first_wave_in_progress_mode_asks_to_be_woken() -> None:
    """Completion mode, or a model with a finished task, plans by what it knows: no wake."""
    schedule = adaptive()
    completion = searching("c", 1.0, 2, PollMode.COMPLETION)
    schedule.next_delay(completion)
    assert not schedule.wake_on_news(completion, lambda: None)
    progress = searching("p", 1.0, 2, PollMode.PROGRESS)
    schedule.next_delay(progress)
    assert schedule.wake_on_news(progress, lambda: None)
    run_many(schedule, 2, mode=PollMode.PROGRESS)
    known = attrs.evolve(progress, task_id="k", model=MODEL)
    schedule.next_delay(known)
    assert not schedule.wake_on_news(known, lambda: None)
    assert not schedule.wake_on_news(attrs.evolve(progress, task_id="never looked at"), print)


@pytest.mark.parametrize("seed", range(12))
def test_a_task_not_seen_at_the_end_of_its_window_is_not_looked_at_ever_closer(
    seed: int,
) -> None:
    """Near a window's end, at most two gaps shorter than the lag; then looks back off.

    A look a little short of the end that misses is followed by one at the end, not
    by ever closer ones. Over several learning histories: where a look goes depends
    on what the model's tasks taught.
    """
    schedule = adaptive()
    run_many(schedule, 10, seed=seed, mode=PollMode.PROGRESS)
    slow = FakeTask(0.0, (0.33, 1.33, 2.9, 3.9))  # round 3 far later than round 2 says
    looks = simulate(schedule, slow, mode=PollMode.PROGRESS).looks
    gaps = [b - a for a, b in itertools.pairwise(looks) if 1.33 < a < 2.9]
    assert len([gap for gap in gaps if gap < 0.1]) <= 2  # the lag: 0.15 round


@pytest.mark.parametrize("slower", [1.6, 1.75, 1.85])
@pytest.mark.parametrize("first_pace", [0.7, 0.8])
def test_a_task_slower_than_the_one_task_a_model_showed_is_still_seen_soon(
    first_pace: float, slower: float
) -> None:
    """One task teaches a range around its pace; the next may lie past its slow end.

    Tasks within ±30 % of one mean differ by up to 1.86 times. Held to the range
    learnt from one task, the looks for such a task's round 2 crept up on the
    range's end, then searched past it, and saw rounds up to half a round late
    with up to a dozen looks.
    """
    schedule = adaptive()
    first = FakeTask(0.0, tuple(first_pace * (k + 1 / 3) for k in range(4)))
    simulate(schedule, first, mode=PollMode.PROGRESS)
    pace = first_pace * slower
    slow = FakeTask(0.0, tuple(pace * (k + 1 / 3) for k in range(4)))
    looks = simulate(schedule, slow, mode=PollMode.PROGRESS).looks
    lags = [min(t for t in looks if t >= end) - end for end in slow.finishes]
    assert max(lags) <= 0.2 * pace, [round(lag / pace, 3) for lag in lags]
    assert len(looks) <= 10


@pytest.mark.parametrize("mode", list(PollMode))
@pytest.mark.parametrize("slower", [1.8, 2.5])
def test_a_task_slower_than_every_task_of_a_well_known_model_is_not_crept_up_on(
    mode: PollMode, slower: float
) -> None:
    """Past the slow end of a range learnt from many tasks, each miss moves the window on.

    Inside such a range its end hardly gives way (thirty tasks vouch for it). Past it,
    a window reaching only as far beyond the task's own bound crept along: looks a
    hundredth of a round apart, sixty to a hundred of them.
    """
    schedule = adaptive()
    run_many(schedule, 30, mode=mode)
    task = FakeTask(0.0, tuple(slower * (k + 1 / 3) for k in range(4)))
    outcome = simulate(schedule, task, mode=mode)
    assert outcome.polls <= 14, outcome.looks
    assert outcome.lag <= 0.2 * slower


@pytest.mark.parametrize("round_time", [2.0, 30.0])
def test_a_first_wave_does_not_look_ever_closer_at_a_window_end_that_moves(
    round_time: float,
) -> None:
    """A look at a window's end that misses shows a slower task: the end moves on.

    Looking at each new end would look again and again a few hundredths of a round
    apart (the search's own doubling, near the start, aside). The next look keeps
    half a step away instead: never two looks in a row that close while waiting for
    the same round.
    """
    for seed in range(11, 23):
        rng = random.Random(seed)
        tasks = [make_task(rng, round_time=round_time) for _ in range(20)]
        outcomes = run_wave(
            adaptive(seed=seed), tasks, mode=PollMode.PROGRESS, latency=0.002 * round_time
        )
        for task, outcome in zip(tasks, outcomes, strict=True):
            looks = [(t, sum(end <= t for end in task.finishes)) for t in outcome.looks]
            close = [
                b - a < 0.06 * round_time and done_a == done_b and a > 0.2 * round_time
                for (a, done_a), (b, done_b) in itertools.pairwise(looks)
            ]
            assert not any(x and y for x, y in itertools.pairwise(close)), outcome.looks


def run_wave(
    schedule: PollSchedule,
    tasks: Sequence[FakeTask],
    *,
    mode: PollMode,
    start: float = 0.0,
    latency: float = 0.0,
) -> list[Outcome]:
    """Poll tasks submitted together at ``start``, interleaved in time as a client does.

    ``FakeTask`` times are from ``start``; each wait begins ``latency`` after its submit.
    As the polling layer does, each sleep is offered to ``wake_on_news``; a task woken
    is asked for its delay again (same ``polls``) from that moment.
    """
    waits = {f"w{start}-{i}": task for i, task in enumerate(tasks)}
    seen: dict[str, list[float]] = {name: [] for name in waits}
    started: dict[str, float | None] = dict.fromkeys(waits)
    looks: dict[str, list[float]] = {name: [] for name in waits}
    last: dict[str, TaskResult | None] = dict.fromkeys(waits)
    outcomes: dict[str, Outcome] = {}

    def state(name: str, t: float) -> PollState:
        began = started[name]
        return PollState(
            task_id=name,
            polls=len(looks[name]),
            elapsed=t - latency,
            last=last[name],
            max_rounds=4,
            model=MODEL,
            round_seen_at=tuple(x - latency for x in seen[name]),
            started_at=None if began is None else began - latency,
            mode=mode,
            submitted_at=-latency,
        )

    planned = dict.fromkeys(waits, 0)  # a woken task's earlier plan is stale
    woken: list[str] = []
    offer = getattr(schedule, "wake_on_news", None)

    def sleep(name: str, t: float, delay: float) -> None:
        planned[name] += 1
        heapq.heappush(due, (t + delay, name, planned[name]))
        if offer is not None:
            offer(state(name, t), lambda: woken.append(name))

    due = [(latency + schedule.next_delay(state(name, latency)), name, 0) for name in waits]
    heapq.heapify(due)
    while due:
        t, name, plan = heapq.heappop(due)
        if plan != planned[name]:
            continue
        task = waits[name]
        result = last[name] = snapshot(task, name, t)
        looks[name].append(t)
        if started[name] is None and result.status is not TaskStatus.QUEUE:
            started[name] = t
        seen[name] += [t] * (len(result.completed_rounds) - len(seen[name]))
        if result.is_terminal:
            planned[name] += 1
            schedule.task_finished(state(name, t))  # type: ignore[attr-defined]
            lags = [s - f for s, f in zip(seen[name], task.finishes, strict=True)]
            lag = t - task.ends if mode is PollMode.COMPLETION else mean(lags)
            outcomes[name] = Outcome(tuple(looks[name]), lag)
        else:
            sleep(name, t, schedule.next_delay(state(name, t)))
        while woken:  # the waits this look woke plan again, from now
            other = woken.pop()
            if other not in outcomes:
                sleep(other, t, schedule.next_delay(state(other, t)))
    return [outcomes[name] for name in waits]


@pytest.mark.parametrize("round_time", [2.0, 30.0])
def test_a_cold_wave_in_completion_mode_costs_few_looks_per_task(round_time: float) -> None:
    """Twenty tasks of a model never seen, submitted at once, at either length of round.

    One searches, the others wait for what it finds, and while little is known each
    aims at a wider lag (the end seen within a sixth of a round on average) for fewer
    looks: about nine per task, where a search of its own would cost each task more.
    """
    rng = random.Random(11)
    tasks = [make_task(rng, round_time=round_time) for _ in range(20)]
    outcomes = run_wave(adaptive(), tasks, mode=PollMode.COMPLETION, latency=0.002 * round_time)
    alone = [simulate(adaptive(), task, model=f"alone-{i}") for i, task in enumerate(tasks)]
    assert mean([o.polls for o in outcomes]) <= 10
    assert mean([o.polls for o in outcomes]) < mean([o.polls for o in alone])
    assert mean([o.lag for o in outcomes]) / round_time <= 0.15


@pytest.mark.parametrize("round_time", [2.0, 30.0])
def test_a_cold_wave_in_progress_mode_sees_every_round_soon(round_time: float) -> None:
    """Four waves of twenty tasks of a model never seen, every round watched, no budget.

    A few tasks search for round 1 and the first to mark a round's end wake the others
    (which look rarely meanwhile): each round is seen within a sixth of a round on
    average, for no more looks than each task searching alone would cost.
    """
    polls, lags, alone = [], [], []
    for seed in range(11, 15):
        rng = random.Random(seed)
        tasks = [make_task(rng, round_time=round_time) for _ in range(20)]
        schedule = adaptive(seed=seed)
        outcomes = run_wave(schedule, tasks, mode=PollMode.PROGRESS, latency=0.002 * round_time)
        polls += [o.polls for o in outcomes]
        lags += [o.lag / round_time for o in outcomes]
        alone += [
            simulate(adaptive(seed=seed), task, model=f"alone-{i}", mode=PollMode.PROGRESS).polls
            for i, task in enumerate(tasks)
        ]
    assert mean(lags) <= 0.15
    assert mean(polls) <= mean(alone)


# -- time scale ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(PollMode))
def test_once_a_model_is_known_the_looks_scale_with_its_rounds(
    mode: PollMode, tmp_path: Path
) -> None:
    """The same tasks with rounds of 2 s or 120 s get the same looks, in rounds."""
    looks = {}
    for round_time in (2.0, 120.0):
        cache = tmp_path / f"{round_time}.json"
        tasks = [
            [4, round_time * random.Random(i).uniform(0.7, 1.3) * (3 + 1 / 3)] for i in range(20)
        ]
        body = {
            "format": "spo-async schedule",
            "version": 1,
            "queue": [[0.0, 0.0]] * 4,
            "models": {MODEL: {"tasks": tasks, "firsts": [[0.33, 0.34]] * 4}},
        }
        cache.write_text(json.dumps(body))
        schedule = adaptive(persist=cache)
        schedule.persist = None  # read, never written back
        outcomes = run_many(schedule, 6, seed=3, round_time=round_time, mode=mode)
        looks[round_time] = [[t / round_time for t in o.looks] for o in outcomes]
    for small, large in zip(looks[2.0], looks[120.0], strict=True):
        assert small == pytest.approx(large, rel=1e-6)


# -- learning and sharing --------------------------------------------------------------------


def test_learns_round_times_per_model() -> None:
    """Each model's round length is learnt from its own tasks."""
    schedule = adaptive()
    run_many(schedule, 8, round_time=1.0, model="fast", mode=PollMode.PROGRESS)
    run_many(schedule, 8, round_time=4.0, model="slow", mode=PollMode.PROGRESS)
    assert schedule.round_seconds("fast") == pytest.approx(1.0, rel=0.2)
    assert schedule.round_seconds("slow") == pytest.approx(4.0, rel=0.2)
    assert schedule.round_seconds("never-seen") is None


def test_what_a_running_task_learns_reaches_the_others_at_once() -> None:
    """A task whose rounds pinned its pace plans the next task's looks before it ends."""
    schedule = adaptive()
    ahead = make_task(random.Random(5), round_time=3.0)
    states: list[PollState] = []
    seen: list[float] = []
    for t in (0.0, 1.05, 1.1, 4.25, 4.33):  # brackets rounds 1 and 2 of ``ahead`` tightly
        result = snapshot(ahead, "ahead", t)
        seen += [t] * (len(result.completed_rounds) - len(seen))
        states.append(
            PollState(
                task_id="ahead",
                polls=len(states) + 1,
                elapsed=t,
                last=result,
                model=MODEL,
                round_seen_at=tuple(seen),
                started_at=0.0,
                max_rounds=8,
                mode=PollMode.PROGRESS,
                submitted_at=0.0,
            )
        )
        schedule.next_delay(states[-1])
    assert ahead.ends > 4.33  # still running
    newcomer = PollState(
        task_id="new",
        polls=0,
        elapsed=0.0,
        last=None,
        model=MODEL,
        submitted_at=0.0,
        max_rounds=4,
        mode=PollMode.PROGRESS,
    )
    assert schedule.next_delay(newcomer) > 0.0  # planned from the running task's pace


def test_a_late_first_look_does_not_teach_a_queue_that_was_not_there() -> None:
    """Tasks never seen queued are taken to start at their submit, however late the look.

    A first look held back (behind a burst of submits, say) only shows the task
    started at some point before it; the middle of that span is no queue time.
    """
    schedule = adaptive(first=0.3)
    run_many(schedule, 6, mode=PollMode.PROGRESS)
    assert schedule.queue_seconds() == 0.0


def test_a_queue_seen_is_learnt_from_the_brackets_that_hold_it() -> None:
    """Tasks seen queued bound the queue time from both sides; loose bounds only narrow it."""
    schedule = adaptive()
    run_many(schedule, 10, mode=PollMode.PROGRESS, queue=0.5)
    learnt = schedule.queue_seconds()
    assert learnt is not None
    assert learnt == pytest.approx(0.5, abs=0.15)


def test_a_failed_task_teaches_nothing_about_its_model() -> None:
    """A task that ended in ``fail`` ended at no particular round boundary."""
    schedule = adaptive()
    task = attrs.evolve(make_task(random.Random(1)), fails=True)
    simulate(schedule, task, mode=PollMode.PROGRESS)
    assert schedule.round_seconds(MODEL) is None


def test_finished_tasks_are_forgotten_and_memory_is_bounded() -> None:
    """Tracks end with their waits; at most ``max_tasks`` running ones are kept."""
    schedule = adaptive(max_tasks=3)
    run_many(schedule, 5)
    assert not schedule._tasks
    for i in range(6):
        schedule.next_delay(PollState(task_id=f"r{i}", polls=1, elapsed=0.0, last=processing()))
    assert len(schedule._tasks) == 3


def test_what_the_tasks_of_a_first_wave_shared_goes_with_them() -> None:
    """Searchers, wakes, paces and marks of running tasks leave when the tasks end."""
    schedule = adaptive()
    rng = random.Random(5)
    tasks = [make_task(rng, round_time=30.0) for _ in range(20)]
    run_wave(schedule, tasks, mode=PollMode.PROGRESS, latency=0.06)
    model = schedule._models[MODEL]
    assert not schedule._tasks
    assert not model.searchers
    assert not model.wakes
    assert not model.live
    assert not any(model.marks.values())


# -- looks -----------------------------------------------------------------------------------


def test_warm_completion_mode_sees_the_end_soon_with_few_looks() -> None:
    """Knowing the model, a task is seen ending about a tenth of a round late in a few looks."""
    schedule = adaptive()
    run_many(schedule, 20)
    warm = run_many(schedule, 40, seed=9)
    assert mean([o.polls for o in warm]) < 6
    assert mean([o.lag for o in warm]) < 0.2


def test_warm_progress_mode_sees_each_round_with_about_one_look() -> None:
    """Watching rounds, a known model costs about one look per round, plus two at most."""
    schedule = adaptive()
    run_many(schedule, 20, mode=PollMode.PROGRESS)
    warm = run_many(schedule, 40, seed=9, mode=PollMode.PROGRESS)
    assert mean([o.polls for o in warm]) < 4 + 2
    assert mean([o.lag for o in warm]) < 0.1


def test_on_a_known_model_a_look_goes_as_far_into_its_window_as_the_pace_is_sure() -> None:
    """Where in the window: the end of one the pace pins, near the middle of a loose one."""
    window = (10.0, 11.0)

    def into(spread: float, *, first: bool = False) -> float:
        return _known_look(9.0, window, spread, first=first, worth=0.27, gap=0.03) - 10.0

    assert into(0.01) == 1.0  # the pace pinned: at the end, nothing to learn from a miss
    assert into(0.6) == pytest.approx(0.43, abs=0.01)  # tasks that differ by ±30 %
    widths = [0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 1.0]
    fractions = [into(w) for w in widths]
    assert fractions == sorted(fractions, reverse=True)
    assert all(into(w, first=True) >= into(w) for w in widths)  # round 1 is short


def test_on_a_known_model_looks_inside_a_window_keep_apart_and_spare_no_sliver() -> None:
    """After a miss, the next look keeps a gap; one that would leave a sliver takes the end."""
    assert _known_look(10.0, (10.0, 11.0), 0.6, first=False, worth=0.27, gap=0.5) == 10.5
    # 0.88 of the way into a window of 0.1 leaves 0.012 of it: the end instead, not a
    # look and then another, ever closer. Entering the window, the look is not moved.
    assert _known_look(10.0, (10.0, 10.1), 0.07, first=False, worth=0.27, gap=0.01) == 10.1
    entering = _known_look(9.0, (10.0, 10.1), 0.07, first=False, worth=0.27, gap=0.01)
    assert entering == pytest.approx(10.088, abs=0.001)


def _looks_until(end: float, gap: Callable[[float], float]) -> list[float]:
    """The looks a rule plans through a window ``[0, end]`` that never shows the target."""
    looks = [0.0]
    while looks[-1] < end:
        looks.append(looks[-1] + gap(end - looks[-1]))
    return looks[1:]


def _uniform_cost(looks: Sequence[float]) -> tuple[float, float]:
    """Looks made and mean delay, for an end spread evenly over ``[0, looks[-1]]``."""
    end, made, delay, before = looks[-1], 0.0, 0.0, 0.0
    for at in looks:
        made += 1 - before / end  # this look is made if the end came after the last one
        delay += (at - before) ** 2 / 2 / end
        before = at
    return made, delay


#: The step of completion mode on a known model, with the default ``completion_lag``.
_STEP = 2 * AdaptiveSchedule().completion_lag


def test_completion_looks_come_closer_together_as_the_window_is_used_up() -> None:
    """Each miss makes the end likelier in what is left: every gap is shorter than the last."""
    looks = _looks_until(1.0, lambda left: _completion_look(left, _STEP))
    gaps = [b - a for a, b in itertools.pairwise([0.0, *looks])]
    assert looks[-1] == pytest.approx(1.0)
    assert gaps[0] > 2 * _STEP  # far apart where the end seldom is
    shrinking = [a - b for a, b in itertools.pairwise(gaps)]
    assert shrinking[:-1] == pytest.approx([_CLOSER * _STEP] * (len(gaps) - 2))
    assert 0 < gaps[-1] < gaps[-2] < _STEP  # the rest, once narrower than a step, at once


@pytest.mark.parametrize("width", [0.25, 0.6, 1.0, 2.5])
def test_completion_looks_plan_as_many_gaps_as_stay_positive(width: float) -> None:
    """The first gap is that of the most gaps, shrinking by ``_CLOSER`` of a step, that fit."""
    closer = _CLOSER * _STEP
    most = max(n for n in range(1, 100) if n * (n - 1) * closer < 2 * width)
    first = width / most + closer * (most - 1) / 2
    assert _completion_look(width, _STEP) == pytest.approx(first)
    assert first - (most - 1) * closer > 0  # the last gap of the plan is still a gap


@pytest.mark.parametrize(
    ("width", "step", "expected"),
    [
        (0.1, 0.1, 0.1),  # no wider than a step: once, at its end
        (0.04, 0.1, 0.04),
        (float("inf"), 0.1, 0.1),  # no end known: a step in
        (1e308, 1.0, 1.0),  # too wide for the arithmetic: the same
        (1.0, 1e-310, 1e-310),
    ],
)
def test_completion_looks_at_the_edges(width: float, step: float, expected: float) -> None:
    assert _completion_look(width, step) == expected


def test_completion_looks_cost_fewer_than_equal_steps_at_equal_lag() -> None:
    """For an end spread evenly over a window a round wide: 0.3 look less a task (3.2, 3.5)."""
    made, delay = _uniform_cost(_looks_until(1.0, lambda left: _completion_look(left, _STEP)))
    low, high = 0.01, 1.0  # the equal step with the same mean delay, by bisection
    for _ in range(60):
        middle = (low + high) / 2
        equal = _uniform_cost(_looks_until(1.0, functools.partial(min, middle)))
        low, high = (middle, high) if equal[1] < delay else (low, middle)
    assert equal[1] == pytest.approx(delay, abs=1e-3)
    assert made < equal[0] - 0.25


def test_completion_mode_looks_less_than_a_fixed_interval_at_the_same_lag() -> None:
    """Against the web app's fixed interval (here a fifth of a round) it spends far fewer looks."""
    schedule = adaptive()
    run_many(schedule, 20)
    ours = run_many(schedule, 30, seed=4)
    fixed = run_many(FixedSchedule(interval=0.2), 30, seed=4)
    assert mean([o.polls for o in ours]) < 0.5 * mean([o.polls for o in fixed])
    assert mean([o.lag for o in ours]) <= mean([o.lag for o in fixed]) + 0.05


@pytest.mark.parametrize(
    ("round_jitter", "pace_jitter", "queue", "mode"),
    [
        (0.3, 0.3, 0.0, PollMode.COMPLETION),
        (0.0, 0.3, 0.5, PollMode.COMPLETION),
        (0.0, 0.0, 0.0, PollMode.COMPLETION),
        (0.3, 0.0, 0.0, PollMode.PROGRESS),
    ],
    ids=["rounds-vary", "queued", "steady", "rounds-vary-progress"],
)
def test_every_task_ends_and_no_delay_is_negative(
    round_jitter: float, pace_jitter: float, queue: float, mode: PollMode
) -> None:
    """Whatever the rounds do, the schedule keeps looking, never in a burst, until the end."""
    schedule = adaptive()
    outcomes = run_many(
        schedule, 30, round_jitter=round_jitter, pace_jitter=pace_jitter, queue=queue, mode=mode
    )
    assert all(o.lag >= 0 for o in outcomes)
    assert all(o.polls < 40 for o in outcomes)


def test_works_without_max_rounds() -> None:
    """Without ``max_rounds`` it looks for each next round until the task ends."""
    outcomes = run_many(adaptive(), 10, max_rounds=None)
    assert all(o.polls < 30 for o in outcomes)


def test_a_task_later_than_predicted_is_looked_at_less_and_less_often() -> None:
    """Past its window, the gaps between looks grow with how late the task is."""
    schedule = adaptive()
    run_many(schedule, 10)
    stuck = FakeTask(0.0, (0.33, 1.33, 2.33, 40.0))  # round 4 stalls
    looks = simulate(schedule, stuck).looks
    gaps = [b - a for a, b in itertools.pairwise(looks) if a > 4.0]
    assert len(looks) < 30
    assert gaps == sorted(gaps)


def test_deterministic_under_a_seeded_rng() -> None:
    """Two schedules with the same seed plan the same looks."""
    first = run_many(adaptive(seed=4), 10, mode=PollMode.PROGRESS)
    again = run_many(adaptive(seed=4), 10, mode=PollMode.PROGRESS)
    assert first == again


# -- hostile timelines ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(PollMode))
@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_a_task_submitted_elsewhere_and_under_way_gets_a_finite_next_look(
    mode: PollMode, rounds: int
) -> None:
    """A wait of a task this client did not submit (resumed, say) plans a look, never inf."""
    schedule = adaptive()
    run_many(schedule, 10)  # a model it knows
    state = PollState(
        task_id="resumed",
        polls=1,
        elapsed=0.0,
        last=processing("resumed", rounds),
        max_rounds=4,
        model=MODEL,
        mode=mode,
        submitted_at=None,
        started_at=0.0,
        round_seen_at=(0.0,) * rounds,
    )
    assert 0 < schedule.next_delay(state) < 4.0  # rounds of about a second


def test_a_queued_task_is_not_polled_at_the_pace_of_one_very_fast_task() -> None:
    """Tasks of 0.3 s rounds taught the model; a task queued for 60 s still looks rarely.

    Queue times that vary (0 and 20 s) leave a wide window for the start, which steps
    by the model's round would cross in hundreds of looks.
    """
    schedule = adaptive()
    run_many(schedule, 2, round_time=0.3)
    run_many(schedule, 2, round_time=0.3, queue=20.0, seed=1)
    queued = make_task(random.Random(2), round_time=30.0, queue=60.0)
    looks = simulate(schedule, queued, task_id="queued").looks
    assert sum(t < 60.0 for t in looks) <= 40  # 338 when they stepped by the round


def test_a_track_built_again_mid_task_does_not_take_the_learnt_queue_time() -> None:
    """A look from a wait that took over late cannot assume the task queued as others did.

    Other tasks never queued; this one queued 20 s and another wait saw it, then left.
    Taking its start within the learnt queue time would make its round 1 last 20 s,
    a pace of 60 s, which its plan and the model's shared paces would then use.
    """
    schedule = adaptive()
    run_many(schedule, 10)  # rounds of about a second, no queue
    state = PollState(
        task_id="late",
        polls=5,  # this wait's fifth look, the schedule's first sight of it
        elapsed=20.5,
        last=processing("late", 1),
        max_rounds=4,
        model=MODEL,
        mode=PollMode.PROGRESS,
        submitted_at=0.0,
        started_at=20.5,
        round_seen_at=(20.5,),
    )
    assert schedule.next_delay(state) < 3.0
    assert all(pace < 3.0 for pace in schedule._models[MODEL].live.values())


def _look(
    task_id: str, polls: int, elapsed: float, rounds: int, submitted_at: float | None
) -> PollState:
    return PollState(
        task_id=task_id,
        polls=polls,
        elapsed=elapsed,
        last=processing(task_id, rounds),
        max_rounds=4,
        model=MODEL,
        mode=PollMode.PROGRESS,
        submitted_at=submitted_at,
        started_at=elapsed,
        round_seen_at=(elapsed,) * rounds,
    )


def test_two_waits_of_a_task_that_know_its_submit_keep_one_track() -> None:
    """A second wait (its clock starts later) adds its looks to the first's brackets."""
    schedule = adaptive()
    run_many(schedule, 10)
    schedule.next_delay(_look("x", 1, 0.2, 0, 0.0))
    schedule.next_delay(_look("x", 2, 0.5, 1, 0.0))  # round 1 ended between 0.2 and 0.5
    before = dict(schedule._tasks["x"].hi)
    schedule.next_delay(_look("x", 1, 0.4, 1, -0.3))  # started 0.3 s later: at 0.7
    track = schedule._tasks["x"]
    assert track.hi == before
    assert track.lo[1] == 0.2  # round 1's bracket is kept, not reset to the submit
    assert track.last == pytest.approx(0.7)


def test_a_wait_on_a_clock_the_track_cannot_read_follows_its_pace() -> None:
    """A wait that does not know the submit, beside one that does, keeps the other's pace.

    Built again at each of its looks, the track would lose its brackets, and both
    waits would search from scratch: hundreds of looks a task.
    """
    schedule = adaptive()
    run_many(schedule, 10)
    for polls, (t, rounds) in enumerate([(0.2, 0), (0.5, 1), (0.9, 1)], start=1):
        first = schedule.next_delay(_look("x", polls, t, rounds, 0.0))
    track = schedule._tasks["x"]
    kept = (dict(track.lo), dict(track.hi), track.polls)
    other = schedule.next_delay(_look("x", 1, 0.1, 1, None))
    assert other == pytest.approx(max(first, schedule.floor))
    assert (dict(track.lo), dict(track.hi), track.polls) == kept


@pytest.mark.parametrize("mode", list(PollMode))
def test_one_task_a_hundred_times_slower_does_not_delay_the_next_ones(mode: PollMode) -> None:
    """A stalled task stays out of the model's prior range: the next tasks are seen in time.

    In the prior's span it stretched the range to 100 s rounds, and the next tasks'
    first look came 5 to 12 rounds after their end.
    """
    schedule = adaptive()
    run_many(schedule, 10, mode=mode)
    simulate(schedule, make_task(random.Random(7), round_time=100.0), task_id="stalled", mode=mode)
    control = adaptive()
    run_many(control, 10, mode=mode)
    after = run_many(schedule, 5, mode=mode, seed=3)
    unharmed = run_many(control, 5, mode=mode, seed=3)
    assert max(o.lag for o in after) < 0.25  # rounds of about a second
    assert sum(o.polls for o in after) <= sum(o.polls for o in unharmed) + 2


@pytest.mark.parametrize("mode", list(PollMode))
def test_a_task_submitted_elsewhere_and_seen_queued_teaches_no_queue_time(mode: PollMode) -> None:
    """Its submit is a guess (its first look): the learnt queue time says nothing of its start.

    Taken as submitted at its first look, it taught tasks to queue up to 5 s (a model
    whose tasks never queue) and took its own start within the learnt queue time.
    """
    schedule = adaptive()
    run_many(schedule, 10, mode=mode)
    assert schedule._queue_range() == (0.0, 0.0)
    queued = make_task(random.Random(5), queue=3.0)
    outcome = simulate(schedule, queued, task_id="elsewhere", submitted_at=None, mode=mode)
    assert schedule._queue_range() == (0.0, 0.0)
    assert outcome.lag < 0.25
    assert outcome.polls < (12 if mode is PollMode.COMPLETION else 19)  # what it took then


# -- the cache file --------------------------------------------------------------------------


def test_a_second_process_starts_from_what_the_first_learnt(tmp_path: Path) -> None:
    """With ``persist``, what one schedule learnt plans the first task of the next."""
    cache = tmp_path / "cache" / "schedule.json"
    run_many(adaptive(persist=cache), 10)
    assert cache.exists()
    assert [p.name for p in cache.parent.iterdir()] == ["schedule.json"]  # no temp file left
    later = adaptive(persist=cache)
    assert later.round_seconds(MODEL) == pytest.approx(1.0, rel=0.3)
    tasks = [make_task(random.Random(seed)) for seed in range(8)]
    cold = [simulate(adaptive(), task).polls for task in tasks]
    warm = [simulate(adaptive(persist=cache), task).polls for task in tasks]  # new processes
    assert sum(warm) < sum(cold)


def test_the_cache_holds_model_names_and_durations_only(tmp_path: Path) -> None:
    """The file is small JSON with models and numbers: nothing from the requests or the key."""
    cache = tmp_path / "schedule.json"
    run_many(adaptive(persist=cache), 5)
    body = json.loads(cache.read_text())
    assert set(body) == {"format", "version", "queue", "models"}
    assert set(body["models"]) == {MODEL}
    assert set(body["models"][MODEL]) == {"tasks", "firsts"}


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"format": "something else", "models": {}}',
        b'{"format": "spo-async schedule", "version": 99, "models": {}}',
        b'{"format": "spo-async schedule", "version": 1, "models": []}',
        b"x" * 300_000,
        b"\xff\xfe",
        b"[" * 100_000,
    ],
    ids=["corrupt", "foreign", "newer", "wrong-shape", "huge", "not-utf8", "nested-deep"],
)
def test_an_unreadable_cache_is_ignored(tmp_path: Path, content: bytes) -> None:
    """A corrupt, foreign or oversized file is ignored: the schedule starts from scratch."""
    cache = tmp_path / "schedule.json"
    cache.write_bytes(content)
    schedule = adaptive(persist=cache)
    assert schedule.round_seconds(MODEL) is None
    run_many(schedule, 2)  # and is replaced by a good one
    assert json.loads(cache.read_text())["format"] == "spo-async schedule"


def test_insane_numbers_in_the_cache_are_dropped(tmp_path: Path) -> None:
    """Negative, infinite or absurd values in a well-formed file are left out."""
    cache = tmp_path / "schedule.json"
    body = {
        "format": "spo-async schedule",
        "version": 1,
        "queue": [[-1, 2], [1, 0.5]],
        "models": {
            MODEL: {
                "tasks": [[4, -3.0], [0, 5.0], [4, 1e99], [4, 10.0]],
                "firsts": [[0.5, 0.2], [0.3, 0.4]],
            }
        },
    }
    cache.write_text(json.dumps(body))
    schedule = adaptive(persist=cache)
    assert list(schedule._models[MODEL].tasks) == [(4, 10.0)]
    assert list(schedule._models[MODEL].firsts) == [(0.3, 0.4)]
    assert not schedule._queue


def _cached_tasks(cache: Path, model: str = MODEL) -> int:
    return len(json.loads(cache.read_text())["models"][model]["tasks"])


def test_processes_sharing_the_cache_keep_each_other_s_samples(tmp_path: Path) -> None:
    """Two processes that read the file at once and learn apart both add to it, in turn."""
    cache = tmp_path / "schedule.json"
    run_many(adaptive(persist=cache), 3)
    before = _cached_tasks(cache)
    one, two = adaptive(persist=cache), adaptive(persist=cache)  # both read the same file
    run_many(one, 4, seed=1)
    run_many(two, 5, seed=2)
    taught = [len(s._models[MODEL].tasks) - before for s in (one, two)]
    assert min(taught) > 0
    assert _cached_tasks(cache) == before + sum(taught)  # none twice, none lost to a writer


@pytest.mark.skipif(sys.platform == "win32", reason="no advisory lock on Windows")
def test_a_held_lock_puts_the_write_off_to_the_next_lesson(tmp_path: Path) -> None:
    """While another process holds the file's lock, samples wait; none are lost."""
    import fcntl  # POSIX only

    cache = tmp_path / "schedule.json"
    schedule = adaptive(persist=cache)
    folder = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)  # another process, writing
        run_many(schedule, 2)
        assert not cache.exists()  # the wait went on; nothing was blocked on the lock
    finally:
        os.close(folder)
    schedule.save()
    assert _cached_tasks(cache) == len(schedule._models[MODEL].tasks)


def test_a_wave_writes_the_cache_after_its_first_lessons_then_every_sixteenth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lessons 1, 2, 4, 8, 16, 32 ... are written, and the rest once no task is left."""
    writes: list[int] = []
    merge = CacheFile.merge

    def counted(file: CacheFile, fresh: Knowledge) -> bool:
        writes.append(len(fresh.models[MODEL].tasks) if MODEL in fresh.models else 0)
        return merge(file, fresh)

    monkeypatch.setattr(CacheFile, "merge", counted)
    cache = tmp_path / "schedule.json"
    schedule = adaptive(persist=cache, window=64)
    rng = random.Random(8)
    run_wave(schedule, [make_task(rng) for _ in range(40)], mode=PollMode.COMPLETION)
    taught = len(schedule._models[MODEL].tasks)
    assert taught > 32
    assert len(writes) <= 7  # 1, 2, 4, 8, 16, 32, and when the wave is over
    assert sum(writes) == taught  # no sample twice, none left out
    assert _cached_tasks(cache) == SAMPLES


def test_a_schedule_left_with_no_task_writes_what_it_learnt(tmp_path: Path) -> None:
    """One task at a time (one ``spo-async optimize`` after another): each lesson is kept."""
    cache = tmp_path / "schedule.json"
    schedule = adaptive(persist=cache)
    for n in range(1, 6):
        run_many(schedule, 1, seed=n)
        assert _cached_tasks(cache) == len(schedule._models[MODEL].tasks)


def test_a_full_cache_stays_small_enough_to_be_read(tmp_path: Path) -> None:
    """Many long model names and samples: the oldest models go, the file stays readable."""
    full = Knowledge()
    for i in range(200):
        learnt = full.model(f"{i:03}" + "m" * 190)
        learnt.tasks = [(4, 1.0 / 3 + k) for k in range(SAMPLES)]
        learnt.firsts = [(1.0 / 3, 2.0 / 3)] * SAMPLES
    text = render(full)
    assert len(text.encode()) <= MAX_BYTES
    kept = parse(text.encode())
    assert 0 < len(kept.models) <= 64
    assert next(reversed(kept.models)).startswith("199")  # the newest model is kept


def test_persist_is_off_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """By default nothing is written; ``persist=True`` writes under ``XDG_CACHE_HOME``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    run_many(adaptive(), 3)
    assert not any(tmp_path.iterdir())
    run_many(adaptive(persist=True), 3)
    assert (tmp_path / "spo-async" / "schedule.json").exists()


def test_default_cache_path_follows_xdg_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An absolute ``XDG_CACHE_HOME`` wins; otherwise (or if relative) ``~/.cache``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_path() == tmp_path / "spo-async" / "schedule.json"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")
    assert default_cache_path() == Path.home() / ".cache" / "spo-async" / "schedule.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_path() == Path.home() / ".cache" / "spo-async" / "schedule.json"


def test_a_cache_that_cannot_be_written_costs_nothing_but_looks(tmp_path: Path) -> None:
    """If the folder cannot be created, waits go on and nothing is raised."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    run_many(adaptive(persist=blocker / "schedule.json"), 2)


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"completion_lag": 0.0},
        {"progress_lag": 1.5},
        {"floor": 0.0},
        {"first": -1.0},
        {"window": 1},
        {"max_tasks": 0},
    ],
    ids=str,
)
def test_rejects_nonsense_settings(bad: dict[str, float]) -> None:
    """Settings outside their range fail at construction."""
    with pytest.raises(ValueError, match=next(iter(bad))):
        AdaptiveSchedule(**bad)  # type: ignore[arg-type]


def test_is_a_poll_schedule() -> None:
    """It satisfies the PollSchedule protocol (and has ``task_finished``)."""
    schedule = AdaptiveSchedule()
    assert isinstance(schedule, PollSchedule)
    assert callable(schedule.task_finished)


def test_a_wake_that_raises_does_not_stop_the_task_that_brought_the_news(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One loop's broken wake is logged; the marking task gets its delay, the others their wake."""
    schedule = adaptive()
    for name in ("scout", "broken", "fine"):
        schedule.next_delay(looked(name, 0.0, 1, ()))
    woken: list[str] = []

    def broken() -> None:
        raise RuntimeError("a broken loop")

    assert schedule.wake_on_news(looked("broken", 0.0, 1, ()), broken)
    assert schedule.wake_on_news(looked("fine", 0.0, 1, ()), lambda: woken.append("fine"))
    schedule.next_delay(looked("scout", 3.0, 2, ()))
    assert schedule.next_delay(looked("scout", 3.5, 3, (3.5,))) > 0  # marks round 1
    assert woken == ["fine"]
    assert "wake raised" in caplog.text
