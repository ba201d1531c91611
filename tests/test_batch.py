"""Batches against the emulator: many tasks, keys, per-item outcomes, events, stopping early."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from spo_async import (
    AsyncSPOClient,
    BatchProgress,
    Errored,
    Event,
    Failed,
    OptimizationRequest,
    Outcome,
    OutcomeUnknown,
    RequestValidationError,
    Succeeded,
    TaskSubmitted,
    WaitTimeoutError,
)
from spo_async._batch import prepare_items
from spo_async._journal import request_fingerprint
from spo_async.polling import FixedSchedule
from spo_async.testing import Emulator, EmulatorConfig, Fault, FaultKind, ManualClock, TaskOutcome

from .conftest import (
    NO_CHANNEL_ERROR,
    ClientFactory,
    VirtualTime,
    make_request,
    on_virtual_time,
)
from .test_events import FINAL, TASK_EVENTS, assert_legal_order


def _outcome_for(body: Mapping[str, Any]) -> TaskOutcome | None:
    prompt = body["prompt"]
    if prompt.startswith("fail"):
        return TaskOutcome(fail_at_round=2, error={"err_code": -1024, "message": "judge down"})
    if prompt.startswith("slow"):
        return TaskOutcome(round_seconds=0.2)
    return None


@pytest.fixture
def emulator_config(clock: ManualClock) -> EmulatorConfig:
    """Tasks that run on the test's clock, which only the clients' waits move on.

    It knows one model, so that a request naming another is refused (-10008).
    """
    return EmulatorConfig(
        round_seconds=0.01,
        queue_seconds=0.0,
        seed=1,
        outcome_for=_outcome_for,
        clock=clock,
        models={"claude-3-5-sonnet-20240620"},
    )


@pytest.fixture
def make_client(make_client: ClientFactory, virtual_time: VirtualTime) -> ClientFactory:
    """Clients whose waits move the emulator's clock instead of waiting for real time."""
    return on_virtual_time(make_client, virtual_time)


def req(name: str, **changes: Any) -> OptimizationRequest:
    return make_request(name, max_rounds=changes.pop("max_rounds", 2), **changes)


async def test_two_thousand_tasks_come_back_with_their_keys_in_both_orders(
    make_client: ClientFactory, emu: Emulator
) -> None:
    """2,000 tasks at concurrency 200: every key once, right request and result, both orders."""
    # One look per task, a (virtual) second after its submit, when it is long done: the
    # test is about keys and order, and every HTTP exchange costs real CPU time.
    client = make_client(schedule=FixedSchedule(first=1.0, interval=1.0))
    n = 2000
    by_key = {f"row-{i}": req(f"prompt {i}") for i in range(n)}

    seen: list[Outcome] = []
    async with client.optimize_many(by_key, concurrency=200) as batch:
        async for outcome in batch:
            seen.append(outcome)
    assert sorted(o.index for o in seen if o.index is not None) == list(range(n))
    assert {o.key for o in seen} == set(by_key)
    assert all(isinstance(o, Succeeded) and o.request is by_key[str(o.key)] for o in seen)
    assert emu.tasks_created == n

    pairs = [(i, req(f"again {i}")) for i in range(n)]
    ordered = await client.optimize_all(pairs, concurrency=200)
    assert [o.key for o in ordered] == list(range(n))
    assert [o.index for o in ordered] == list(range(n))
    for done, (_, request) in zip(ordered, pairs, strict=True):
        assert isinstance(done, Succeeded)
        assert done.request is request
        assert done.result.task_id == done.task_id
        assert emu.tasks[done.task_id].request["prompt"] == request.prompt
    assert emu.tasks_created == 2 * n
    assert len({o.task_id for o in ordered if isinstance(o, Succeeded)}) == n


async def test_outcomes_come_in_completion_order(client: AsyncSPOClient) -> None:
    """A slow first item is yielded after a fast second one."""
    requests = [("slow", req("slow one")), ("fast", req("fast one"))]
    keys = [o.key async for o in client.optimize_many(requests, concurrency=2)]
    assert keys == ["fast", "slow"]


