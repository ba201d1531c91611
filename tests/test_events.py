"""Typed events: snapshot diffs, the outcome that ends a wait, the stream, and a real wait."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import pytest
from spo_async import (
    AsyncSPOClient,
    BatchProgress,
    Errored,
    Event,
    EventStream,
    Failed,
    OptimizationRequest,
    Outcome,
    OutcomeUnknown,
    RoundCompleted,
    SubmitOutcomeUnknownError,
    Succeeded,
    TaskFailedError,
    TaskQueued,
    TaskResult,
    TaskRetrying,
    TaskSubmitted,
    TransientError,
    WaitTimeoutError,
)
from spo_async._convert import task_from_wire
from spo_async._events import Reporter, outcome_of
from spo_async._stream import as_stream
from spo_async.testing import Emulator, EmulatorConfig, Fault, FaultKind, ManualClock

from .conftest import FAST, ClientFactory, VirtualTime, make_request, on_virtual_time

#: The outcomes: exactly one ends each task's story.
FINAL = (Succeeded, Failed, Errored, OutcomeUnknown)
#: Every event that belongs to one task (``BatchProgress`` belongs to the batch).
TASK_EVENTS = (TaskSubmitted, TaskQueued, RoundCompleted, TaskRetrying, Outcome)

AnyTaskEvent = TaskSubmitted | TaskQueued | RoundCompleted | TaskRetrying | Outcome


@pytest.fixture
def emulator_config(clock: ManualClock) -> EmulatorConfig:
    """The shared fast emulator, its tasks on the test's clock."""
    return attrs.evolve(FAST, clock=clock)


@pytest.fixture
def make_client(make_client: ClientFactory, virtual_time: VirtualTime) -> ClientFactory:
    """Clients whose waits move the emulator's clock on instead of waiting."""
    return on_virtual_time(make_client, virtual_time)


def assert_legal_order(events: Iterable[Event]) -> None:
    """Every task's events follow: submitted? queued? rounds ascending, then one outcome."""
    by_key: dict[Any, list[AnyTaskEvent]] = {}
    for event in events:
        if isinstance(event, TASK_EVENTS):
            by_key.setdefault(event.key, []).append(event)
    for key, story in by_key.items():
        finals = [i for i, e in enumerate(story) if isinstance(e, FINAL)]
        assert finals == [len(story) - 1], f"{key}: one outcome, last: {story}"
        progress = [e for e in story[:-1] if not isinstance(e, TaskRetrying)]
        if isinstance(story[-1], OutcomeUnknown):
            assert progress == [], f"{key}: an unknown outcome has no task: {story}"
            continue
        if progress and isinstance(progress[0], TaskSubmitted):
            progress = progress[1:]
        if progress and isinstance(progress[0], TaskQueued):
            progress = progress[1:]
        assert all(isinstance(e, RoundCompleted) for e in progress), f"{key}: {story}"
        numbers = [e.number for e in progress if isinstance(e, RoundCompleted)]
        assert numbers == sorted(set(numbers)), f"{key}: rounds out of order: {numbers}"
        ids = {e.task_id for e in story if e.task_id is not None}
        assert len(ids) <= 1, f"{key}: several task ids {ids}"


def snapshot(status: str, rounds: Sequence[tuple[str, bool]] = (), **extra: Any) -> TaskResult:
    body = {
        "status": status,
        "round_data_list": [
            {"round": n, "prompt": p, "success": ok, "sample": [{"question": "q", "answer": "a"}]}
            for n, (p, ok) in enumerate(rounds, start=1)
        ],
        **extra,
    }
    return task_from_wire(body, task_id="t-1", max_rounds=4)


# -- Reporter: from snapshots to events ----------------------------------------------------


def reporter(key: str | int | None = None) -> tuple[Reporter, list[Event]]:
    """A reporter for one task, and the list its events land in."""
    got: list[Event] = []
    return Reporter(got.append, key=key, total=None), got


