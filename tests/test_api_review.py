"""Regressions found by a review of the 1.0 API: stopping, deadlines and the sync client."""

from __future__ import annotations

import asyncio
import threading

import pytest
from spo_async import (
    AsyncSPOClient,
    ConfigurationError,
    Event,
    RetryPolicy,
    SPOClient,
    TaskSubmitted,
    WaitTimeoutError,
)
from spo_async.polling import FixedSchedule
from spo_async.testing import (
    Emulator,
    EmulatorConfig,
    Fault,
    FaultKind,
    ManualClock,
    ThreadedEmulator,
)

from .conftest import ClientFactory, make_request, until


async def test_closing_a_batch_sends_no_submit_that_was_waiting_to_retry(
    make_client: ClientFactory, emu: Emulator
) -> None:
    """A submit backing off after a 429 is stopped by ``aclose``, not sent once it ends."""
    emu.inject(Fault(FaultKind.RATE_LIMIT, endpoint="submit", times=2, retry_after=30))
    client = make_client(retry=RetryPolicy())
    batch = client.optimize_many([make_request(f"p{i}") for i in range(4)], concurrency=2)
    await batch.__aenter__()
    await until(lambda: len(emu.submits) >= 2, what="the two submits answered 429")
    async with asyncio.timeout(10):  # a guard: it must not wait out the 30 s backoff
        await batch.aclose()
    # Nothing is left that could send the submit later: aclose has ended every worker.
    assert not [t for t in asyncio.all_tasks() if "batch worker" in t.get_name()]
    assert len(emu.submits) == 2
    assert emu.tasks_created == 0


async def test_breaking_out_of_a_journaled_batch_closes_it_for_the_next_run(
    make_client: ClientFactory, tmp_path: object
) -> None:
    """After a ``break`` from a plain ``async for``, the journal is free for a rerun at once."""
    client = make_client()
    journal = f"{tmp_path}/run.db"
    requests = [make_request(f"p{i}") for i in range(6)]
    async for _ in client.optimize_many(requests, concurrency=2, journal=journal):
        break
    # No pause: the rerun waits for the dropped batch, which the event loop is closing.
    outcomes = await client.optimize_all(requests, concurrency=2, journal=journal)
    assert [o.ok for o in outcomes] == [True] * 6
    assert not [t for t in asyncio.all_tasks() if "batch worker" in t.get_name()]


async def test_a_deadline_while_waiting_for_a_connection_is_not_an_unknown_outcome(
    emu: Emulator,
) -> None:
    """A submit still queued for the pool at the deadline sent nothing: no task, no unknown."""
    async with AsyncSPOClient(emu.api_key, base_url=emu.base_url, max_connections=1) as client:
        task_id = await client.submit(make_request())
        emu.inject(Fault(FaultKind.DELAY, endpoint="task", times=1, delay=1.0))
        holding = asyncio.ensure_future(client.get_task(task_id))  # takes the one connection
        await until(lambda: emu.task_gets[task_id] >= 1, what="the GET holding the connection")
        with pytest.raises(WaitTimeoutError) as raised:
            await client.optimize(make_request("other"), timeout=0.1)
        assert raised.value.task_id is None
        await holding
    assert emu.tasks_created == 1


async def test_a_followers_deadline_holds_on_an_injected_clock() -> None:
    """With a fake clock, a follower with a short deadline times out at it, not at the next look."""
    emulator_clock = ManualClock()
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        emulator_clock.advance(seconds)
        await asyncio.sleep(0)

    config = EmulatorConfig(round_seconds=10, jitter=0, clock=emulator_clock)
    async with (
        Emulator(config) as emu,
        AsyncSPOClient(
            emu.api_key,
            base_url=emu.base_url,
            clock=lambda: now[0],
            sleep=sleep,
            schedule=FixedSchedule(interval=60),
        ) as client,
    ):
        task_id = await client.submit(make_request())

        async def follower() -> float:
            with pytest.raises(WaitTimeoutError):
                await client.wait_for_result(task_id, timeout=5)
            return now[0]

        leader, timed_out_at = await asyncio.gather(
            client.wait_for_result(task_id, timeout=1000), follower()
        )
    assert leader.succeeded
    assert timed_out_at == pytest.approx(5.0)


def test_closing_the_sync_client_ends_a_call_running_in_another_thread() -> None:
    """``close()`` from one thread cancels another thread's call instead of leaving it hung."""
    with ThreadedEmulator(EmulatorConfig(round_seconds=1.0)) as emu:
        client = SPOClient(emu.api_key, base_url=emu.base_url)
        submitted = threading.Event()
        outcome: list[BaseException | str] = []

        def on_event(event: Event) -> None:
            if isinstance(event, TaskSubmitted):
                submitted.set()

        def caller() -> None:
            try:
                outcome.append(
                    client.optimize(make_request(max_rounds=50), on_event=on_event).status
                )
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=caller)
        thread.start()
        assert submitted.wait(10)
        client.close()
        thread.join(10)
        assert not thread.is_alive()
        assert isinstance(outcome[0], BaseException)


def test_the_sync_client_refuses_calls_from_its_own_callbacks() -> None:
    """A callback runs on the client's loop thread: calling or closing from it is refused."""
    with ThreadedEmulator() as emu, SPOClient(emu.api_key, base_url=emu.base_url) as client:
        errors: list[BaseException] = []

        def on_event(event: Event) -> None:
            if isinstance(event, TaskSubmitted):
                for action in (lambda: client.get_task(event.task_id), client.close):
                    try:
                        action()
                    except ConfigurationError as exc:
                        errors.append(exc)

        assert client.optimize(make_request(), on_event=on_event).succeeded
        assert len(errors) == 2
        assert not client.closed
