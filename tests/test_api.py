"""The 1.0 API's promises, one test per promise, on the emulator.

A small coherent surface, one observation channel, per-call policy through
``with_options``, nothing paid before every argument is checked, ``optimize``
bounded as a whole, batches that stop with their consumer, hooks that never
touch another caller's wait, a sync client, and a public JSON form of results.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import inspect
import pathlib
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
import spo_async
from spo_async import (
    AsyncSPOClient,
    ConfigurationError,
    Errored,
    Event,
    EventStream,
    RequestLimiter,
    RequestValidationError,
    RetryPolicy,
    RoundCompleted,
    SPOClient,
    SubmitOutcomeUnknownError,
    Succeeded,
    TaskResult,
    TaskRetrying,
    TaskSubmitted,
    WaitTimeoutError,
)
from spo_async._schedules import PollModeLike
from spo_async.polling import FixedSchedule, PollMode, PollState
from spo_async.testing import Emulator, EmulatorConfig, Fault, FaultKind

from .conftest import ClientFactory, make_request, until

PACKAGE = pathlib.Path(spo_async.__file__).parent


# -- 1. a small, coherent surface ---------------------------------------------------------


def test_the_top_level_surface_has_at_most_45_names() -> None:
    """``spo_async.__all__`` stays small: every name a typical program needs, no more."""
    assert len(spo_async.__all__) <= 45


def test_no_exported_class_ends_in_error_unless_it_is_an_exception() -> None:
    """A name ending in ``Error`` can be caught: ``except spo_async.X`` never raises TypeError."""
    for name in spo_async.__all__:
        value = getattr(spo_async, name)
        if isinstance(value, type) and name.endswith("Error"):
            assert issubclass(value, spo_async.SPOError), name


async def test_a_single_wait_ends_its_events_with_the_outcome_a_batch_would_yield(
    client: AsyncSPOClient,
) -> None:
    """One vocabulary: a single ``optimize`` ends its event stream with a ``Succeeded``."""
    events: list[Event] = []
    result = await client.optimize(make_request(), on_event=events.append)
    assert isinstance(events[0], TaskSubmitted)
    assert [e.number for e in events if isinstance(e, RoundCompleted)] == [1, 2, 3]
    final = events[-1]
    assert isinstance(final, Succeeded)
    assert final.result == result
    assert final.key is None
    assert final.index is None


async def test_a_timed_out_wait_ends_with_an_errored_outcome_carrying_the_timeout(
    make_client: ClientFactory, emu: Emulator
) -> None:
    """A timeout is one more way a wait ends with an error: ``Errored(error=WaitTimeoutError)``."""
    client = make_client(schedule=FixedSchedule(interval=0.01))
    task_id = await client.submit(make_request(max_rounds=50))
    events: list[Event] = []
    with pytest.raises(WaitTimeoutError):
        await client.wait_for_result(task_id, timeout=0.02, on_event=events.append)
    final = events[-1]
    assert isinstance(final, Errored)
    assert isinstance(final.error, WaitTimeoutError)
    assert final.task_id == task_id


# -- 2. one observation channel -----------------------------------------------------------


def test_on_event_is_the_only_hook_of_every_method() -> None:
    """No method takes ``on_progress``, ``on_retry``, ``schedule`` or ``retry`` per call."""
    for name in ("submit", "get_task", "wait_for_result", "optimize", "optimize_many"):
        parameters = inspect.signature(getattr(AsyncSPOClient, name)).parameters
        assert not {"on_progress", "on_retry", "schedule", "retry"} & set(parameters), name
    assert not hasattr(spo_async, "RetryNotice")


async def test_retries_reach_on_event_as_task_retrying(
    make_client: ClientFactory, emu: Emulator
) -> None:
    """A 429 on the submit and a 502 on a poll both show up as ``TaskRetrying`` events."""
    emu.inject(
        Fault(FaultKind.RATE_LIMIT, endpoint="submit", times=1),
        Fault(FaultKind.SERVER_ERROR_HTML, endpoint="task", times=1),
    )
    events: list[Event] = []
    await make_client().optimize(make_request(), on_event=events.append)
    retries = [e for e in events if isinstance(e, TaskRetrying)]
    assert [r.operation.split()[0] for r in retries] == ["POST", "GET"]
    assert retries[0].task_id is None
    assert retries[1].task_id is not None


def modes_seen(client: AsyncSPOClient) -> tuple[AsyncSPOClient, list[PollMode]]:
    """A view whose schedule records the mode of every look it plans."""
    modes: list[PollMode] = []

    def schedule(state: PollState) -> float:
        modes.append(state.mode)
        return 0.001

    return client.with_options(schedule=schedule), modes


@pytest.mark.parametrize(
    ("watched", "poll_mode", "expected"),
    [
        (False, None, PollMode.COMPLETION),
        (True, None, PollMode.PROGRESS),
        (True, PollMode.COMPLETION, PollMode.COMPLETION),
        (True, "completion", PollMode.COMPLETION),
        (False, PollMode.PROGRESS, PollMode.PROGRESS),
    ],
)
async def test_poll_mode_says_what_the_looks_are_for_whoever_listens(
    client: AsyncSPOClient, watched: bool, poll_mode: PollModeLike | None, expected: PollMode
) -> None:
    """``on_event`` asks for every round by default; ``poll_mode`` says otherwise."""
    view, modes = modes_seen(client)
    events: list[Event] = []
    result = await view.optimize(
        make_request(max_rounds=3),
        on_event=events.append if watched else None,
        poll_mode=poll_mode,
    )
    assert result.succeeded
    assert modes
    assert set(modes) == {expected}
    if watched:  # looking for the end only still reports every round a look saw
        assert [e.number for e in events if isinstance(e, RoundCompleted)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("completion", "completion", PollMode.COMPLETION),
        ("completion", "progress", PollMode.PROGRESS),
        ("completion", None, PollMode.PROGRESS),  # the second passes on_event
    ],
)
async def test_waits_sharing_one_loop_look_for_every_round_while_any_asks(
    client: AsyncSPOClient,
    first: PollModeLike,
    second: PollModeLike | None,
    expected: PollMode,
) -> None:
    """One task's waits share one loop; it looks for rounds while any waiter asks for them."""
    view, modes = modes_seen(client)
    task_id = await view.submit(make_request(max_rounds=3))
    seen: list[list[int]] = [[], []]

    def rounds(k: int) -> Callable[[Event], None]:
        return lambda e: seen[k].append(e.number) if isinstance(e, RoundCompleted) else None

    await asyncio.gather(
        view.wait_for_result(task_id, on_event=rounds(0), poll_mode=first),
        view.wait_for_result(task_id, on_event=rounds(1), poll_mode=second),
    )
    # The first delay is planned before the second waiter joins; every later one with both.
    assert set(modes[1:]) == {expected}
    assert seen == [[1, 2, 3], [1, 2, 3]]


