"""Review of the first-wave sleep rules of AdaptiveSchedule (review5): failing cases.

Each test drives the schedule directly with PollState, as tests/test_adaptive.py does,
and holds a behaviour the change should keep: a task that nobody can wake is not put
to sleep for 64 times its time in the stage.
"""

from __future__ import annotations

import functools
import random

import pytest
from spo_async.polling import AdaptiveSchedule, PollMode, PollState

from tests.test_adaptive import FakeTask, adaptive, make_task, processing, run_wave, snapshot


def searching(task_id: str, t: float, polls: int, model: str = "new") -> PollState:
    """A progress-mode look at a task of a model never seen, before round 1 ends."""
    return PollState(
        task_id=task_id,
        polls=polls,
        elapsed=t,
        last=processing(task_id),
        model=model,
        started_at=0.0,
        max_rounds=4,
        mode=PollMode.PROGRESS,
        submitted_at=0.0,
    )


NAMES = [f"t{i}" for i in range(8)]


def first_wave(schedule: AdaptiveSchedule, model: str = "new") -> dict[str, float]:
    """A scout and eight tasks of ``model`` looked at twice; their second delays."""
    for name in ["scout", *NAMES]:
        schedule.next_delay(searching(name, 0.5, 1, model))
    return {name: schedule.next_delay(searching(name, 1.0, 2, model)) for name in ["scout", *NAMES]}


def test_a_wave_whose_waits_keep_no_wake_is_not_put_to_sleep_by_another_wave() -> None:
    """Tasks whose waits never kept a wake look four times more rarely, not 64 times.

    ``_wakes_kept`` is one flag for the whole schedule: one wait of another model that
    kept a wake makes every later first wave sleep as if it could be woken, though
    nothing will wake those waits (a loop of the user's own over the public
    ``next_delay``, or a poll loop whose ``wake_on_news`` was switched off).
    """
    schedule = AdaptiveSchedule(rng=random.Random(1))
    other = searching("elsewhere", 1.0, 2, model="other")
    schedule.next_delay(searching("elsewhere", 0.5, 1, model="other"))
    schedule.next_delay(other)
    assert schedule.wake_on_news(other, lambda: None)  # another model's wait kept a wake
    delays = first_wave(schedule)  # these waits never offer a wake
    assert max(delays.values()) <= 3.0 + 1e-9, delays


def test_when_the_last_task_searching_beside_the_scout_goes_the_sleepers_are_woken() -> None:
    """Once only the scout searches, the tasks asleep on the searchers plan again.

    ``others_may_sleep`` turns False when the searchers beside the scout are all
    dropped (cancelled, or failed), by its docstring because "a scout alone is too thin
    a thread to hang a wave on"; yet the tasks already asleep for 63 s are not woken,
    so they keep that sleep and hang on the scout alone.
    """
    schedule = AdaptiveSchedule(rng=random.Random(1))
    woken: list[str] = []
    for name in ["scout", *NAMES]:
        schedule.next_delay(searching(name, 0.5, 1))
    delays = {}
    for name in ["scout", *NAMES]:
        state = searching(name, 1.0, 2)
        delays[name] = schedule.next_delay(state)
        schedule.wake_on_news(state, functools.partial(woken.append, name))
    # The first wait kept a wake only after its delay was planned: ask the others again.
    searchers = [n for n in NAMES if delays[n] == pytest.approx(1.0)]
    sleepers = [n for n in NAMES if n not in searchers]
    assert searchers, "seed must draw a searcher"
    woken.clear()
    for name in sleepers:
        state = searching(name, 1.0, 2)
        assert schedule.next_delay(state) == pytest.approx(63.0)
        schedule.wake_on_news(state, functools.partial(woken.append, name))
    for name in searchers:
        schedule.forget(name)  # their waits were cancelled
    assert set(sleepers) <= set(woken)  # (a wake without news costs the others nothing)


class Scripted(random.Random):
    """A Random whose ``random()`` answers from a script, then 0.5."""

    def __init__(self, script: list[float]) -> None:
        super().__init__(0)
        self.script = script

    def random(self) -> float:
        return self.script.pop(0) if self.script else 0.5


def test_a_scout_drawn_to_search_is_not_a_task_searching_beside_it() -> None:
    """With only the scout searching, the other task of a wave of two looks 4x, not 64x.

    Each task draws ``searches`` at its first look, the scout too; ``searchers`` then
    holds the scout itself, and ``others_may_sleep`` ("only while some task searches
    beside the scout") says yes with nobody beside it.
    """
    # _Track draws phase, explore, searches: the scout searches, the other does not.
    schedule = AdaptiveSchedule(rng=Scripted([0.5, 0.5, 0.1, 0.5, 0.5, 0.9]))
    schedule.next_delay(searching("scout", 0.5, 1))
    schedule.next_delay(searching("other", 0.5, 1))
    scout = searching("scout", 1.0, 2)
    assert schedule.next_delay(scout) == pytest.approx(1.0)
    assert schedule.wake_on_news(scout, lambda: None)
    assert schedule.next_delay(searching("other", 1.0, 2)) == pytest.approx(3.0)