def test_first_queued_snapshot_is_a_queued_event() -> None:
    """A task first seen in the queue gives TaskQueued, once, carrying that snapshot."""
    queued = snapshot("queue")
    report, got = reporter("k")
    report.snapshot(queued)
    assert got == [TaskQueued(key="k", task_id="t-1", result=queued)]
    assert got[0].result is queued  # type: ignore[union-attr]
    report.snapshot(queued)
    assert len(got) == 1


def test_each_new_round_is_one_event_with_the_best_prompt_so_far() -> None:
    """Rounds completed since the last snapshot come in order, carrying SPO's best so far."""
    before = snapshot("processing", [("p1", True)])
    after = snapshot("processing", [("p1", True), ("p2", False), ("p3", True)])
    report, got = reporter(7)
    report.snapshot(before)
    del got[:]
    report.snapshot(after)
    assert got == [
        RoundCompleted(
            key=7,
            task_id="t-1",
            number=2,
            total=4,
            success=False,
            prompt="p2",
            best_prompt="p1",
            result=after,
        ),
        RoundCompleted(
            key=7,
            task_id="t-1",
            number=3,
            total=4,
            success=True,
            prompt="p3",
            best_prompt="p3",
            result=after,
        ),
    ]
    assert all(e.result is after for e in got)  # type: ignore[union-attr]


def test_a_final_snapshot_gives_its_last_rounds_but_no_outcome() -> None:
    """The end of a wait is outcome_of's job: a snapshot cannot tell a timeout from the end."""
    done = snapshot("success", [("p1", True), ("p2", True)], best_prompt="p2", best_round=2)
    report, got = reporter()
    report.snapshot(done)
    assert [type(e) for e in got] == [RoundCompleted, RoundCompleted]


# -- outcome_of ----------------------------------------------------------------------------

_DONE = snapshot("success", [("p1", True)], best_prompt="p1", best_round=1)
_FAILED = snapshot("fail", [("p1", True)], error="boom")


@pytest.mark.parametrize(
    ("result", "error", "kind"),
    [
        pytest.param(_DONE, None, Succeeded, id="success"),
        pytest.param(_FAILED, None, Failed, id="fail-result"),
        pytest.param(None, TaskFailedError("t-1", _FAILED), Failed, id="fail-error"),
        pytest.param(None, WaitTimeoutError("t-1", 5.0, None), Errored, id="timeout"),
        pytest.param(
            None,
            SubmitOutcomeUnknownError(make_request(), OSError("lost")),
            OutcomeUnknown,
            id="unknown",
        ),
        pytest.param(None, TransientError("x", status=502), Errored, id="other-error"),
    ],
)
def test_outcome_of_names_how_the_wait_ended(
    result: TaskResult | None, error: BaseException | None, kind: type[Outcome]
) -> None:
    """Results and errors map to exactly one outcome class, which keeps what ended the wait."""
    outcome = outcome_of(key="k", task_id="t-1", result=result, error=error)
    assert type(outcome) is kind
    assert outcome.key == "k"
    if isinstance(outcome, Succeeded | Failed):
        assert outcome.result == (result if result is not None else _FAILED)
    else:
        assert outcome.error is error


def test_outcome_of_refuses_a_running_snapshot() -> None:
    """A snapshot that is not terminal cannot end a story."""
    with pytest.raises(ValueError, match="terminal"):
        outcome_of(key=None, task_id="t-1", result=snapshot("processing"))


# -- EventStream ---------------------------------------------------------------------------


def _progress(n: int) -> BatchProgress:
    return BatchProgress(total=n, pending=0, running=0, succeeded=n)


async def test_sync_callback_gets_every_event_in_order() -> None:
    """A plain function receives every event, in emission order, by the time aclose returns."""
    got: list[Event] = []
    async with EventStream(got.append) as stream:
        for n in range(100):
            stream.emit(_progress(n))
    assert got == [_progress(n) for n in range(100)]


