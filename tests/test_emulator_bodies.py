"""Faults that answer 200 with a body that is there but wrong, as a client decodes it."""

from __future__ import annotations

import json

import aiohttp
import pytest
from spo_async.testing import Emulator, EmulatorConfig, Fault, FaultKind, ManualClock
from spo_async.testing._faults import mutate

from tests.test_emulator_faults import REQUEST, SUBMIT, finished_task, query, send, submit


@pytest.fixture
def emulator_config(clock: ManualClock) -> EmulatorConfig:
    """The emulator of these tests: on the hand-driven clock, 1 s rounds."""
    return EmulatorConfig(clock=clock, round_seconds=1.0)


# -- bodies that are there but wrong ---------------------------------------------------


async def test_truncated_json_cuts_the_real_body_in_half(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """TRUNCATED_JSON sends a 200 whose body is the first half of the real one."""
    task_id = await finished_task(session, emu, clock)
    full = (await query(session, emu, task_id)).body
    emu.inject(Fault(FaultKind.TRUNCATED_JSON, endpoint="task", times=1))
    answer = await query(session, emu, task_id)
    assert answer.status == 200
    assert answer.body == full[: len(full) // 2]
    with pytest.raises(json.JSONDecodeError):
        answer.json()


async def test_truncated_submit_still_created_the_task(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """A truncated submit answer hides a task that was created."""
    emu.inject(Fault(FaultKind.TRUNCATED_JSON, endpoint="submit"))
    answer = await submit(session, emu)
    assert answer.status == 200
    assert emu.tasks_created == 1
    assert emu.submits[-1].task_id is not None
    full = json.dumps({"task_id": emu.submits[-1].task_id}).encode()
    assert answer.body == full[: len(full) // 2]


@pytest.mark.parametrize("status", [None, 502], ids=["default-200", "status-502"])
async def test_empty_body(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock, status: int | None
) -> None:
    """EMPTY_BODY answers with no bytes at all, 200 unless told otherwise."""
    task_id = await finished_task(session, emu, clock)
    emu.inject(Fault(FaultKind.EMPTY_BODY, status=status))
    answer = await query(session, emu, task_id)
    assert (answer.status, answer.body) == (status or 200, b"")


async def test_wrong_types_on_a_task(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """WRONG_TYPES reports a 200 whose fields have the wrong JSON types."""
    task_id = await finished_task(session, emu, clock)
    emu.inject(Fault(FaultKind.WRONG_TYPES))
    data = (await query(session, emu, task_id)).json()
    assert data["status"] == 5
    assert data["best_round"] == "two"
    assert all(r["round"] == "one" and r["success"] == "yes" for r in data["round_data_list"])
    assert len(data["round_data_list"]) == REQUEST["max_rounds"] + 1


async def test_wrong_types_on_submit(emu: Emulator, session: aiohttp.ClientSession) -> None:
    """WRONG_TYPES on submit gives an integer task_id, though the task was created."""
    emu.inject(Fault(FaultKind.WRONG_TYPES))
    assert (await submit(session, emu)).json() == {"task_id": 12345}
    assert emu.tasks_created == 1


@pytest.mark.parametrize("status", ["paused", "apikeyFail"])
async def test_unknown_status(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock, status: str
) -> None:
    """UNKNOWN_STATUS reports an undocumented status; it never touches submit answers."""
    emu.inject(Fault(FaultKind.UNKNOWN_STATUS, unknown_status=status))
    task_id = await finished_task(session, emu, clock)
    assert (await query(session, emu, task_id)).json()["status"] == status
    assert emu.faults_fired_at == {("task", FaultKind.UNKNOWN_STATUS): 1}


async def test_extra_fields_on_task_and_rounds(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """EXTRA_FIELDS adds unknown keys at the top level and in every round."""
    task_id = await finished_task(session, emu, clock)
    emu.inject(Fault(FaultKind.EXTRA_FIELDS))
    data = (await query(session, emu, task_id)).json()
    assert {"tokens", "time"} <= set(data)
    assert all({"tokens", "time"} <= set(r) for r in data["round_data_list"])
    assert data["status"] == "success"
    answer = await submit(session, emu)
    assert set(answer.json()) > {"task_id"}


async def test_huge_field_is_eight_mebibytes_by_default(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """HUGE_FIELD adds a field of size bytes, 8 MiB unless told otherwise."""
    task_id = await finished_task(session, emu, clock)
    emu.inject(Fault(FaultKind.HUGE_FIELD, times=1), Fault(FaultKind.HUGE_FIELD, size=10))
    big = await query(session, emu, task_id)
    assert len(big.json()["trace"]) == 8 * 1024 * 1024
    assert big.json()["status"] == "success"
    assert (await query(session, emu, task_id)).json()["trace"] == "x" * 10


async def test_regress_reports_a_finished_task_as_processing_with_fewer_rounds(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """REGRESS turns a successful task back to processing, one round short, best recomputed."""
    task_id = await finished_task(session, emu, clock)
    emu.inject(Fault(FaultKind.REGRESS, task_id=task_id, times=1))
    data = (await query(session, emu, task_id)).json()
    rounds = data["round_data_list"]
    assert data["status"] == "processing"
    assert len(rounds) == REQUEST["max_rounds"] - 1
    best = max(r["round"] for r in rounds if r["success"])
    assert (data["best_round"], data["best_prompt"]) == (best, rounds[best - 1]["prompt"])
    assert (await query(session, emu, task_id)).json()["status"] == "success"


async def test_duplicate_and_reordered_rounds(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """DUPLICATE_ROUNDS repeats the last round; REORDER_ROUNDS lists rounds newest first."""
    task_id = await finished_task(session, emu, clock)
    emu.inject(Fault(FaultKind.DUPLICATE_ROUNDS, times=1), Fault(FaultKind.REORDER_ROUNDS, times=1))
    duplicated = [
        r["round"] for r in (await query(session, emu, task_id)).json()["round_data_list"]
    ]
    assert duplicated == [1, 2, 3, 4, 4]
    reordered = [r["round"] for r in (await query(session, emu, task_id)).json()["round_data_list"]]
    assert reordered == [4, 3, 2, 1]


async def test_regress_of_a_single_round_task_leaves_no_best(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Regressing a one-round task reports processing with no rounds and no best round."""
    body = {**REQUEST, "max_rounds": 1}
    answer = await send(session, "POST", emu.base_url + SUBMIT, json=body)
    clock.advance(100)
    emu.inject(Fault(FaultKind.REGRESS))
    data = (await query(session, emu, answer.json()["task_id"])).json()
    assert (data["status"], data["round_data_list"], data["best_round"]) == ("processing", [], None)
    assert data["best_prompt"] is None


@pytest.mark.parametrize(
    "kind", [FaultKind.REGRESS, FaultKind.DUPLICATE_ROUNDS, FaultKind.REORDER_ROUNDS]
)
async def test_round_faults_leave_a_task_without_rounds_alone(
    session: aiohttp.ClientSession, kind: FaultKind
) -> None:
    """A queued task has no rounds to regress, repeat or reorder."""
    config = EmulatorConfig(clock=ManualClock(), queue_seconds=10)
    async with Emulator(config) as emulator:
        task_id = (await submit(session, emulator)).json()["task_id"]
        emulator.inject(Fault(kind))
        assert (await query(session, emulator, task_id)).json()["status"] == "queue"


async def test_body_faults_leave_error_answers_alone(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """Field-rewriting faults only touch 200 answers: a 404 envelope passes unchanged."""
    emu.inject(Fault(FaultKind.EXTRA_FIELDS))
    answer = await query(session, emu, "missing")
    assert answer.status == 404
    assert set(answer.json()) == {"error"}


def test_mutate_leaves_a_non_object_body_alone() -> None:
    """A 200 whose JSON is not an object is passed through by field-rewriting faults."""
    reply = mutate(Fault(FaultKind.EXTRA_FIELDS), 200, b"[1, 2]", "task")
    assert (reply.status, reply.body) == (200, b"[1, 2]")