def wave_of_three(order: tuple[str, ...]) -> tuple[AdaptiveSchedule, list[str]]:
    """A first wave of three in progress mode whose waits take wakes, each looked at twice.

    "scout" searches (and not beside itself), "beside" searches beside it, "asleep" does
    not; every later draw is 0.5 (no search). ``order`` is the order of the second looks.
    """
    schedule = AdaptiveSchedule(rng=Scripted([0.5, 0.5, 0.9, 0.5, 0.5, 0.1, 0.5, 0.5, 0.9]))
    woken: list[str] = []
    for name in ("scout", "beside", "asleep"):
        schedule.next_delay(searching(name, 0.5, 1))
    for name in order:
        state = searching(name, 1.0, 2)
        schedule.next_delay(state)
        schedule.wake_on_news(state, functools.partial(woken.append, name))
    return schedule, woken


def test_a_searcher_woken_because_the_scout_left_does_not_look_later_than_planned() -> None:
    """A wake moves a look earlier or keeps it: never later (see "keeps the plan").

    The first task to re-plan after the scout's wait ends takes the search over "from
    now": a task that searched beside the scout, due at 2.0, is put back to 3.0.
    """
    schedule, _ = wave_of_three(("beside", "scout", "asleep"))
    planned = 1.0 + schedule.next_delay(searching("beside", 1.0, 2))  # the same plan
    assert planned == pytest.approx(2.0)
    schedule.forget("scout")  # its wait was cancelled at 1.5
    again = 1.5 + schedule.next_delay(searching("beside", 1.5, 2))
    assert again <= planned + 1e-9


def test_a_cold_wave_with_a_queue_in_progress_mode_sees_every_round_within_a_few_rounds() -> None:
    """Twenty queued tasks of a model never seen: no task lags its rounds by many rounds.

    With a queue, a start is bracketed only as closely as the doubling looks: no
    task's round 1 is precise enough to mark, so no mark ever wakes the tasks asleep
    for 64 times their time in the stage (about 25 s here, with 2 s rounds). Before
    the change the worst task of this wave lagged 0.6 round (1.03 over six seeds);
    now 31 rounds: it first looks again after all its rounds have ended.
    """
    rng = random.Random(2)
    tasks = [make_task(rng, round_time=2.0, queue=10.0 * rng.random()) for _ in range(20)]
    outcomes = run_wave(adaptive(2), tasks, mode=PollMode.PROGRESS)
    assert max(outcome.lag for outcome in outcomes) < 3 * 2.0


def test_the_first_task_of_a_first_wave_to_finish_wakes_the_tasks_asleep() -> None:
    """When a task that is not the scout finishes, the model is known: the sleepers plan again.

    The first wave ends (``wake_on_news`` keeps no more wakes), and the tasks asleep
    for 64 times their time in the stage, on a mark that may never come, are left
    asleep: only a scout's end wakes them (``_Model.drop``).
    """
    schedule, woken = wave_of_three(("scout", "beside", "asleep"))
    assert schedule.next_delay(searching("asleep", 1.0, 2)) == pytest.approx(63.0)
    done = FakeTask(0.0, (1.5, 3.0, 4.5, 6.0))
    finished = PollState(
        task_id="beside",
        polls=3,
        elapsed=6.5,
        last=snapshot(done, "beside", 6.5),
        model="new",
        round_seen_at=(6.5,) * 4,
        started_at=0.0,
        max_rounds=4,
        mode=PollMode.PROGRESS,
        submitted_at=0.0,
    )
    schedule.task_finished(finished)
    assert schedule.round_seconds("new") is not None  # the model is known now
    assert "asleep" in woken


def test_a_completion_wait_of_a_searcher_does_not_leave_the_wave_asleep_on_nobody() -> None:
    """A task's completion wait beside its progress wait does not stop its search.

    The completion wait's first look (fewer polls) rebuilds the task's track, which
    draws ``searches`` again (no, here): the task stays in ``_Model.searchers``, so the
    others sleep 64 times on, but its progress wait now sleeps 64 times too, and
    nobody beside the scout searches for round 1 any more.
    """
    schedule, _ = wave_of_three(("scout", "beside", "asleep"))
    assert schedule.next_delay(searching("asleep", 1.0, 2)) == pytest.approx(63.0)
    completion = PollState(
        task_id="beside",
        polls=1,
        elapsed=1.2,
        last=processing("beside"),
        model="new",
        started_at=0.0,
        max_rounds=4,
        mode=PollMode.COMPLETION,
        submitted_at=0.0,
    )
    schedule.next_delay(completion)  # a second wait of "beside", for its end
    # The progress wait of "beside" looks again at 2.0: it still searches (doubles).
    assert schedule.next_delay(searching("beside", 2.0, 3)) == pytest.approx(2.0)