async def test_a_batch_polls_for_the_end_when_told_even_with_a_journal(
    client: AsyncSPOClient, tmp_path: pathlib.Path
) -> None:
    """A batch with a journal looks for every round unless ``poll_mode`` says the end."""
    for poll_mode, expected in [
        (None, PollMode.PROGRESS),
        (PollMode.COMPLETION, PollMode.COMPLETION),
    ]:
        view, modes = modes_seen(client)
        outcomes = await view.optimize_all(
            [make_request(max_rounds=2)] * 3,
            journal=tmp_path / f"{poll_mode}.db",
            poll_mode=poll_mode,
        )
        assert all(o.ok for o in outcomes)
        assert set(modes) == {expected}


# -- 3. per-call policy through with_options ------------------------------------------------


async def test_a_view_shares_the_pool_and_limiter_but_keeps_its_own_options(
    client: AsyncSPOClient,
) -> None:
    """``with_options`` returns a cheap view: same pool and limiter, other options."""
    view = client.with_options(timeout=5.0, retry=RetryPolicy.never())
    assert view.limiter is client.limiter
    assert view.timeout == 5.0
    assert client.timeout != 5.0
    assert view.retry == RetryPolicy.never()
    await view.optimize(make_request())
    await view.aclose()
    assert client.closed


async def test_waits_with_different_schedules_never_share_one_loop(
    make_client: ClientFactory, emu: Emulator
) -> None:
    """Two waiters on one task with different schedules each poll on their own schedule."""
    client = make_client(schedule=FixedSchedule(interval=0.001))
    task_id = await client.submit(make_request(max_rounds=4))
    seen: dict[str, int] = {}

    def counting(label: str, interval: float) -> Callable[[Any], float]:
        def schedule(state: Any) -> float:
            seen[label] = seen.get(label, 0) + 1
            return 0.0 if state.polls == 0 else interval

        return schedule

    fast = client.with_options(schedule=counting("fast", 0.001))
    slow = client.with_options(schedule=counting("slow", 0.01))
    first, second = await asyncio.gather(
        fast.wait_for_result(task_id), slow.wait_for_result(task_id)
    )
    assert first == second
    assert seen["fast"] > 1
    assert seen["slow"] > 1


