"""A fast, deterministic stand-in for the poll-schedule rows of ``bench/run.py``, for tuning.

Waves of tasks submitted at once, polled on virtual time the way the polling layer
does (ask the schedule for a delay, look, build a ``PollState``, repeat), with the
bench's tasks: 4 rounds, round 1 a third of a round, each task's pace drawn within
±30 % and kept for all its rounds, no queue unless ``--queue``, a GET that takes a
small share of a round. Every request passes a rough model of the client's default
budget (ten back to back, then 10 per second on the client's clock, doubling while
it holds requests back), which delays the first looks of a cold wave behind its
submits; ``--no-limiter`` leaves it out. No sockets and no sleeps: a few seconds for
everything. Its figures guide tuning only; the figures reported come from
``bench/run.py``, which runs the real client against the emulator.

Below each scale, the first task of a new process that reads a cache file: written by
a wave of 20 tasks (``second process``: a batch run, then ``spo-async optimize``), and
by one task alone (``after one task``: ``spo-async optimize`` run twice).

    python bench/simulate.py                  # default and baseline, 2 s and 30 s rounds
    python bench/simulate.py --seeds 20 --queue 0.5
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import random
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _baseline import RoundAware
from spo_async import Round, Sample, TaskResult, TaskStatus
from spo_async.polling import AdaptiveSchedule, PollMode, PollState

from _client import BASELINE

MODEL = "claude-3-5-sonnet-20240620"
_SAMPLE = (Sample("q", "a"),)


class Task:
    """One task's true timeline, in virtual seconds."""

    def __init__(self, submitted: float, pace: float, rounds: int, queue: float) -> None:
        self.submitted = submitted
        self.start = submitted + queue
        self.finishes: list[float] = []
        t = self.start
        for n in range(1, rounds + 1):
            t += pace / 3 if n == 1 else pace
            self.finishes.append(t)

    @property
    def ends(self) -> float:
        return self.finishes[-1]

    def shift(self, late: float) -> None:
        """The submit left ``late`` seconds later than planned (held by the budget)."""
        self.submitted += late
        self.start += late
        self.finishes = [f + late for f in self.finishes]

    def snapshot(self, task_id: str, t: float) -> TaskResult:
        done = bisect.bisect_right(self.finishes, t)
        if t < self.start:
            status = TaskStatus.QUEUE
        elif t >= self.ends:
            status = TaskStatus.SUCCESS
        else:
            status = TaskStatus.PROCESSING
        rounds = tuple(Round(n, "p", _SAMPLE, success=True) for n in range(1, done + 1))
        return TaskResult(task_id=task_id, status=status, raw_status=status.value, rounds=rounds)


class Budget:
    """The client's default request budget, roughly (see ``spo_async/_limiter.py``)."""

    def __init__(self, rate: float = 10.0, burst: float = 10.0, grow_every: float = 0.1) -> None:
        self.rate, self.burst, self.grow_every = rate, burst, grow_every
        self.next_at = self.grown_at = 0.0
        self.binding = False

    def send(self, t: float) -> float:
        """When a request that wants to leave at ``t`` leaves (in order of arrival)."""
        go = max(t, self.next_at - (self.burst - 1.0) / self.rate)
        interval = 1.0 / self.rate
        self.next_at = (self.next_at if go - self.next_at <= interval / 2 else go) + interval
        self.binding = self.binding or go > t
        if go - self.grown_at >= self.grow_every:
            self.grown_at = max(self.grown_at + self.grow_every, go - self.grow_every)
            if self.binding:  # the requests already spaced ahead are re-spaced at the new rate
                self.next_at = go + max(self.next_at - go, 0.0) / 2.0
                self.rate *= 2.0
            self.binding = False
        return go


class NoBudget:
    def send(self, t: float) -> float:
        return t


class _Wait:
    __slots__ = ("began", "last", "polls", "seen", "started")

    def __init__(self, began: float) -> None:
        self.began = began
        self.polls = 0
        self.seen: list[float] = []
        self.started: float | None = None
        self.last: TaskResult | None = None