async def test_one_failing_item_never_cancels_the_batch(
    make_client: ClientFactory, emu: Emulator
) -> None:
    """A failed task, a refused submit and a lost submit answer each get their own outcome."""
    client = make_client()
    emu.inject(Fault(FaultKind.DROP_AFTER, endpoint="submit", times=1))
    requests = {
        "lost": req("lost answer"),
        "ok-1": req("fine 1"),
        "fails": req("fail at round 2", max_rounds=3),
        "refused": req("bad model", model="no-such-model"),
        "ok-2": req("fine 2"),
    }
    events: list[Event] = []
    outcomes = await client.optimize_all(requests, concurrency=1, on_event=events.append)
    kinds = {o.key: type(o) for o in outcomes}
    assert kinds == {
        "lost": OutcomeUnknown,
        "ok-1": Succeeded,
        "fails": Failed,
        "refused": Errored,
        "ok-2": Succeeded,
    }
    failed, refused = outcomes[2], outcomes[3]
    assert isinstance(failed, Failed)
    assert failed.result.error is not None
    assert failed.result.error.err_code == -1024
    assert isinstance(refused, Errored)
    assert refused.task_id is None
    assert isinstance(refused.error, NO_CHANNEL_ERROR)
    # The lost submit created a task, and it was not sent again.
    assert [s.body["prompt"] for s in emu.submits].count("lost answer") == 1
    assert emu.tasks_created == 4
    assert_legal_order(events)
    finals = {e.key: type(e) for e in events if isinstance(e, FINAL)}
    assert finals == kinds
    progress = [e for e in events if isinstance(e, BatchProgress)]
    last = progress[-1]
    assert (last.total, last.pending, last.running, last.done) == (5, 0, 0, 5)
    assert (last.succeeded, last.failed, last.errored, last.unknown) == (2, 1, 1, 1)
    assert last.requests_per_second is not None
    assert last.requests_per_second > 0  # measured by the client's limiter


async def test_a_task_past_its_deadline_is_an_error_with_its_task_id(
    client: AsyncSPOClient,
) -> None:
    """A per-task timeout gives Errored(WaitTimeoutError) with the task id, as event and outcome."""
    events: list[Event] = []
    (outcome,) = await client.optimize_all(
        [("k", req("slow task", max_rounds=5))], timeout=0.0, on_event=events.append
    )
    assert isinstance(outcome, Errored)
    assert isinstance(outcome.error, WaitTimeoutError)
    assert outcome.task_id is not None
    assert outcome.task_id == outcome.error.task_id
    assert events[-2] == outcome  # the outcome event, before the last BatchProgress
    assert isinstance(events[-1], BatchProgress)


async def test_concurrency_bounds_the_tasks_in_flight(client: AsyncSPOClient) -> None:
    """At most `concurrency` tasks are submitted and not finished at any moment."""
    in_flight = peak = 0

    def count(event: Event) -> None:
        nonlocal in_flight, peak
        if isinstance(event, TaskSubmitted):
            in_flight += 1
            peak = max(peak, in_flight)
        elif isinstance(event, FINAL):
            in_flight -= 1

    outcomes = await client.optimize_all(
        [req(f"p {i}") for i in range(60)], concurrency=7, on_event=count
    )
    assert len(outcomes) == 60
    assert peak == 7


async def test_events_arrive_in_a_legal_order_for_every_task(client: AsyncSPOClient) -> None:
    """With rounds, failures and an async callback, each task's story is in order."""
    events: list[Event] = []

    async def collect(event: Event) -> None:
        await asyncio.sleep(0)
        events.append(event)

    requests = [req(f"{'fail' if i % 5 == 0 else 'ok'} {i}", max_rounds=4) for i in range(40)]
    await client.optimize_all(requests, concurrency=10, on_event=collect)
    assert_legal_order(events)
    finals = [e for e in events if isinstance(e, FINAL)]
    assert len(finals) == 40
    assert {e.key for e in events if isinstance(e, TASK_EVENTS)} == {
        item.key for item in prepare_items(requests)
    }