async def test_waits_with_the_same_policy_share_one_poll_loop(
    client: AsyncSPOClient, emu: Emulator
) -> None:
    """Ten waiters of one task under one policy cost the GETs of one."""
    task_id = await client.submit(make_request())
    alone = await client.wait_for_result(task_id)
    emu.reset_records()
    task_id = await client.submit(make_request())
    results = await asyncio.gather(*(client.wait_for_result(task_id) for _ in range(10)))
    assert all(r.succeeded for r in results)
    assert alone.succeeded
    gets = emu.task_gets[task_id]
    assert 1 <= gets < 10 * 3  # one loop: far fewer than ten loops' worth


# -- 4. every argument is checked before any network call ------------------------------------


# fmt: off
BAD_CALLS: list[tuple[str, Callable[[Any], Any], type[Exception]]] = [
    ("optimize timeout=-5", lambda c: c.optimize(make_request(), timeout=-5), ConfigurationError),
    (
        "optimize timeout='600'",
        lambda c: c.optimize(make_request(), timeout="600"),
        ConfigurationError,
    ),
    (
        "optimize timeout=nan",
        lambda c: c.optimize(make_request(), timeout=float("nan")),
        ConfigurationError,
    ),
    ("optimize on_event=42", lambda c: c.optimize(make_request(), on_event=42), ConfigurationError),
    (
        "optimize raise_on_failure='no'",
        lambda c: c.optimize(make_request(), raise_on_failure="no"),
        ConfigurationError,
    ),
    ("optimize request=dict", lambda c: c.optimize({"prompt": "x"}), RequestValidationError),
    ("submit request=None", lambda c: c.submit(None), RequestValidationError),
    ("wait task_id=''", lambda c: c.wait_for_result(""), RequestValidationError),
    ("wait task_id=5", lambda c: c.wait_for_result(5), RequestValidationError),
    ("wait max_rounds=0", lambda c: c.wait_for_result("t", max_rounds=0), ConfigurationError),
    ("wait on_event='x'", lambda c: c.wait_for_result("t", on_event="x"), ConfigurationError),
    ("get_task max_rounds=True", lambda c: c.get_task("t", max_rounds=True), ConfigurationError),
    (
        "optimize poll_mode='fast'",
        lambda c: c.optimize(make_request(), poll_mode="fast"),
        ConfigurationError,
    ),
    ("wait poll_mode=True", lambda c: c.wait_for_result("t", poll_mode=True), ConfigurationError),
    (
        "optimize_many poll_mode=2",
        lambda c: c.optimize_many([make_request()], poll_mode=2),
        ConfigurationError,
    ),
    (
        "optimize_all poll_mode='rounds'",
        lambda c: c.optimize_all([make_request()], poll_mode="rounds"),
        ConfigurationError,
    ),
    (
        "optimize_all on_event=42",
        lambda c: c.optimize_all([make_request()], on_event=42),
        ConfigurationError,
    ),
    (
        "optimize_all concurrency=0",
        lambda c: c.optimize_all([make_request()], concurrency=0),
        ConfigurationError,
    ),
    (
        "optimize_all keys=1",
        lambda c: c.optimize_all([make_request()], keys=1),
        ConfigurationError,
    ),
    (
        "optimize_all journal=3",
        lambda c: c.optimize_all([make_request()], journal=3),
        ConfigurationError,
    ),
    (
        "optimize_all timeout=-1",
        lambda c: c.optimize_all([make_request()], timeout=-1),
        ConfigurationError,
    ),
    (
        "optimize_all bad row",
        lambda c: c.optimize_all([make_request(), "row"]),
        RequestValidationError,
    ),
    ("with_options timeout=-1", lambda c: c.with_options(timeout=-1), ConfigurationError),
    ("with_options retry=3", lambda c: c.with_options(retry=3), ConfigurationError),
    ("with_options schedule=3", lambda c: c.with_options(schedule=3), ConfigurationError),
]
# fmt: on