async def test_a_slow_async_callback_never_holds_up_emit() -> None:
    """emit returns at once while an async callback is blocked; delivery catches up later."""
    gate = asyncio.Event()
    got: list[Event] = []

    async def slow(event: Event) -> None:
        await gate.wait()
        got.append(event)

    stream = EventStream(slow)
    for n in range(50):
        stream.emit(_progress(n))  # a plain call: it cannot wait
    await asyncio.sleep(0)
    assert got == []
    gate.set()
    await stream.aclose()
    assert len(got) == 50


async def test_iterators_see_events_until_the_stream_closes() -> None:
    """Two iterators each see every event emitted after they began, then end on close."""
    stream = EventStream()
    first, second = stream.subscribe(), stream.subscribe()
    for n in range(3):
        stream.emit(_progress(n))
    stream.close()
    stream.emit(_progress(99))  # ignored after close
    assert [e async for e in first] == [_progress(n) for n in range(3)]
    assert [e async for e in second] == [_progress(n) for n in range(3)]


async def test_overflow_drops_progress_but_keeps_every_final_event() -> None:
    """Past max_pending unread, progress events are dropped and counted; outcomes are kept."""
    stream = EventStream(max_pending=5)
    reader = stream.subscribe()
    for n in range(20):
        stream.emit(_progress(n))
    for n in range(10):
        stream.emit(Errored(key=n, error=RuntimeError("x")))
    stream.close()
    events = [e async for e in reader]
    assert events[:5] == [_progress(n) for n in range(5)]
    assert [e.key for e in events[5:] if isinstance(e, Errored)] == list(range(10))
    assert stream.dropped == 15


async def test_a_raising_callback_is_logged_and_delivery_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One bad event in the callback does not stop the next ones."""
    got: list[int] = []

    def picky(event: Event) -> None:
        assert isinstance(event, BatchProgress)
        if event.total == 1:
            raise RuntimeError("callback bug")
        got.append(event.total)

    with caplog.at_level(logging.ERROR, logger="spo_async"):
        async with EventStream(picky) as stream:
            for n in range(3):
                stream.emit(_progress(n))
    assert got == [0, 2]
    assert "callback bug" in caplog.text


async def test_aclose_leaves_no_task_behind() -> None:
    """After aclose the delivery task is gone, also when aclose itself is cancelled."""
    before = asyncio.all_tasks()
    stream = EventStream(lambda e: asyncio.sleep(10))
    stream.emit(_progress(1))
    closing = asyncio.create_task(stream.aclose())
    for _ in range(3):  # the delivery task starts, and blocks in the callback
        await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()


# -- a real wait -----------------------------------------------------------------------------


async def test_a_wait_tells_legal_events_with_its_retries(
    client: AsyncSPOClient, emu: Emulator
) -> None:
    """A single optimize emits submitted, its rounds of n, its retries and its outcome, in order."""
    emu.inject(Fault(FaultKind.SERVER_ERROR_HTML, endpoint="task", times=2))
    request: OptimizationRequest = make_request(max_rounds=4)
    got: list[Event] = []
    async with EventStream(got.append) as stream:
        result = await client.optimize(request, on_event=stream)
    assert_legal_order(got)
    assert isinstance(got[0], TaskSubmitted)
    rounds = [e for e in got if isinstance(e, RoundCompleted)]
    assert [e.number for e in rounds] == [1, 2, 3, 4]
    assert all(e.total == 4 for e in rounds)
    assert sum(isinstance(e, TaskRetrying) for e in got) == 2
    assert isinstance(got[-1], Succeeded)
    assert got[-1].result == result
    assert rounds[-1].best_prompt == result.best_prompt


async def test_as_stream_owns_only_what_it_made() -> None:
    """A callback gets a stream to close; a stream passed in is the caller's."""
    mine, owned = as_stream(print)
    assert isinstance(mine, EventStream)
    assert owned
    await mine.aclose()
    theirs = EventStream()
    assert as_stream(theirs) == (theirs, False)
    assert as_stream(None) == (None, False)
