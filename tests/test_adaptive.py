"""AdaptiveSchedule: behaviours checked on simulated task timelines, on a fake clock.

Nothing here sleeps or reads a real clock. A task is a list of round finish times;
:func:`simulate` walks a fake clock the way the polling layer does (look, build a
``PollState``, ask for the delay, move the clock), and counts looks and the lag
between the task's end and the look that saw it.
"""

from __future__ import annotations

import bisect
import math
import random
import statistics
from collections.abc import Sequence

import attrs
import pytest
from spo_async import (
    ExponentialSchedule,
    FixedSchedule,
    PollMode,
    PollSchedule,
    PollState,
    Round,
    Sample,
    TaskResult,
    TaskStatus,
)
from spo_async._adaptive import AdaptiveSchedule
from spo_async._stats import look_after, truncate_normal

MODEL = "claude-3-5-sonnet-20240620"


# -- a pure simulator ----------------------------------------------------------------------


@attrs.frozen
class FakeTask:
    """One task's true timeline, in seconds from the start of the wait."""

    queue_ends: float
    finishes: tuple[float, ...]  # round i + 1 finishes at finishes[i]
    fails: bool = False

    @property
    def ends(self) -> float:
        return self.finishes[-1]


def make_task(
    rng: random.Random,
    *,
    rounds: int = 5,
    round_time: float = 1.0,
    jitter: float = 0.3,
    queue: float = 0.0,
    first_fraction: float = 1 / 3,
) -> FakeTask:
    """A task like the emulator's: jittered queue, a short round 1, then full rounds."""

    def draw(base: float) -> float:
        return base * rng.uniform(1 - jitter, 1 + jitter)

    t = draw(queue)
    queue_ends = t
    finishes = []
    for number in range(1, rounds + 1):
        t += draw(round_time * (first_fraction if number == 1 else 1.0))
        finishes.append(t)
    return FakeTask(queue_ends, tuple(finishes))


_SAMPLE = (Sample("q", "a"),)


def snapshot(task: FakeTask, task_id: str, t: float, max_rounds: int | None) -> TaskResult:
    """What the service would answer at ``t``."""
    done = bisect.bisect_right(task.finishes, t)
    if t < task.queue_ends:
        status = TaskStatus.QUEUE
    elif t >= task.ends:
        status = TaskStatus.FAIL if task.fails else TaskStatus.SUCCESS
    else:
        status = TaskStatus.PROCESSING
    rounds = tuple(Round(n, f"prompt {n}", _SAMPLE, success=True) for n in range(1, done + 1))
    return TaskResult(
        task_id=task_id,
        status=status,
        raw_status=status.value,
        rounds=rounds,
        max_rounds=max_rounds,
    )


@attrs.frozen
class Outcome:
    polls: int
    lag: float
    looks: tuple[float, ...]
    delays: tuple[float, ...]


def simulate(
    schedule: PollSchedule,
    task: FakeTask,
    *,
    task_id: str = "t",
    mode: PollMode = PollMode.COMPLETION,
    max_rounds: int | None = None,
    model: str | None = MODEL,
    latency: float = 0.0,
    limit: int = 10_000,
) -> Outcome:
    """Poll ``task`` from t = 0 as the polling layer would, until it ends."""
    t = 0.0
    looks: list[float] = []
    delays: list[float] = []
    seen: list[float] = []
    started_at: float | None = None
    while len(looks) < limit:
        result = snapshot(task, task_id, t, max_rounds)
        looks.append(t)
        if started_at is None and result.status is not TaskStatus.QUEUE:
            started_at = t
        while len(seen) < len(result.completed_rounds):
            seen.append(t)
        state = PollState(
            task_id=task_id,
            polls=len(looks),
            elapsed=t,
            last=result,
            max_rounds=max_rounds,
            model=model,
            round_seen_at=tuple(seen),
            started_at=started_at,
            mode=mode,
        )
        if result.is_terminal:
            finished = getattr(schedule, "task_finished", None)
            if finished is not None:
                finished(state)
            return Outcome(len(looks), t - task.ends, tuple(looks), tuple(delays))
        delay = schedule.next_delay(state)
        delays.append(delay)
        t += delay + latency
    raise AssertionError(f"no end after {limit} looks")