async def test_breaking_out_early_cancels_everything_and_a_rerun_finishes(
    client: AsyncSPOClient, emu: Emulator, tmp_path: Path
) -> None:
    """Leaving the loop stops every worker; the journal lets the next run finish the rest."""
    journal = tmp_path / "early.journal"
    requests = [req(f"p {i}") for i in range(50)]
    first: list[Outcome] = []
    async with client.optimize_many(requests, concurrency=10, journal=journal) as batch:
        async for outcome in batch:
            first.append(outcome)
            if len(first) == 3:
                break
    await asyncio.sleep(0)
    leftovers = [t for t in asyncio.all_tasks() if t.get_name().startswith("spo-async")]
    assert leftovers == []

    created = emu.tasks_created
    second = await client.optimize_all(requests, concurrency=10, journal=journal)
    assert len(second) == 50
    assert {o.key for o in first} <= {o.key for o in second if o.from_journal}
    unknown = [o for o in second if isinstance(o, OutcomeUnknown)]
    assert all(isinstance(o, Succeeded) for o in second if not isinstance(o, OutcomeUnknown))
    # Nothing was paid for twice: each created task belongs to a distinct request.
    prompts = collections.Counter(t.request["prompt"] for t in emu.tasks.values())
    assert max(prompts.values()) == 1
    assert emu.tasks_created <= 50
    succeeded = [o for o in second if isinstance(o, Succeeded)]
    assert len(succeeded) + len(unknown) == 50
    lost_with_task = sum(1 for o in unknown if o.request and o.request.prompt in prompts)
    assert emu.tasks_created == len(succeeded) + lost_with_task
    assert created <= emu.tasks_created


async def test_cancelling_a_batch_leaves_no_task_and_a_consistent_journal(
    client: AsyncSPOClient, emu: Emulator, tmp_path: Path
) -> None:
    """Cancelling the caller mid-batch stops every worker; a rerun finishes without paying twice."""
    journal = tmp_path / "cancel.journal"
    requests = [req(f"c {i}") for i in range(40)]
    got: list[Outcome] = []
    five = asyncio.Event()

    async def consume() -> None:
        async with client.optimize_many(requests, concurrency=8, journal=journal) as batch:
            async for outcome in batch:
                got.append(outcome)
                if len(got) == 5:
                    five.set()

    running = asyncio.create_task(consume())
    await five.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("spo-async")] == []

    second = await client.optimize_all(requests, concurrency=8, journal=journal)
    prompts = collections.Counter(t.request["prompt"] for t in emu.tasks.values())
    assert max(prompts.values()) == 1
    assert {o.key for o in got} <= {o.key for o in second if o.from_journal}
    assert all(isinstance(o, Succeeded | OutcomeUnknown) for o in second)


# -- keys -----------------------------------------------------------------------------------


def test_derived_keys_are_index_and_fingerprint_and_stable() -> None:
    """Without keys, item i is named "<i>-<first 12 hex of its fingerprint>", the same each time."""
    requests = [req("a"), req("b")]
    first = [item.key for item in prepare_items(requests)]
    assert first == [f"{i}-{request_fingerprint(r)[:12]}" for i, r in enumerate(requests)]
    assert [item.key for item in prepare_items(requests)] == first


def test_every_input_form_gives_the_same_items() -> None:
    """Pairs, a mapping and a key function are all accepted."""
    a, b = req("a"), req("b")
    expected = [(0, "x", a), (1, "y", b)]
    forms: list[Any] = [
        [("x", a), ("y", b)],
        {"x": a, "y": b},
        iter([("x", a), ("y", b)]),
    ]
    for form in forms:
        assert [(i.index, i.key, i.request) for i in prepare_items(form)] == expected
    by_prompt = prepare_items([a, b], keys=lambda r: r.prompt)
    assert [item.key for item in by_prompt] == ["a", "b"]


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        pytest.param([("k", req("a")), ("k", req("b"))], "duplicate key 'k'", id="duplicate"),
        pytest.param(["not a request"], "expected an OptimizationRequest", id="wrong-type"),
        pytest.param([(True, req("a"))], "a key must be", id="bool-key"),
        pytest.param([(1.5, req("a"))], "a key must be", id="float-key"),
        pytest.param([("k", "prompt")], "expected an OptimizationRequest", id="pair-no-request"),
    ],
)
async def test_bad_input_is_refused_before_any_request(
    client: AsyncSPOClient, emu: Emulator, requests: Any, message: str
) -> None:
    """Duplicate keys and wrong items raise RequestValidationError when the batch is made."""
    with pytest.raises(RequestValidationError, match=message):
        client.optimize_many(requests)
    with pytest.raises(RequestValidationError, match=message):
        await client.optimize_all(requests)
    assert emu.request_log == []


async def test_an_empty_batch_is_empty(client: AsyncSPOClient, emu: Emulator) -> None:
    """No items, no outcomes, no requests."""
    assert await client.optimize_all([]) == []
    async with client.optimize_many({}) as batch:
        assert [o async for o in batch] == []
    assert emu.request_log == []
