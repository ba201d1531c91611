"""AdaptiveSchedule against timelines that break its assumptions: a property test.

Seeded scenarios, each a few waves of tasks on one schedule, on virtual time: tasks
that queue for long and varying times, fail at any round, run a hundred times faster
or slower than the others; models interleaved; rounds from a twentieth of a second
to two hours; waits cancelled; tasks waited twice at once (one wait in each mode,
and one of them not knowing the submit); a cache file half the time. Whatever
happens, the schedule must answer a finite delay, never poll a task in a storm,
see every task that succeeds within a bound of its length, and forget every task
once its waits are over.
"""

from __future__ import annotations

import heapq
import math
import random
from pathlib import Path

import pytest
from spo_async import FailureReason, Round, Sample, TaskResult, TaskStatus
from spo_async.polling import AdaptiveSchedule, PollMode, PollState

_SAMPLE = (Sample("q", "a"),)
#: Rounds of these lengths (seconds), one per scenario.
_SCALES = (0.05, 2.0, 30.0, 600.0, 7200.0)


class _Task:
    """One task's true timeline, in seconds on the scenario's clock."""

    def __init__(self, rng: random.Random, submitted: float, model: str, scale: float) -> None:
        self.model = model
        self.rounds = rng.choice([2, 3, 4, 4, 6, 10])
        queue = rng.choice([0.0, 0.0, 0.0, rng.expovariate(1 / scale), rng.uniform(0, 20 * scale)])
        pace = scale * rng.uniform(0.5, 1.5)
        self.rogue = rng.random() < 0.05  # a hundred times faster or slower than the rest
        if self.rogue:
            pace *= rng.choice([0.01, 100.0])
        self.submitted, self.start = submitted, submitted + queue
        self.finishes: list[float] = []
        t = self.start
        for n in range(1, self.rounds + 1):
            t += pace * rng.uniform(0.9, 1.1) * (1 / 3 if n == 1 else 1)
            self.finishes.append(t)
        self.fails_at: float | None = None
        if rng.random() < 0.15:
            k = rng.randrange(self.rounds)
            self.fails_at = (self.finishes[k - 1] if k else self.start) + 0.1 * pace
        self.ends = self.finishes[-1] if self.fails_at is None else self.fails_at

    def snapshot(self, task_id: str, t: float) -> TaskResult:
        if t < self.start:
            return TaskResult(task_id=task_id, status=TaskStatus.QUEUE, raw_status="queue")
        done = sum(f <= t for f in self.finishes)
        rounds = tuple(Round(n, "p", _SAMPLE, success=True) for n in range(1, done + 1))
        if self.fails_at is not None and t >= self.fails_at:
            error = FailureReason(message="x", raw="x")
            return TaskResult(
                task_id=task_id,
                status=TaskStatus.FAIL,
                raw_status="fail",
                rounds=rounds,
                error=error,
            )
        if t >= self.ends:
            return TaskResult(
                task_id=task_id,
                status=TaskStatus.SUCCESS,
                raw_status="success",
                rounds=rounds,
                best_prompt="p",
                best_round=1,
            )
        status = TaskStatus.PROCESSING
        return TaskResult(task_id=task_id, status=status, raw_status="processing", rounds=rounds)


class _Wait:
    """One wait of a task, as the polling layer runs it: its own clock and count of looks."""

    def __init__(
        self, rng: random.Random, task: _Task, task_id: str, mode: PollMode, scale: float
    ) -> None:
        self.task, self.task_id, self.mode = task, task_id, mode
        self.began = task.submitted + 0.001 * scale
        self.knows_submit = rng.random() < 0.9
        cancel = rng.random() < 0.07
        self.cancel_at = task.submitted + rng.uniform(0, 3) * scale if cancel else None
        self.polls = 0
        self.seen: list[float] = []
        self.started: float | None = None
        self.last: TaskResult | None = None
        self.done = False
        self.lag: float | None = None

    def state(self, now: float) -> PollState:
        return PollState(
            task_id=self.task_id,
            polls=self.polls,
            elapsed=now - self.began,
            last=self.last,
            max_rounds=self.task.rounds,
            model=self.task.model,
            round_seen_at=tuple(self.seen),
            started_at=self.started,
            mode=self.mode,
            submitted_at=self.task.submitted - self.began if self.knows_submit else None,
        )

    def look(self, now: float) -> TaskResult:
        result = self.last = self.task.snapshot(self.task_id, now)
        self.polls += 1
        if self.started is None and result.status is not TaskStatus.QUEUE:
            self.started = now - self.began
        self.seen += [now - self.began] * (len(result.completed_rounds) - len(self.seen))
        return result