def run_many(
    schedule: PollSchedule,
    *,
    tasks: int,
    seed: int = 0,
    mode: PollMode = PollMode.COMPLETION,
    rounds: int = 5,
    round_time: float = 1.0,
    jitter: float = 0.3,
    queue: float = 0.0,
    known_rounds: bool = True,
    model: str | None = MODEL,
) -> list[Outcome]:
    """Run ``tasks`` tasks one after the other through one schedule (so it can learn)."""
    rng = random.Random(seed)
    out = []
    for i in range(tasks):
        task = make_task(rng, rounds=rounds, round_time=round_time, jitter=jitter, queue=queue)
        out.append(
            simulate(
                schedule,
                task,
                task_id=f"task-{i}",
                mode=mode,
                max_rounds=rounds if known_rounds else None,
                model=model,
            )
        )
    return out


def adaptive(seed: int = 1, **changes: object) -> AdaptiveSchedule:
    """An adaptive schedule with a seeded RNG and a fallback scaled to 1-second rounds."""
    rng = random.Random(seed)
    fields: dict[str, object] = {
        "rng": rng,
        "fallback": ExponentialSchedule(initial=0.1, factor=1.5, maximum=1.0, rng=rng),
        "min_delay": 0.001,
    }
    fields.update(changes)
    return AdaptiveSchedule(**fields)  # type: ignore[arg-type]


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values)


def state_at(
    t: float,
    *,
    polls: int,
    status: TaskStatus = TaskStatus.PROCESSING,
    seen: tuple[float, ...] = (),
    started_at: float | None = 0.0,
    task_id: str = "t",
    max_rounds: int | None = 5,
    model: str | None = MODEL,
    mode: PollMode = PollMode.PROGRESS,
) -> PollState:
    """A hand-made state for table-driven checks."""
    rounds = tuple(Round(n, "p", _SAMPLE, success=True) for n in range(1, len(seen) + 1))
    last = TaskResult(task_id=task_id, status=status, raw_status=status.value, rounds=rounds)
    return PollState(
        task_id=task_id,
        polls=polls,
        elapsed=t,
        last=last,
        max_rounds=max_rounds,
        model=model,
        round_seen_at=seen,
        started_at=started_at if status is not TaskStatus.QUEUE else None,
        mode=mode,
    )


# -- the maths underneath --------------------------------------------------------------------


def expected_lag(look: float, mean: float, sd: float, now: float) -> float:
    """E[(look - T)+ | T > now] for a normal T, by brute-force integration."""
    dist = statistics.NormalDist(mean, sd)
    steps = 20_000
    width = (look - now) / steps
    total = sum(
        (look - (now + (i + 0.5) * width)) * dist.pdf(now + (i + 0.5) * width) * width
        for i in range(steps)
    )
    return total / (1 - dist.cdf(now))


@pytest.mark.parametrize(
    ("mean", "sd", "now", "budget"),
    [
        pytest.param(10.0, 1.0, 0.0, 0.1, id="far-ahead"),
        pytest.param(10.0, 1.0, 9.5, 0.1, id="just-before"),
        pytest.param(10.0, 1.0, 11.0, 0.1, id="late"),
        pytest.param(10.0, 0.05, 0.0, 0.1, id="narrow"),
        pytest.param(10.0, 3.0, 0.0, 0.5, id="wide"),
    ],
)
def test_look_after_spends_exactly_the_lag_budget(
    mean: float, sd: float, now: float, budget: float
) -> None:
    """The look time makes the expected lag (if the event is in by then) equal the budget."""
    look = look_after(mean, sd, now, budget)
    assert look > now
    assert expected_lag(look, mean, sd, now) == pytest.approx(budget, rel=1e-3)


@pytest.mark.parametrize(
    ("mean", "sd", "lo", "hi"),
    [
        pytest.param(0.0, 1.0, -math.inf, math.inf, id="no-bracket"),
        pytest.param(0.0, 1.0, 0.0, math.inf, id="upper-half"),
        pytest.param(0.0, 1.0, -0.5, 0.5, id="narrow-bracket"),
        pytest.param(0.0, 1.0, 30.0, 31.0, id="far-tail-bracket"),
        pytest.param(0.0, 1.0, 50.0, math.inf, id="hopelessly-late"),
        pytest.param(5.0, 0.0, 6.0, 7.0, id="no-spread"),
    ],
)
def test_truncated_belief_stays_inside_its_bracket(
    mean: float, sd: float, lo: float, hi: float
) -> None:
    """An observation bracket always pulls the belief inside it, with a finite spread."""
    m, s = truncate_normal(mean, sd, lo, hi)
    assert lo <= m <= hi
    assert 0.0 <= s < math.inf