def _state(w: _Wait, name: str, now: float, mode: PollMode, task: Task) -> PollState:
    return PollState(
        task_id=name,
        polls=w.polls,
        elapsed=now - w.began,
        last=w.last,
        max_rounds=len(task.finishes),
        model=MODEL,
        round_seen_at=tuple(w.seen),
        started_at=w.started,
        mode=mode,
        submitted_at=task.submitted - w.began,
    )


def run_wave(
    schedule: Any,
    tasks: list[Task],
    names: list[str],
    *,
    mode: PollMode,
    latency: float,
    budget: Any,
) -> list[dict[str, Any]]:
    """Poll every task of a wave on one virtual clock; GETs and lag (seconds) per task.

    Each task's record: ``gets``, ``lag`` (as in the bench) and ``each``, the lag of
    every round it saw, for looking into where a schedule spends its lag.

    Like the polling layer, it offers the schedule a wake before each sleep
    (``wake_on_news``); a woken task is asked for its delay again, from that moment.
    """
    for task in tasks:  # the submits go through the budget first
        task.shift(budget.send(task.submitted) - task.submitted)
    due: list[tuple[float, int, int]] = []
    planned = [0] * len(tasks)  # a woken task's earlier plan is stale
    woken: list[int] = []
    offer = getattr(schedule, "wake_on_news", None)
    waits = [_Wait(task.submitted + latency) for task in tasks]

    def sleep(i: int, now: float, delay: float) -> None:
        planned[i] += 1
        heapq.heappush(due, (now + delay, i, planned[i]))
        if offer is not None:
            offer(_state(waits[i], names[i], now, mode, tasks[i]), lambda: woken.append(i))

    for i, (task, name, w) in enumerate(zip(tasks, names, waits, strict=True)):
        first = schedule.next_delay(_state(w, name, w.began, mode, task))
        heapq.heappush(due, (w.began + first, i, planned[i]))
    out: list[dict[str, Any]] = [{} for _ in tasks]
    while due:
        t, i, plan = heapq.heappop(due)
        if plan != planned[i]:
            continue
        task, name, w = tasks[i], names[i], waits[i]
        t = budget.send(t) + latency
        w.last = result = task.snapshot(name, t - latency / 2)  # answered mid-way
        w.polls += 1
        if w.started is None and result.status is not TaskStatus.QUEUE:
            w.started = t - w.began
        w.seen += [t - w.began] * (len(result.completed_rounds) - len(w.seen))
        state = _state(w, name, t, mode, task)
        if not result.is_terminal:
            sleep(i, t, schedule.next_delay(state))
        else:
            planned[i] += 1
            finished = getattr(schedule, "task_finished", None)
            if finished is not None:
                finished(state)
            each = [w.began + s - f for s, f in zip(w.seen, task.finishes, strict=True)]
            lag = t - task.ends if mode is PollMode.COMPLETION else statistics.fmean(each)
            out[i] = {"gets": w.polls, "lag": lag, "each": each}
        while woken:  # the waits this look woke plan again, from now
            k = woken.pop()
            if not out[k]:
                sleep(k, t, schedule.next_delay(_state(waits[k], names[k], t, mode, tasks[k])))
    return out


def waves(
    schedule: Any,
    *,
    seed: int,
    scale: float,
    mode: PollMode,
    queue: float = 0.0,
    budget: bool = True,
    count: int = 3,
    tasks: int = 20,
) -> list[list[dict[str, float]]]:
    """``count`` waves of ``tasks`` tasks on one client; lags in rounds."""
    rng = random.Random(seed)
    gate = Budget() if budget else NoBudget()
    t, out = 0.0, []
    for wave in range(count):
        batch = [Task(t, scale * rng.uniform(0.7, 1.3), 4, queue * scale) for _ in range(tasks)]
        names = [f"w{wave}t{i}" for i in range(tasks)]
        res = run_wave(schedule, batch, names, mode=mode, latency=0.002 * scale, budget=gate)
        out.append([{"gets": r["gets"], "lag": r["lag"] / scale} for r in res])
        t = max(task.ends for task in batch) + 0.05 * scale
    return out