def _scenario(seed: int, cache: Path) -> tuple[float, list[_Wait], AdaptiveSchedule]:
    """Run one seeded scenario to the end; its scale, its waits and its schedule."""
    rng = random.Random(seed)
    persist = cache if rng.random() < 0.5 else None
    schedule = AdaptiveSchedule(rng=random.Random(seed), persist=persist)
    scale = rng.choice(_SCALES)
    models = [f"m{i}" for i in range(rng.randint(1, 3))]
    waits: list[_Wait] = []
    t = 0.0
    for wave in range(rng.randint(1, 4)):
        for i in range(rng.choice([1, 2, 3, 5, 20, 60])):
            task = _Task(rng, t + rng.uniform(0, 0.1 * scale), rng.choice(models), scale)
            modes = [rng.choice(list(PollMode))]
            if rng.random() < 0.1:  # waited twice at once, once in each mode
                modes.append(next(m for m in PollMode if m is not modes[0]))
            waits += [_Wait(rng, task, f"w{wave}t{i}", mode, scale) for mode in modes]
        t += rng.choice([0.5, 2.0, 10.0]) * scale

    def ask(wait: _Wait, now: float) -> float:
        delay = schedule.next_delay(wait.state(now))
        assert isinstance(delay, float | int), delay
        assert math.isfinite(delay), (wait.task_id, wait.polls, delay)
        assert delay >= 0, delay
        return delay

    due: list[tuple[float, int, int]] = []
    planned = [0] * len(waits)
    woken: list[int] = []

    def plan(i: int, now: float) -> None:
        planned[i] += 1
        heapq.heappush(due, (now + ask(waits[i], now), i, planned[i]))

    for i, wait in enumerate(waits):
        plan(i, wait.began)
    while due:
        now, i, plan_number = heapq.heappop(due)
        wait = waits[i]
        if plan_number != planned[i] or wait.done:
            continue
        if wait.cancel_at is not None and now > wait.cancel_at:
            wait.done = True  # the polling layer tells the schedule as the wait ends
            schedule.task_finished(wait.state(now))
            continue
        if wait.look(now).is_terminal:
            wait.done, wait.lag = True, now - wait.task.ends
            schedule.task_finished(wait.state(now))
            continue
        assert wait.polls < 5000, f"{wait.task_id} is polled without end"
        plan(i, now)
        schedule.wake_on_news(wait.state(now), lambda i=i: woken.append(i))  # type: ignore[misc]
        while woken:
            k = woken.pop()
            if not waits[k].done:
                plan(k, now)
    return scale, waits, schedule


@pytest.mark.parametrize("seed", range(120))
def test_the_schedule_holds_under_hostile_timelines(seed: int, tmp_path: Path) -> None:
    """Finite delays; no storm of looks; successes seen in time; nothing left behind."""
    scale, waits, schedule = _scenario(seed, tmp_path / "schedule.json")
    for wait in waits:
        task = wait.task
        length = task.ends - task.submitted
        if not task.rogue:  # a task a hundred times slower than the rest may take more
            assert wait.polls <= 200, (wait.task_id, wait.polls, length / scale)
        seen_in_time = (
            wait.lag is None  # cancelled
            or task.rogue
            or task.fails_at is not None  # completion mode looks for the end: by design
            or scale < schedule.floor  # rounds shorter than the search's first gap
            or wait.lag <= 2 * length + 5 * scale
        )
        assert seen_in_time, (wait.task_id, wait.lag, length, scale)
    left = [
        (len(m.searchers), len(m.sleepers), len(m.wakes), len(m.live), len(m.live_firsts))
        for m in schedule._models.values()
    ]
    assert not schedule._tasks
    assert all(sizes == (0, 0, 0, 0, 0) for sizes in left)