@pytest.mark.parametrize(("label", "call", "error"), BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
async def test_a_bad_argument_fails_before_anything_is_sent(
    client: AsyncSPOClient,
    emu: Emulator,
    label: str,
    call: Callable[[Any], Any],
    error: type[Exception],
) -> None:
    """Every bad argument raises its typed error (also a ValueError) and sends nothing."""

    async def attempt() -> None:
        outcome = call(client)
        if inspect.isawaitable(outcome):
            await outcome

    with pytest.raises(error) as raised:
        await attempt()
    assert isinstance(raised.value, ValueError)
    assert emu.request_log == []
    assert emu.tasks_created == 0


def test_bad_client_settings_are_configuration_errors() -> None:
    """Every constructor mistake is a ``ConfigurationError``, never a bare ValueError."""
    for options in (
        {"request_timeout": 0},
        {"timeout": -1},
        {"max_connections": 0},
        {"max_response_bytes": "big"},
        {"limiter": object()},
        {"strict_status": "yes"},
        {"lang": "fr"},
    ):
        with pytest.raises(ConfigurationError):
            AsyncSPOClient("sk-test", **options)
    with pytest.raises(ConfigurationError):
        EventStream(max_pending=0)
    with pytest.raises(ConfigurationError):
        RetryPolicy(attempts=0)


# -- 5. optimize(timeout=T) bounds the whole call -------------------------------------------


async def test_a_deadline_during_a_hanging_submit_says_the_outcome_is_unknown(
    make_client: ClientFactory, emu: Emulator
) -> None:
    """``optimize(timeout=...)`` does not wait out a submit that hangs: a task may exist."""
    emu.inject(Fault(FaultKind.DELAY, endpoint="submit", delay=30.0, times=1))
    client = make_client(request_timeout=60.0)
    async with asyncio.timeout(10):  # a guard: the call itself must end far sooner
        with pytest.raises(SubmitOutcomeUnknownError):
            await client.optimize(make_request(), timeout=0.2)


async def test_a_deadline_before_the_submit_left_says_no_task_exists(
    make_client: ClientFactory, emu: Emulator
) -> None:
    """A deadline that passes while the submit is still queued locally creates no task."""
    client = make_client(limiter=RequestLimiter(rate=0.05))  # one request per 20 s
    await client.submit(make_request("takes the only token for 20 s"))
    async with asyncio.timeout(10):
        with pytest.raises(WaitTimeoutError) as raised:
            await client.optimize(make_request(), timeout=0.1)
    assert raised.value.task_id is None
    assert emu.tasks_created == 1


async def test_a_cancelled_optimize_tells_the_task_id_it_created(
    make_client: ClientFactory,
) -> None:
    """Cancelling ``optimize`` after the submit: the event and the note both name the task."""
    client = make_client(schedule=FixedSchedule(interval=0.01))
    submitted: list[str] = []
    arrived = asyncio.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, TaskSubmitted):
            submitted.append(event.task_id)
            arrived.set()

    call = asyncio.ensure_future(client.optimize(make_request(max_rounds=50), on_event=on_event))
    await arrived.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError) as raised:
        await call
    assert any(submitted[0] in note for note in raised.value.__notes__)


# -- 6. batches stop with their consumer ----------------------------------------------------


async def test_a_batch_left_by_break_submits_at_most_concurrency_more(
    make_client: ClientFactory, emu: Emulator
) -> None:
    """Breaking out of a plain ``async for`` (iterator still referenced) stops the submits."""
    client = make_client()
    batch = client.optimize_many([make_request(f"prompt {i}") for i in range(100)], concurrency=4)
    async for _ in batch:
        break
    at_break = emu.tasks_created
    # The dropped iterator closes the batch; once no worker is left, nothing can submit.
    await until(
        lambda: not [t for t in asyncio.all_tasks() if "batch worker" in t.get_name()],
        what="the batch's workers to end after the break",
    )
    assert emu.tasks_created <= at_break + 4
    await batch.aclose()


async def test_leaving_a_batch_stops_new_submits_and_reports_running_tasks(
    make_client: ClientFactory, emu: Emulator
) -> None:
    """``async with`` a batch: leaving it stops submitting at once and lists what still runs."""
    client = make_client(schedule=FixedSchedule(interval=0.01))
    requests = [make_request(f"prompt {i}", max_rounds=50) for i in range(20)]
    three = asyncio.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, TaskSubmitted) and len(batch.unfinished_task_ids) == 3:
            three.set()

    async with client.optimize_many(requests, concurrency=3, on_event=on_event) as batch:
        await three.wait()
    created = emu.tasks_created
    # Leaving ended every worker (aclose waits for them): nothing is left to submit later.
    assert not [t for t in asyncio.all_tasks() if "batch worker" in t.get_name()]
    assert emu.tasks_created == created == 3
    assert len(batch.unfinished_task_ids) == 3
    assert set(batch.unfinished_task_ids) <= set(emu.tasks)


# -- 7. one caller's hook never breaks or delays another caller's wait -----------------------