def test_truncated_normal_moments_are_exact() -> None:
    """The upper half of a standard normal has mean sqrt(2/pi) and variance 1 - 2/pi."""
    m, s = truncate_normal(0.0, 1.0, 0.0, math.inf)
    assert m == pytest.approx(math.sqrt(2 / math.pi))
    assert s**2 == pytest.approx(1 - 2 / math.pi)


@pytest.mark.parametrize("now", [-5.0, 0.0, 3.0, 40.0])
def test_looks_are_never_in_the_past(now: float) -> None:
    """Given that the event has not happened by now, the next look comes after now."""
    assert look_after(0.0, 1.0, now, 0.1) > now


# -- behaviours ------------------------------------------------------------------------------


def test_first_look_is_immediate_and_knows_nothing_falls_back() -> None:
    """Before any look the delay is `first` (0); a queued task of an unknown model falls back."""
    fallback = FixedSchedule(interval=0.25)
    schedule = adaptive(fallback=fallback)
    assert schedule.next_delay(state_at(0.0, polls=0, status=TaskStatus.QUEUE)) == 0.0
    queued = state_at(0.01, polls=1, status=TaskStatus.QUEUE)
    assert schedule.next_delay(queued) == 0.25


def test_a_model_never_seen_polls_like_the_fallback_until_its_rounds_teach_it() -> None:
    """With no knowledge the first task's early looks follow the capped exponential fallback."""
    rng = random.Random(3)
    task = make_task(rng, rounds=6, queue=0.5)
    fallback = ExponentialSchedule(initial=0.1, factor=1.5, maximum=1.0, jitter=0.0)
    schedule = adaptive(fallback=fallback)
    outcome = simulate(schedule, task, mode=PollMode.PROGRESS, max_rounds=6)
    reference = simulate(fallback, task, mode=PollMode.PROGRESS, max_rounds=6)
    # While queued nothing is known, so both make the same first looks.
    assert outcome.delays[:3] == reference.delays[:3]
    # Once the task's own rounds are measured, it looks less often than the fallback.
    assert outcome.polls < reference.polls


@pytest.mark.parametrize("mode", [PollMode.PROGRESS, PollMode.COMPLETION])
@pytest.mark.parametrize("known_rounds", [True, False], ids=["max_rounds", "no-max_rounds"])
@pytest.mark.parametrize("model", [MODEL, None], ids=["model", "no-model"])
def test_delays_are_never_negative_and_every_task_ends(
    mode: PollMode, known_rounds: bool, model: str | None
) -> None:
    """Whatever is known, every delay is >= 0 and every task is seen to its end."""
    schedule = adaptive()
    outcomes = run_many(
        schedule, tasks=20, mode=mode, queue=0.5, known_rounds=known_rounds, model=model
    )
    assert all(d >= 0 for o in outcomes for d in o.delays)
    assert all(o.lag >= 0 for o in outcomes)


def test_learns_round_times_across_tasks_of_one_model() -> None:
    """After a few tasks the model's learnt round time is close to the true one."""
    schedule = adaptive()
    run_many(schedule, tasks=8, mode=PollMode.PROGRESS, round_time=2.0, queue=1.0)
    learnt = schedule.round_seconds(MODEL)
    assert learnt is not None
    assert learnt == pytest.approx(2.0, rel=0.15)
    # The start is rarely looked at, so the queue is learnt only roughly (it takes up
    # what the rounds do not explain of the time to round 1).
    assert schedule.queue_seconds() == pytest.approx(1.0, rel=0.5)
    assert schedule.round_seconds("another-model") is None


def test_later_tasks_of_a_learnt_model_cost_fewer_looks() -> None:
    """A task of a model seen before costs fewer looks than the model's very first task."""
    outcomes = run_many(adaptive(), tasks=30, mode=PollMode.PROGRESS, queue=0.5)
    assert mean([o.polls for o in outcomes[20:]]) < outcomes[0].polls


