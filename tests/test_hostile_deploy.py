"""Rolling deploys: servers of two versions answer in turn, one adding fields the other drops.

A finished round must not look changed because a field the SDK does not know came in
one answer and not in the next: unknown fields (``extra``) take no part in equality,
so the poll loop's contradiction check compares only what the SDK understands.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from spo_async import (
    AsyncSPOClient,
    Event,
    OptimizationRequest,
    QAPair,
    RetryPolicy,
    Round,
    RoundCompleted,
    Sample,
    TaskResult,
    TaskStatus,
)
from spo_async._polling import contradiction
from spo_async.polling import FixedSchedule
from spo_async.testing import Emulator, EmulatorConfig, Fault, FaultKind, ManualClock


@pytest.fixture
def emulator_config(clock: ManualClock) -> EmulatorConfig:
    """Rounds of 9 simulated seconds, on a clock the client's sleeps move."""
    return EmulatorConfig(clock=clock, round_seconds=9.0, seed=5)


def make_request() -> OptimizationRequest:
    return OptimizationRequest(
        prompt="Answer as a support agent",
        qa=[QAPair("My order is late", "[apology][eta]")],
        model="gpt-4o",
        max_rounds=3,
    )


async def test_unknown_fields_that_come_and_go_do_not_break_a_wait(
    emu: Emulator, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A finished round seen with extra fields, then without them on every later poll
    (the deploy rolled back), is the same round: the wait ends in success, no warning."""
    caplog.set_level(logging.WARNING, logger="spo_async")
    emu.inject(Fault(FaultKind.EXTRA_FIELDS, endpoint="task"))

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0)

    def roll_back(event: Event) -> None:
        if not isinstance(event, RoundCompleted):
            return
        snapshot = event.result
        if snapshot.completed_rounds and emu.faults:
            assert snapshot.completed_rounds[0].extra  # seen with the new version's fields
            emu.clear_faults()

    async with AsyncSPOClient(
        api_key=emu.api_key,
        base_url=emu.base_url,
        retry=RetryPolicy.no_wait(),
        schedule=FixedSchedule(interval=1.0),
        clock=clock,
        sleep=sleep,
    ) as client:
        task_id = await client.submit(make_request())
        result = await client.wait_for_result(task_id, timeout=600, on_event=roll_back)

    assert result.succeeded
    assert [r.number for r in result.rounds] == [1, 2, 3]
    assert emu.faults_fired[FaultKind.EXTRA_FIELDS] >= 1
    assert emu.task_gets[task_id] > 10  # many polls saw round 1 without its extra fields
    assert not [r for r in caplog.records if "not believing" in r.getMessage()]


def round_one(**extra: object) -> Round:
    return Round(1, "p", (Sample("q", "a", extra=dict(extra)),), success=True, extra=dict(extra))


def snapshot(first: Round, **extra: object) -> TaskResult:
    return TaskResult(
        "t",
        TaskStatus.PROCESSING,
        "processing",
        rounds=(first, Round(2, "p2")),
        extra=dict(extra),
    )


def test_models_compare_only_what_the_sdk_understands() -> None:
    """Samples, rounds and snapshots that differ only in unknown fields are equal."""
    assert round_one(tokens=3) == round_one()
    assert hash(round_one(tokens=3)) == hash(round_one())
    assert snapshot(round_one(), trace="a") == snapshot(round_one(tokens=1), trace="b")
    assert round_one(tokens=3).extra == {"tokens": 3}  # kept, only not compared


def test_the_contradiction_check_ignores_unknown_fields_but_not_known_ones() -> None:
    """An extra field appearing or vanishing is no contradiction; a changed prompt still is."""
    before = snapshot(round_one(tokens=3, time=1.5), trace="x")
    assert contradiction(before, snapshot(round_one())) is None
    assert contradiction(snapshot(round_one()), before) is None
    changed = Round(1, "another prompt", round_one().samples, success=True)
    assert contradiction(before, snapshot(changed)) == "round 1 changed after it was complete"