async def test_a_raising_hook_breaks_no_other_waiter(client: AsyncSPOClient) -> None:
    """A callback that raises is logged; its own wait and a second waiter's both succeed."""
    task_id = await client.submit(make_request())

    def broken(event: Event) -> None:
        raise RuntimeError("a bug in the caller's hook")

    healthy: list[Event] = []
    results = await asyncio.gather(
        client.wait_for_result(task_id, on_event=broken),
        client.wait_for_result(task_id, on_event=healthy.append),
    )
    assert all(r.succeeded for r in results)
    assert isinstance(healthy[-1], Succeeded)


async def test_a_slow_hook_stretches_neither_its_own_deadline_nor_another_wait(
    make_client: ClientFactory,
) -> None:
    """A callback slower than the task: each wait still returns by its own deadline."""
    client = make_client()
    task_id = await client.submit(make_request())

    async def slow(event: Event) -> None:
        await asyncio.sleep(30)

    async with asyncio.timeout(10):  # a guard: both waits must end far sooner
        results = await asyncio.gather(
            client.wait_for_result(task_id, on_event=slow, timeout=0.5),
            client.wait_for_result(task_id),
        )
    assert all(r.succeeded for r in results)


# -- 8. a sync client ------------------------------------------------------------------------


def test_the_sync_client_optimizes_and_leaves_no_thread_behind() -> None:
    """``SPOClient`` runs the whole flow without await and stops its thread on exit."""
    from spo_async.testing import ThreadedEmulator

    before = set(threading.enumerate())
    with ThreadedEmulator(EmulatorConfig(round_seconds=0.004)) as emu:
        with SPOClient(
            emu.api_key, base_url=emu.base_url, schedule=FixedSchedule(interval=0.002)
        ) as client:
            result = client.optimize(make_request())
            again = client.get_task(result.task_id)
            outcomes = client.optimize_all([make_request(), make_request("other")])
        assert client.closed
    assert result.succeeded
    assert again.succeeded
    assert [o.ok for o in outcomes] == [True, True]
    gc.collect()
    assert set(threading.enumerate()) <= before


# -- 9. the public JSON form ----------------------------------------------------------------


async def test_a_result_round_trips_through_its_public_json_form(client: AsyncSPOClient) -> None:
    """``TaskResult.from_dict(result.to_dict())`` gives back an equal result."""
    result = await client.optimize(make_request())
    data = result.to_dict()
    assert data["task_id"] == result.task_id
    assert TaskResult.from_dict(data) == result


def test_from_dict_refuses_what_is_not_a_result_with_a_typed_error() -> None:
    """A malformed dict is a ``RequestValidationError`` naming the problem."""
    for data in ({}, {"task_id": "t", "status": 5}, {"task_id": "t", "round_data_list": "x"}):
        with pytest.raises(RequestValidationError):
            TaskResult.from_dict(data)


# -- 10. names that stay ---------------------------------------------------------------------


def test_the_names_users_rely_on_stay() -> None:
    """The promised names and keyword arguments exist, spelled as promised."""
    for name in (
        "AsyncSPOClient",
        "OptimizationRequest",
        "QAPair",
        "TaskResult",
        "Round",
        "TaskStatus",
        "SPOError",
        "Succeeded",
        "Failed",
        "Errored",
        "OutcomeUnknown",
    ):
        assert name in spo_async.__all__
    for method in ("submit", "get_task", "wait_for_result", "optimize", "optimize_many"):
        assert callable(getattr(AsyncSPOClient, method))
    assert {"concurrency", "journal", "timeout", "on_event"} <= set(
        inspect.signature(AsyncSPOClient.optimize_all).parameters
    )
    from spo_async.testing import Emulator as PublicEmulator

    assert PublicEmulator is Emulator


# -- 11. the layout shows it -------------------------------------------------------------------


def test_every_exception_class_lives_in_the_errors_module() -> None:
    """One place to read the whole error tree: no exception is defined anywhere else."""
    for path in PACKAGE.glob("_*.py"):
        if path.name == "_errors.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                assert node.name.startswith("_"), f"{path.name} defines {node.name}"


def test_importing_the_cli_does_not_load_the_emulator_command_line() -> None:
    """``spo_async.cli`` loads ``spo_async.testing.__main__`` only for ``--emulator``."""
    code = (
        "import sys, spo_async.cli, spo_async.cli.__main__ as m;"
        "print('spo_async.testing.__main__' in sys.modules)"
    )
    out = subprocess.run(  # noqa: S603 - the test's own interpreter and code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