def test_models_are_learnt_separately() -> None:
    """Rounds of a slow model do not move the estimate of a fast one."""
    schedule = adaptive()
    run_many(schedule, tasks=6, mode=PollMode.PROGRESS, round_time=1.0, model="fast")
    run_many(schedule, tasks=6, mode=PollMode.PROGRESS, round_time=4.0, model="slow", seed=9)
    assert schedule.round_seconds("fast") == pytest.approx(1.0, rel=0.15)
    assert schedule.round_seconds("slow") == pytest.approx(4.0, rel=0.15)


def test_outliers_do_not_move_the_estimate() -> None:
    """One task with rounds ten times slower barely moves a well-learnt median."""
    schedule = adaptive()
    run_many(schedule, tasks=10, mode=PollMode.PROGRESS)
    before = schedule.round_seconds(MODEL)
    run_many(schedule, tasks=1, mode=PollMode.PROGRESS, round_time=10.0, seed=5)
    after = schedule.round_seconds(MODEL)
    assert before is not None
    assert after == pytest.approx(before, rel=0.1)


def test_a_task_is_counted_once_however_often_it_is_shown() -> None:
    """Asking twice about the same poll does not record its rounds twice."""
    schedule = adaptive()
    seen = (1.0, 2.0, 3.0)
    for polls, t in enumerate((0.5, 1.0, 1.9, 2.0, 2.9, 3.0), start=1):
        state = state_at(t, polls=polls, seen=tuple(s for s in seen if s <= t))
        schedule.next_delay(state)
        schedule.next_delay(state)
    entry = schedule._models[MODEL]
    summary = entry.later.summary()
    assert summary is not None
    assert summary[2] == 2  # rounds 2 and 3: one sample each
    assert summary[0] == pytest.approx(1.0, abs=0.1)


def test_finished_tasks_are_forgotten_and_memory_is_bounded() -> None:
    """A terminal snapshot drops the task's track, and at most max_tasks are kept."""
    schedule = adaptive(max_tasks=3)
    run_many(schedule, tasks=5, mode=PollMode.PROGRESS)
    assert len(schedule._tasks) == 0
    for i in range(10):
        schedule.next_delay(state_at(0.0, polls=1, task_id=f"open-{i}", status=TaskStatus.QUEUE))
    assert len(schedule._tasks) == 3


def test_a_failed_task_teaches_nothing_about_its_end() -> None:
    """A task that fails mid-round adds no sample for the interrupted round."""
    schedule = adaptive()
    task = FakeTask(queue_ends=0.0, finishes=(0.3, 1.3, 1.5), fails=True)
    simulate(schedule, task, mode=PollMode.PROGRESS, max_rounds=5)
    learnt = schedule.round_seconds(MODEL)
    assert learnt is None or learnt == pytest.approx(1.0, abs=0.2)


@pytest.mark.parametrize("jitter", [0.0, 0.1, 0.3])
def test_progress_mode_looks_about_once_per_round(jitter: float) -> None:
    """Warmed up, progress mode spends little more than one look per round.

    The extra looks go to the end of the task, where the caller's await returns.
    """
    outcomes = run_many(adaptive(), tasks=40, mode=PollMode.PROGRESS, rounds=8, jitter=jitter)
    warm = outcomes[10:]
    per_round = mean([o.polls for o in warm]) / 8
    assert per_round <= {0.0: 1.7, 0.1: 1.7, 0.3: 2.0}[jitter]
    assert mean([o.lag for o in warm]) <= 0.15


def test_progress_mode_sees_each_round_soon_after_it_lands() -> None:
    """In progress mode the look that first shows a round comes soon after it finished."""
    schedule = adaptive()
    rng = random.Random(11)
    run_many(schedule, tasks=10, mode=PollMode.PROGRESS, jitter=0.1)
    task = make_task(rng, rounds=6, jitter=0.1)
    outcome = simulate(schedule, task, mode=PollMode.PROGRESS, max_rounds=6)
    lags = []
    for finish in task.finishes:
        first_look = min(t for t in outcome.looks if t >= finish)
        lags.append(first_look - finish)
    assert max(lags) <= 0.5


def test_completion_mode_looks_less_than_progress_mode() -> None:
    """Only the result wanted: completion mode makes fewer looks, middle rounds are skipped."""
    progress = run_many(adaptive(), tasks=40, mode=PollMode.PROGRESS, rounds=8, queue=0.5)
    completion = run_many(adaptive(), tasks=40, mode=PollMode.COMPLETION, rounds=8, queue=0.5)
    assert mean([o.polls for o in completion[10:]]) < mean([o.polls for o in progress[10:]])


