"""Tests of your own code against the SPO emulator: what docs/howto/testing.md shows.

Run it with ``pytest`` (pytest-asyncio installed, ``asyncio_mode = "auto"``). The code
under test is ``suggest_prompt`` below; in your project it lives in your package.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from spo_async import (
    AsyncSPOClient,
    OptimizationRequest,
    QAPair,
    RetryPolicy,
    SubmitOutcomeUnknownError,
    TaskFailedError,
)
from spo_async.polling import FixedSchedule
from spo_async.testing import (
    Emulator,
    EmulatorConfig,
    Fault,
    FaultKind,
    ManualClock,
    TaskOutcome,
    ThreadedEmulator,
)

# -- the code under test (yours) ----------------------------------------------------------


async def suggest_prompt(client: AsyncSPOClient, prompt: str, examples: dict[str, str]) -> str:
    """Optimize ``prompt`` for ``examples``; fall back to the original if the task fails."""
    request = OptimizationRequest(
        prompt=prompt,
        qa=[QAPair(question, answer) for question, answer in examples.items()],
        model="gpt-4o-mini",
        max_rounds=3,
    )
    try:
        result = await client.optimize(request, timeout=30)
    except TaskFailedError:
        return prompt
    return result.best_prompt or prompt


EXAMPLES = {"Where is my parcel?": "[empathy][tracking steps]"}

# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """An emulator on the test's own event loop, with 10 ms rounds."""
    async with Emulator(EmulatorConfig(round_seconds=0.01, seed=1)) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[AsyncSPOClient]:
    """A client for the emulator that looks often and retries without waiting."""
    async with AsyncSPOClient(
        api_key=emu.api_key,
        base_url=emu.base_url,
        schedule=FixedSchedule(interval=0.005),
        retry=RetryPolicy.no_wait(),
    ) as spo:
        yield spo


# -- tests with the async emulator --------------------------------------------------------


async def test_suggests_an_optimized_prompt(client: AsyncSPOClient, emu: Emulator) -> None:
    """A successful task's best prompt is returned, after exactly one submit."""
    suggestion = await suggest_prompt(client, "Answer politely.", EXAMPLES)
    assert suggestion.startswith("Answer politely.")
    assert emu.tasks_created == 1
    (submit,) = emu.submits
    assert submit.body["max_rounds"] == 3


async def test_falls_back_when_the_task_fails(client: AsyncSPOClient, emu: Emulator) -> None:
    """A task that ends in fail gives back the original prompt."""
    emu.script_next(TaskOutcome(fail_at_round=2, error={"err_code": -1024, "message": "timeout"}))
    assert await suggest_prompt(client, "Answer politely.", EXAMPLES) == "Answer politely."


async def test_rides_out_gateway_errors(client: AsyncSPOClient, emu: Emulator) -> None:
    """Two HTML 502 pages on the task query are retried; the task still completes."""
    emu.inject(Fault(FaultKind.SERVER_ERROR_HTML, endpoint="task", times=2))
    await suggest_prompt(client, "Answer politely.", EXAMPLES)
    assert emu.faults_fired[FaultKind.SERVER_ERROR_HTML] == 2


async def test_never_pays_twice_when_the_answer_is_lost(
    client: AsyncSPOClient, emu: Emulator
) -> None:
    """When the submit's answer is lost after the task was made, nothing is resubmitted."""
    emu.inject(Fault(FaultKind.DROP_AFTER, endpoint="submit", times=1))
    with pytest.raises(SubmitOutcomeUnknownError):
        await suggest_prompt(client, "Answer politely.", EXAMPLES)
    assert emu.tasks_created == 1
    assert len(emu.submits) == 1


# -- tests with the spo_emulator fixture (the plugin; any event loop, or none) ------------


@pytest.fixture
def spo_emulator_config() -> EmulatorConfig:
    """Every spo_emulator in this module runs 10 ms rounds."""
    return EmulatorConfig(round_seconds=0.01)


async def test_with_the_fixture(spo_emulator: ThreadedEmulator) -> None:
    """The fixture's emulator runs in its own thread; point a client at it as usual."""
    async with AsyncSPOClient(
        api_key=spo_emulator.api_key,
        base_url=spo_emulator.base_url,
        schedule=FixedSchedule(interval=0.005),
    ) as client:
        assert await suggest_prompt(client, "Be brief.", EXAMPLES)
    assert spo_emulator.tasks_created == 1


@pytest.mark.parametrize("spo_emulator", [{"models": {"my-model"}}], indirect=True)
def test_an_unknown_model_is_refused(spo_emulator: ThreadedEmulator) -> None:
    """An indirect parameter changes the fixture's config for one test."""
    assert spo_emulator.config.models == {"my-model"}


CLOCK = ManualClock()


@pytest.mark.parametrize(
    "spo_emulator", [{"clock": CLOCK, "queue_seconds": 5, "round_seconds": 10}], indirect=True
)
async def test_stepping_time_by_hand(spo_emulator: ThreadedEmulator) -> None:
    """With a ManualClock, a test moves the task through its life without waiting."""
    async with AsyncSPOClient(api_key=spo_emulator.api_key, base_url=spo_emulator.base_url) as c:
        task_id = await c.submit(
            OptimizationRequest(prompt="Be brief.", qa=[QAPair("Hi", "")], model="gpt-4o-mini")
        )
        assert (await c.get_task(task_id)).raw_status == "queue"
        CLOCK.advance(5 + 10)  # out of the queue, round 1 done (and part of round 2)
        snapshot = await c.get_task(task_id)
        assert snapshot.raw_status == "processing"
        assert len(snapshot.completed_rounds) == 1
        CLOCK.advance(1000)
        assert (await c.get_task(task_id)).succeeded
