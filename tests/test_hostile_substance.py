"""Successes without substance: a success must hand over a result the caller can use.

``{"status": "success"}`` with no prompt and no rounds, a ``best_round`` that names no
listed round, a negative ``best_round``: each is a ProtocolError, not a success with
``best_prompt=None``. Such an answer is retried like any unreadable one (the service
may have written ``status`` before the result), within the retry policy's attempts.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from spo_async import (
    AsyncSPOClient,
    OptimizationRequest,
    ProtocolError,
    QAPair,
    RetryPolicy,
    TaskStatus,
)
from spo_async._sansio import HTTPResponse, parse_task_response
from spo_async.polling import FixedSchedule
from spo_async.testing import Emulator, Fault, FaultKind


def wire_round(number: int, *, success: bool = True) -> dict[str, Any]:
    return {
        "round": number,
        "prompt": f"prompt {number}",
        "success": success,
        "sample": [{"question": "q", "answer": "a"}],
    }


def parse(body: dict[str, Any]) -> object:
    return parse_task_response(HTTPResponse(200, {}, json.dumps(body).encode()), "t")


ONE = [wire_round(1)]


def answer(status: str, **fields: Any) -> dict[str, Any]:
    return {"status": status, **fields}


NO_BEST = "without a best prompt"
HOLLOW = {
    "success alone": (answer("success"), NO_BEST),
    "success, empty rounds": (answer("success", round_data_list=[]), NO_BEST),
    "success, no round won": (
        answer("success", round_data_list=[wire_round(1, success=False)]),
        NO_BEST,
    ),
    "success, best_round not listed": (
        answer("success", best_prompt="p", best_round=3, round_data_list=ONE),
        "best_round 3, which is not a listed round",
    ),
    "success, best_round and no rounds": (
        answer("success", best_prompt="p", best_round=1),
        "best_round 1, which is not a listed round",
    ),
    "success, best_round 0": (
        answer("success", best_prompt="p", best_round=0, round_data_list=ONE),
        "not a listed round",
    ),
    "success, negative best_round": (
        answer("success", best_prompt="p", best_round=-1, round_data_list=ONE),
        "best_round is negative",
    ),
    "processing, negative best_round": (
        answer("processing", best_round=-2, round_data_list=ONE),
        "best_round is negative",
    ),
    "queue, negative best_round": (answer("queue", best_round=-1), "best_round is negative"),
}


@pytest.mark.parametrize(("body", "reason"), HOLLOW.values(), ids=list(HOLLOW))
def test_a_success_without_substance_is_a_protocol_error(body: dict[str, Any], reason: str) -> None:
    """Each hollow or impossible answer is refused, saying why."""
    with pytest.raises(ProtocolError, match=reason):
        parse(body)


SOUND = {
    "best fields sent": answer("success", best_prompt="p", best_round=1, round_data_list=ONE),
    "best prompt without best_round": answer("success", best_prompt="p"),
    "best filled in from the rounds": answer(
        "success", round_data_list=[*ONE, wire_round(2, success=False)]
    ),
    "an empty best prompt the service chose": answer(
        "success", best_prompt="", best_round=1, round_data_list=ONE
    ),
    "running, best_round ahead of the rounds shown": answer(
        "processing", best_round=4, round_data_list=ONE
    ),
    "failed without a result": answer("fail", error="model overloaded"),
    "success status with an error": answer("success", error={"err_code": -1024}),
}


@pytest.mark.parametrize("body", SOUND.values(), ids=list(SOUND))
def test_answers_with_substance_or_without_a_claim_are_read(body: dict[str, Any]) -> None:
    """A success with a usable best prompt, a running task and a failed one are all read."""
    parse(body)


def test_the_fill_in_from_rounds_takes_the_last_successful_round() -> None:
    """A success that leaves the best fields out gets them from its best round."""
    rounds = [wire_round(1), wire_round(2), wire_round(3, success=False)]
    body = {"status": "success", "round_data_list": rounds}
    result = parse_task_response(HTTPResponse(200, {}, json.dumps(body).encode()), "t")
    assert (result.status, result.best_round, result.best_prompt) == (
        TaskStatus.SUCCESS,
        2,
        "prompt 2",
    )


HOLLOW_SUCCESS = json.dumps({"status": "success", "round_data_list": []})


def client_for(emu: Emulator, attempts: int) -> AsyncSPOClient:
    return AsyncSPOClient(
        api_key=emu.api_key,
        base_url=emu.base_url,
        retry=RetryPolicy.no_wait(attempts=attempts),
        schedule=FixedSchedule(interval=0.0),
    )


async def test_a_hollow_success_that_lasts_ends_the_wait_with_a_protocol_error(
    emu: Emulator,
) -> None:
    """A success that never gains substance costs the policy's attempts, then fails typed
    with the task id; get_task fails at its one GET."""
    emu.inject(Fault(FaultKind.STATUS, status=200, body=HOLLOW_SUCCESS, endpoint="task"))
    async with client_for(emu, attempts=4) as client:
        with pytest.raises(ProtocolError, match="without a best prompt") as waiting:
            await client.wait_for_result("spo-hollow", timeout=30)
        assert emu.task_gets["spo-hollow"] == 4
        with pytest.raises(ProtocolError):
            await client.get_task("spo-once")
    assert waiting.value.task_id == "spo-hollow"
    assert emu.task_gets["spo-once"] == 1


async def test_a_success_read_before_its_result_was_written_recovers(emu: Emulator) -> None:
    """The retry is what lets a service that writes status before the result be read whole."""
    async with client_for(emu, attempts=4) as client:
        task_id = await client.submit(
            OptimizationRequest(
                prompt="Reply briefly", qa=[QAPair("hi", "hello")], model="gpt-4o", max_rounds=2
            )
        )
        emu.inject(
            Fault(FaultKind.STATUS, status=200, body=HOLLOW_SUCCESS, endpoint="task", times=2)
        )
        result = await client.wait_for_result(task_id, timeout=30)
    assert result.succeeded
    assert result.best_prompt
    assert emu.faults_fired[FaultKind.STATUS] == 2