def test_completion_mode_beats_a_fixed_interval() -> None:
    """Against 302.AI's 5 s interval (1/6 of a 30 s round): under half the looks, no more lag."""
    fixed = run_many(FixedSchedule(interval=1 / 6), tasks=60, queue=0.5)
    smart = run_many(adaptive(), tasks=60, queue=0.5)[10:]
    assert mean([o.polls for o in smart]) < 0.5 * mean([o.polls for o in fixed])
    assert mean([o.lag for o in smart]) <= mean([o.lag for o in fixed[10:]])


def test_works_without_max_rounds() -> None:
    """Not knowing how many rounds come, completion mode follows the rounds one by one.

    Any round may be the last, so the end is noticed about as late as a middle round.
    """
    outcomes = run_many(adaptive(), tasks=30, rounds=6, known_rounds=False)
    warm = outcomes[10:]
    assert mean([o.polls for o in warm]) <= 2.0 * 6
    assert mean([o.lag for o in warm]) <= 0.5


def test_all_rounds_in_but_not_ended_looks_again_soon_and_backs_off() -> None:
    """When every round is in but the status lags, looks come soon, then spread out."""
    schedule = adaptive(jitter=0.0)
    run_many(schedule, tasks=5, mode=PollMode.PROGRESS)
    seen = (0.33, 1.33, 2.33, 3.33, 4.33)
    delays = [
        schedule.next_delay(state_at(4.4 + 0.2 * i, polls=6 + i, seen=seen, task_id="slow-end"))
        for i in range(4)
    ]
    assert 0 < delays[0] <= 0.5
    assert delays == sorted(delays)


def test_a_late_task_is_looked_at_less_and_less_often() -> None:
    """A round far later than predicted gets gently growing gaps, never a burst of looks."""
    schedule = adaptive(jitter=0.0)
    run_many(schedule, tasks=10, mode=PollMode.PROGRESS)
    task = FakeTask(queue_ends=0.0, finishes=(0.33, 1.33, 12.0, 13.0, 14.0))
    outcome = simulate(schedule, task, task_id="stuck", mode=PollMode.PROGRESS, max_rounds=5)
    stuck = [d for t, d in zip(outcome.looks, outcome.delays, strict=False) if 3.0 < t < 12.0]
    assert min(stuck) >= 0.1
    assert stuck[-1] > stuck[0]
    assert len(stuck) <= 20


def test_deterministic_under_a_seeded_rng() -> None:
    """The same seed gives the same delays, look for look."""

    def run() -> list[tuple[float, ...]]:
        return [o.delays for o in run_many(adaptive(seed=42), tasks=5, queue=0.5)]

    assert run() == run()


def test_a_new_wait_on_the_same_task_starts_a_new_track() -> None:
    """Waiting again on a task (polls restart at 1) does not mix the two waits' clocks."""
    schedule = adaptive()
    run_many(schedule, tasks=5, mode=PollMode.PROGRESS)
    schedule.next_delay(state_at(0.0, polls=1, seen=(0.0, 0.0), task_id="again"))
    schedule.next_delay(state_at(0.8, polls=2, seen=(0.0, 0.0, 0.8), task_id="again"))
    before = schedule._models[MODEL].later.summary()
    delay = schedule.next_delay(state_at(0.0, polls=1, seen=(0.0,) * 3, task_id="again"))
    assert delay >= 0
    assert schedule._models[MODEL].later.summary() == before


@pytest.mark.parametrize(
    "bad",
    [
        {"progress_lag": 0.0},
        {"completion_lag": -1.0},
        {"step": 0.0},
        {"jitter": 1.0},
        {"max_delay": 0.0},
        {"window": 0},
    ],
    ids=lambda d: next(iter(d)),
)
def test_rejects_nonsense_settings(bad: dict[str, float]) -> None:
    """Settings outside their range fail at construction."""
    with pytest.raises(ValueError, match=next(iter(bad))):
        AdaptiveSchedule(**bad)  # type: ignore[arg-type]


def test_is_a_poll_schedule() -> None:
    """It satisfies the PollSchedule protocol, so the client accepts it as `schedule=`."""
    assert isinstance(AdaptiveSchedule(), PollSchedule)
