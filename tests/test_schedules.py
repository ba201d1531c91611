"""Poll schedules: pure maps from what is known about a task to the next delay."""

from __future__ import annotations

import random
from typing import Any

import pytest
from spo_async._schedules import as_schedule
from spo_async.polling import ExponentialSchedule, FixedSchedule, PollSchedule, PollState


def state(
    polls: int = 1,
    elapsed: float = 0.0,
    round_seen_at: tuple[float, ...] = (),
    started_at: float | None = None,
) -> PollState:
    return PollState(
        task_id="t",
        polls=polls,
        elapsed=elapsed,
        last=None,
        round_seen_at=round_seen_at,
        started_at=started_at,
    )


# -- FixedSchedule -----------------------------------------------------------------------------


def test_fixed_schedule_defaults_to_the_web_apps_five_seconds() -> None:
    """By default the first look is at once, then every 5 s."""
    schedule = FixedSchedule()
    assert schedule.next_delay(state(polls=0)) == 0.0
    assert [schedule.next_delay(state(polls=n, elapsed=5.0 * n)) for n in (1, 2, 9)] == [5.0] * 3


def test_fixed_schedule_first_delay_is_its_own() -> None:
    """``first`` is the delay before the very first look only."""
    schedule = FixedSchedule(interval=2.0, first=0.25)
    assert schedule.next_delay(state(polls=0)) == 0.25
    assert schedule.next_delay(state(polls=1)) == 2.0


def test_fixed_schedule_jitter_stays_within_bounds() -> None:
    """With jitter j each delay lies in interval * [1 - j, 1 + j], repeatably for a seed."""
    delays = [
        FixedSchedule(interval=4.0, jitter=0.25, rng=random.Random(7)).next_delay(state())
        for _ in range(3)
    ]
    assert len(set(delays)) == 1  # same seed, same draw
    schedule = FixedSchedule(interval=4.0, jitter=0.25, rng=random.Random(7))
    draws = [schedule.next_delay(state()) for _ in range(300)]
    assert all(3.0 <= d <= 5.0 for d in draws)
    assert min(draws) < 3.5
    assert max(draws) > 4.5


def test_fixed_schedule_zero_interval_is_not_jittered() -> None:
    """A zero interval stays zero whatever the jitter."""
    assert FixedSchedule(interval=0.0, jitter=0.5).next_delay(state()) == 0.0


# -- ExponentialSchedule -----------------------------------------------------------------------

EXP = ExponentialSchedule(initial=1.0, factor=2.0, maximum=10.0, jitter=0.0)

GROWTH = [
    ("right-after-start", 0.0, 1.0),
    ("before-first-look", 0.5, 1.0),
    ("after-first-look", 1.0, 2.0),
    ("after-second-look", 3.0, 4.0),
    ("after-third-look", 7.0, 8.0),
    ("capped", 15.0, 10.0),
    ("capped-long-after", 10_000.0, 10.0),
]


@pytest.mark.parametrize(("elapsed", "delay"), [g[1:] for g in GROWTH], ids=[g[0] for g in GROWTH])
def test_exponential_schedule_grows_geometrically_up_to_maximum(
    elapsed: float, delay: float
) -> None:
    """Quiet time walks the series initial * factor**k; the delay never exceeds maximum."""
    assert EXP.next_delay(state(elapsed=elapsed)) == delay


def test_exponential_schedule_first_delay() -> None:
    """The delay before the first look is ``first``, not the series."""
    assert ExponentialSchedule(first=0.2).next_delay(state(polls=0, elapsed=50.0)) == 0.2
    assert ExponentialSchedule().next_delay(state(polls=0)) == 0.0


RESETS: list[tuple[str, dict[str, Any], float]] = [
    ("new-round", {"elapsed": 101.0, "round_seen_at": (40.0, 100.0)}, 2.0),
    ("just-started", {"elapsed": 30.0, "started_at": 30.0}, 1.0),
    ("started-then-quiet", {"elapsed": 33.0, "started_at": 30.0}, 4.0),
    ("latest-change-counts", {"elapsed": 60.0, "round_seen_at": (59.0,), "started_at": 10.0}, 2.0),
    ("clock-behind-change", {"elapsed": 5.0, "round_seen_at": (9.0,)}, 1.0),
]


@pytest.mark.parametrize(("fields", "delay"), [r[1:] for r in RESETS], ids=[r[0] for r in RESETS])
def test_exponential_schedule_starts_over_after_a_change(
    fields: dict[str, Any], delay: float
) -> None:
    """A new round or the start of processing resets the series to ``initial``."""
    assert EXP.next_delay(state(**fields)) == delay