def second_process(
    *,
    seed: int,
    scale: float,
    mode: PollMode,
    budget: bool = True,
    learnt: int = 20,
    singles: int = 3,
) -> list[Any]:
    """A wave of ``learnt`` tasks with a cache file, then single tasks on new schedules reading it.

    The defaults are a batch run, then three runs of ``spo-async optimize``;
    :func:`after_one_task` is ``spo-async optimize`` run twice.
    """
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "schedule.json"
        first = AdaptiveSchedule(persist=cache, rng=random.Random(seed))
        batch = [Task(0.0, scale * rng.uniform(0.7, 1.3), 4, 0.0) for _ in range(learnt)]
        gate = Budget() if budget else NoBudget()
        names = [f"a{i}" for i in range(learnt)]
        run_wave(first, batch, names, mode=mode, latency=0.002 * scale, budget=gate)
        t, out = max(task.ends for task in batch) + 0.05 * scale, []
        for k in range(singles):
            fresh = AdaptiveSchedule(persist=cache, rng=random.Random(seed * 10 + k))
            task = Task(t, scale * rng.uniform(0.7, 1.3), 4, 0.0)
            gate = Budget() if budget else NoBudget()
            res = run_wave(fresh, [task], [f"s{k}"], mode=mode, latency=0.002 * scale, budget=gate)
            out += [{"gets": r["gets"], "lag": r["lag"] / scale} for r in res]
            t = task.ends + 0.05 * scale
    return out


def after_one_task(*, seed: int, scale: float, mode: PollMode, budget: bool = True) -> list[Any]:
    """One task alone with a cache file, then one more on a new schedule reading it."""
    return second_process(seed=seed, scale=scale, mode=mode, budget=budget, learnt=1, singles=1)


def _cell(records: list[dict[str, float]]) -> str:
    gets = statistics.fmean(r["gets"] for r in records)
    lag = statistics.fmean(r["lag"] for r in records)
    return f"{gets:5.2f} / {lag:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--scales", default="2,30", help="round lengths, client seconds")
    parser.add_argument("--queue", type=float, default=0.0, help="queue time, in rounds")
    parser.add_argument("--no-limiter", action="store_true")
    args = parser.parse_args()
    rows: dict[str, Callable[[PollMode, int], Any]] = {
        "default": lambda _mode, seed: AdaptiveSchedule(rng=random.Random(seed)),
        "baseline": lambda mode, _seed: RoundAware(**BASELINE[mode.value]),
    }
    budget = not args.no_limiter
    print("GETs per task / mean lag in rounds; cold: the first wave, warm: the third")
    for scale in (float(s) for s in args.scales.split(",")):
        print(f"\nrounds of {scale:g} s | completion cold | warm | progress cold | warm")
        for row, make in rows.items():
            cells = []
            for mode in PollMode.COMPLETION, PollMode.PROGRESS:
                cold: list[dict[str, float]] = []
                warm: list[dict[str, float]] = []
                for seed in range(args.seeds):
                    res = waves(
                        make(mode, seed),
                        seed=seed,
                        scale=scale,
                        mode=mode,
                        queue=args.queue,
                        budget=budget,
                    )
                    cold += res[0]
                    warm += res[-1]
                cells += [_cell(cold), _cell(warm)]
            print(f"{row:16} | " + " | ".join(cells))
        for row, single in (("second process", second_process), ("after one task", after_one_task)):
            cells = []
            for mode in PollMode.COMPLETION, PollMode.PROGRESS:
                singles: list[dict[str, float]] = []
                for seed in range(args.seeds):
                    singles += single(seed=seed, scale=scale, mode=mode, budget=budget)
                cells.append(_cell(singles))
            print(f"{row:16} | completion {cells[0]} | progress {cells[1]}")


if __name__ == "__main__":
    main()