def test_exponential_schedule_jitter_stays_within_bounds() -> None:
    """With jitter j each delay lies within ±j of the series value, repeatably for a seed."""
    schedule = ExponentialSchedule(
        initial=2.0, factor=2.0, maximum=100.0, jitter=0.1, rng=random.Random(3)
    )
    draws = [schedule.next_delay(state(elapsed=2.0)) for _ in range(300)]
    assert all(3.6 <= d <= 4.4 for d in draws)
    assert len(set(draws)) > 100
    again = ExponentialSchedule(
        initial=2.0, factor=2.0, maximum=100.0, jitter=0.1, rng=random.Random(3)
    )
    assert draws == [again.next_delay(state(elapsed=2.0)) for _ in range(300)]


DEGENERATE: list[tuple[str, dict[str, Any], float]] = [
    ("zero-initial-never-hangs", {"initial": 0.0}, 0.0),
    ("factor-one-is-fixed", {"initial": 3.0, "factor": 1.0}, 3.0),
    ("zero-maximum", {"initial": 1.0, "maximum": 0.0}, 0.0),
    ("initial-above-maximum", {"initial": 20.0, "maximum": 5.0}, 5.0),
]


@pytest.mark.parametrize(
    ("fields", "delay"), [d[1:] for d in DEGENERATE], ids=[d[0] for d in DEGENERATE]
)
def test_exponential_schedule_degenerate_settings_give_a_delay_at_once(
    fields: dict[str, Any], delay: float
) -> None:
    """Edge settings that the validators allow return at once, even after hours of quiet."""
    schedule = ExponentialSchedule(jitter=0.0, **fields)
    assert schedule.next_delay(state(elapsed=86_400.0)) == delay


BAD_SCHEDULES: list[tuple[str, type[Any], dict[str, float]]] = [
    ("fixed-negative-interval", FixedSchedule, {"interval": -1.0}),
    ("fixed-negative-first", FixedSchedule, {"first": -0.1}),
    ("fixed-jitter-one", FixedSchedule, {"jitter": 1.0}),
    ("fixed-negative-jitter", FixedSchedule, {"jitter": -0.1}),
    ("exp-negative-initial", ExponentialSchedule, {"initial": -1.0}),
    ("exp-shrinking-factor", ExponentialSchedule, {"factor": 0.5}),
    ("exp-negative-maximum", ExponentialSchedule, {"maximum": -1.0}),
    ("exp-negative-first", ExponentialSchedule, {"first": -1.0}),
    ("exp-jitter-above-one", ExponentialSchedule, {"jitter": 1.5}),
]


@pytest.mark.parametrize(
    ("cls", "fields"), [b[1:] for b in BAD_SCHEDULES], ids=[b[0] for b in BAD_SCHEDULES]
)
def test_schedules_refuse_impossible_settings(cls: type[Any], fields: dict[str, float]) -> None:
    """Negative delays, a factor below 1 and jitter outside [0, 1) are refused."""
    with pytest.raises(ValueError, match=next(iter(fields))):
        cls(**fields)


# -- as_schedule -------------------------------------------------------------------------------


def test_as_schedule_keeps_a_schedule_object() -> None:
    """An object with next_delay is used as it is."""
    schedule = FixedSchedule()
    assert as_schedule(schedule) is schedule
    assert isinstance(schedule, PollSchedule)
    assert isinstance(EXP, PollSchedule)


def test_as_schedule_wraps_a_plain_function() -> None:
    """A function of PollState becomes a schedule that calls it."""
    seen: list[PollState] = []

    def every_elapsed_plus_one(s: PollState) -> float:
        seen.append(s)
        return s.elapsed + 1.0

    schedule = as_schedule(every_elapsed_plus_one)
    assert isinstance(schedule, PollSchedule)
    poll = state(elapsed=2.5)
    assert schedule.next_delay(poll) == 3.5
    assert seen == [poll]


@pytest.mark.parametrize("bad", [5, "5s", None, [1.0]], ids=["int", "str", "none", "list"])
def test_as_schedule_refuses_other_objects(bad: Any) -> None:
    """Anything neither a schedule nor callable is a TypeError naming its type."""
    with pytest.raises(TypeError, match=type(bad).__name__):
        as_schedule(bad)


def test_poll_state_says_nothing_of_the_submit_unless_told() -> None:
    """``submitted_at`` is ``None`` unless the polling layer knows when the task was submitted."""
    assert state().submitted_at is None
    told = PollState(task_id="t", polls=0, elapsed=0.0, last=None, submitted_at=-0.2)
    assert told.submitted_at == -0.2
