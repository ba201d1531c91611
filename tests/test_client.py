"""AsyncSPOClient end to end against the emulator over real loopback HTTP."""

from __future__ import annotations

import asyncio
import gc
import json
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import aiohttp
import attrs
import pytest
from spo_async import (
    AsyncSPOClient,
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    Errored,
    Event,
    Failed,
    InsufficientBalanceError,
    InvalidRequestError,
    NotFoundError,
    ProtocolError,
    RequestValidationError,
    RoundCompleted,
    Succeeded,
    TaskFailedError,
    TaskQueued,
    TaskResult,
    TaskStatus,
    TaskSubmitted,
    WaitTimeoutError,
)
from spo_async.polling import FixedSchedule, PollState
from spo_async.testing import Emulator, EmulatorConfig, Fault, FaultKind, ManualClock, TaskOutcome
from spo_async.transport import AiohttpTransport, HTTPRequest, HTTPResponse

from .conftest import (
    FAST,
    NO_CHANNEL_ERROR,
    ClientFactory,
    VirtualTime,
    make_request,
    on_virtual_time,
    unpaced_limiter,
    until,
)

#: Where the client looks for its key when none is passed, in this order.
API_KEY_ENV_VARS = ("AI302_API_KEY", "302AI_API_KEY", "AI302_KEY", "NEXT_PUBLIC_302_API_KEY")


@pytest.fixture
def emulator_config(clock: ManualClock) -> EmulatorConfig:
    """The shared fast emulator, its tasks on the test's clock."""
    return attrs.evolve(FAST, clock=clock)


@pytest.fixture
def make_client(make_client: ClientFactory, virtual_time: VirtualTime) -> ClientFactory:
    """Clients whose waits move the emulator's clock on: no test waits for a round for real."""
    return on_virtual_time(make_client, virtual_time)


async def test_submit_returns_the_task_id_and_sends_the_wire_body(
    client: AsyncSPOClient, emu: Emulator
) -> None:
    """A submit is one POST whose body holds every request field under its wire name."""
    request = make_request(requirements="reply in Chinese", language="en", temperature=0.3)
    task_id = await client.submit(request)

    assert isinstance(task_id, str)
    assert task_id
    assert emu.tasks_created == 1
    (record,) = emu.submits
    assert record.task_id == task_id
    assert record.body == {
        "prompt": request.prompt,
        "qa": [{"question": p.question, "answer": p.answer} for p in request.qa],
        "max_rounds": 3,
        "model": "claude-3-5-sonnet-20240620",
        "requirements": "reply in Chinese",
        "language": "en",
        "temperature": 0.3,
    }


async def test_get_task_sends_exactly_one_get(client: AsyncSPOClient, emu: Emulator) -> None:
    """get_task reads one snapshot with one GET, and knows max_rounds of its own tasks."""
    task_id = await client.submit(make_request(max_rounds=4))
    snapshot = await client.get_task(task_id)

    assert emu.task_gets[task_id] == 1
    assert snapshot.task_id == task_id
    assert snapshot.max_rounds == 4
    assert snapshot.status in set(TaskStatus)


async def test_wait_for_result_returns_the_final_snapshot(
    client: AsyncSPOClient, emu: Emulator
) -> None:
    """A finished task has every round, and the best prompt is its best round's prompt."""
    task_id = await client.submit(make_request(max_rounds=5))
    result = await client.wait_for_result(task_id, timeout=30)

    assert result.succeeded
    assert result.is_terminal
    assert [r.number for r in result.rounds] == [1, 2, 3, 4, 5]
    assert result.rounds[0].prompt == "Act as the user's girlfriend"
    assert result.best is not None
    assert result.best_prompt == result.best.prompt
    assert result.best_round == result.best.number
    assert len(result.completed_rounds) == result.max_rounds == 5
    assert emu.task_gets[task_id] >= 1


async def test_optimize_is_submit_then_wait(client: AsyncSPOClient, emu: Emulator) -> None:
    """optimize() creates one task and returns its final snapshot."""
    result = await client.optimize(make_request(), timeout=30)

    assert result.succeeded
    assert emu.tasks_created == 1
    assert result.task_id == emu.submits[0].task_id


def snapshots(event: Event) -> TaskResult | None:
    """The snapshot an event carries: queued and round events, and the final outcome."""
    if isinstance(event, TaskQueued | RoundCompleted | Succeeded | Failed):
        return event.result
    return None


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_on_event_sees_each_change_once_in_order(client: AsyncSPOClient, kind: str) -> None:
    """on_event (sync or async) hears each round once, in order, with growing snapshots."""
    seen: list[Event] = []

    def sync_hook(event: Event) -> None:
        seen.append(event)

    async def async_hook(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append(event)

    hook = sync_hook if kind == "sync" else async_hook
    result = await client.optimize(make_request(max_rounds=4), on_event=hook, timeout=30)

    results = [r for r in map(snapshots, seen) if r is not None]
    assert results
    assert results[-1] == result
    done = [len(r.completed_rounds) for r in results]
    assert done == sorted(done)
    assert [e.number for e in seen if isinstance(e, RoundCompleted)] == [1, 2, 3, 4]
    assert sum(isinstance(e, TaskQueued) for e in seen) <= 1


async def test_a_failed_task_raises_task_failed_with_the_final_result(
    client: AsyncSPOClient, emu: Emulator
) -> None:
    """A task ending in fail raises TaskFailedError carrying the task id and final snapshot."""
    emu.script_next(TaskOutcome(fail_at_round=2, error={"err_code": -1024, "message": "boom"}))
    task_id = await client.submit(make_request())

    with pytest.raises(TaskFailedError) as info:
        await client.wait_for_result(task_id, timeout=30)

    assert info.value.task_id == task_id
    assert info.value.result.failed
    assert info.value.result.error is not None
    assert info.value.result.error.err_code == -1024
    assert "boom" in str(info.value)


async def test_raise_on_failure_false_returns_the_failed_snapshot(
    client: AsyncSPOClient, emu: Emulator
) -> None:
    """With raise_on_failure=False a failed task comes back as a result, error included."""
    emu.script_next(TaskOutcome(fail_at_round=3, error="upstream exploded"))
    result = await client.optimize(make_request(), raise_on_failure=False, timeout=30)

    assert result.failed
    assert result.error is not None
    assert result.error.message == "upstream exploded"


async def test_an_error_with_status_processing_still_means_failure(
    client: AsyncSPOClient, emu: Emulator
) -> None:
    """The service's rule: a truthy error fails the task whatever its status says."""
    emu.script_next(TaskOutcome(fail_at_round=2, error="bad", fail_status="processing"))
    result = await client.optimize(make_request(), raise_on_failure=False, timeout=30)

    assert result.status is TaskStatus.FAIL
    assert result.raw_status == "processing"


@pytest.mark.parametrize(
    ("config", "request_changes", "error", "err_code", "status"),
    [
        pytest.param(
            EmulatorConfig(api_keys=frozenset({"another-key"})),
            {},
            AuthenticationError,
            -10001,
            401,
            id="bad-key",
        ),
        pytest.param(
            EmulatorConfig(insufficient_balance_keys=frozenset({"sk-spo-emulator"})),
            {},
            InsufficientBalanceError,
            -10004,
            402,
            id="no-balance",
        ),
        pytest.param(
            EmulatorConfig(models={"claude-3-5-sonnet-20240620"}),
            {"model": "no-such-model"},
            NO_CHANNEL_ERROR,
            -10008,
            503,
            id="unknown-model",
        ),
        pytest.param(
            EmulatorConfig(max_rounds_limit=3),
            {"max_rounds": 5},
            InvalidRequestError,
            -10011,
            400,
            id="invalid-request",
        ),
    ],
)
async def test_submit_errors_map_to_typed_errors(
    config: EmulatorConfig,
    request_changes: dict[str, Any],
    error: type[Exception],
    err_code: int,
    status: int,
) -> None:
    """Each error envelope the service sends on submit comes out as its own error class."""
    async with (
        Emulator(config) as emu,
        AsyncSPOClient(api_key="sk-spo-emulator", base_url=emu.base_url) as client,
    ):
        with pytest.raises(error) as info:
            await client.submit(make_request(**request_changes))
    assert info.value.err_code == err_code  # type: ignore[attr-defined]
    assert info.value.status == status  # type: ignore[attr-defined]
    assert info.value.messages["en"]  # type: ignore[attr-defined]
    assert emu.tasks_created == 0
    assert len(emu.submits) == 1, "a permanent error is never retried"


async def test_an_unknown_task_id_raises_not_found(client: AsyncSPOClient) -> None:
    """Both get_task and wait_for_result report an unknown task id as NotFoundError."""
    with pytest.raises(NotFoundError):
        await client.get_task("no-such-task")
    with pytest.raises(NotFoundError) as info:
        await client.wait_for_result("no-such-task", timeout=5)
    assert info.value.task_id == "no-such-task"


async def test_bad_input_fails_before_any_request(client: AsyncSPOClient, emu: Emulator) -> None:
    """Validation errors name the field and no request reaches the service."""
    with pytest.raises(RequestValidationError) as info:
        make_request(max_rounds=1)
    assert info.value.field == "max_rounds"
    with pytest.raises(RequestValidationError):
        await client.submit({"prompt": "x"})  # type: ignore[arg-type]
    with pytest.raises(RequestValidationError):
        await client.get_task("../etc/passwd")
    with pytest.raises(RequestValidationError):
        await client.wait_for_result("a/b")
    with pytest.raises(ConfigurationError):
        await client.wait_for_result("task", timeout=-1)
    assert emu.request_log == []


async def test_the_deadline_raises_wait_timeout_with_the_last_snapshot(
    make_client: ClientFactory, emu: Emulator
) -> None:
    """A task still running at the deadline raises WaitTimeoutError, a TimeoutError too."""
    client = make_client(schedule=FixedSchedule(interval=0.01))
    emu.script_next(TaskOutcome(round_seconds=60.0))
    task_id = await client.submit(make_request())

    with pytest.raises(WaitTimeoutError) as info:
        await client.wait_for_result(task_id, timeout=0.05)

    assert isinstance(info.value, TimeoutError)
    assert info.value.task_id == task_id
    assert info.value.last_result is not None
    assert not info.value.last_result.is_terminal
    assert "keeps running" in str(info.value)


async def test_no_sleep_crosses_the_deadline(make_client: ClientFactory, emu: Emulator) -> None:
    """With a fake clock, the sleeps of a wait add up to the deadline and never beyond it."""
    now = [0.0]
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    client = make_client(
        clock=lambda: now[0], sleep=fake_sleep, schedule=FixedSchedule(interval=7.0)
    )
    emu.script_next(TaskOutcome(round_seconds=600.0))
    task_id = await client.submit(make_request())

    with pytest.raises(WaitTimeoutError):
        await client.wait_for_result(task_id, timeout=30.0)

    assert sleeps == [7.0, 7.0, 7.0, 7.0, 2.0]
    assert sum(sleeps) == pytest.approx(30.0)


class TimedTransport:
    """The client's HTTP stack, noting when (on the test's clock) each request left."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._inner = AiohttpTransport()
        self._clock = clock
        self.sent: list[tuple[str, float]] = []

    async def send(self, request: HTTPRequest, *, timeout: float) -> HTTPResponse:
        self.sent.append((request.method, self._clock()))
        return await self._inner.send(request, timeout=timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_a_schedules_first_delay_comes_before_the_first_look(
    make_client: ClientFactory, emu: Emulator
) -> None:
    """``first`` is slept before the first GET; the later looks follow ``interval``."""
    now = [0.0]

    async def fake_sleep(seconds: float) -> None:
        now[0] += seconds

    transport = TimedTransport(lambda: now[0])
    client = make_client(
        clock=lambda: now[0],
        sleep=fake_sleep,
        schedule=FixedSchedule(first=4.0, interval=7.0),
        transport=transport,
    )
    emu.script_next(TaskOutcome(round_seconds=600.0))
    task_id = await client.submit(make_request())

    with pytest.raises(WaitTimeoutError):
        await client.wait_for_result(task_id, timeout=20.0)

    # GETs at 4 (after the first delay), 11, 18, then the last look at the deadline (20).
    assert [at for method, at in transport.sent if method == "GET"] == [4.0, 11.0, 18.0, 20.0]
    assert emu.task_gets[task_id] == 4


class HeldSleep:
    """A client's sleep that lasts until something ends it: the test, or a wake."""

    def __init__(self) -> None:
        self.held: list[asyncio.Future[None]] = []

    def clock(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self.held.append(future)
        await future


class WakingSchedule:
    """Looks 100 s apart and keeps every wake offered; after a wake, looks at once."""

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.wake: Callable[[], None] | None = None
        self.news = False

    def next_delay(self, state: PollState) -> float:
        self.asked.append(state.polls)
        if state.polls == 0 or self.news:
            self.news = False
            return 0.0
        return 100.0

    def wake_on_news(self, state: PollState, wake: Callable[[], None]) -> bool:
        self.wake = wake
        return True


class AsleepForNews(NamedTuple):
    """A wait asleep after its first look, on a schedule that kept its wake."""

    time: HeldSleep
    schedule: WakingSchedule
    task_id: str
    waiter: asyncio.Task[TaskResult]
    before: set[asyncio.Task[Any]]  # the tasks there were before the wait began


async def asleep_for_news(make_client: ClientFactory) -> AsleepForNews:
    time, schedule = HeldSleep(), WakingSchedule()
    client = make_client(
        clock=time.clock, sleep=time.sleep, schedule=schedule, limiter=unpaced_limiter()
    )
    task_id = await client.submit(make_request())
    before = asyncio.all_tasks()
    waiter = asyncio.create_task(client.wait_for_result(task_id, timeout=None))
    await until(lambda: schedule.wake is not None and time.held, what="the sleep after a look")
    return AsleepForNews(time, schedule, task_id, waiter, before)


@pytest.mark.parametrize("from_thread", [False, True], ids=["same loop", "another thread"])
async def test_a_schedule_with_news_ends_the_sleep_and_is_asked_again(
    make_client: ClientFactory, emu: Emulator, from_thread: bool
) -> None:
    """A wake ends the 100 s sleep; the schedule, asked again with the same polls, says look now.

    One schedule may serve clients on several loops, so a wake may come from another
    thread; debug mode makes a call on the loop from the wrong thread raise.
    """
    time, schedule, task_id, waiter, _ = await asleep_for_news(make_client)
    assert emu.task_gets[task_id] == 1
    asyncio.get_running_loop().set_debug(True)

    schedule.news = True
    assert schedule.wake is not None
    if from_thread:
        await asyncio.to_thread(schedule.wake)
    else:
        schedule.wake()
    await until(lambda: emu.task_gets[task_id] == 2, what="the look the news asked for")

    assert time.held[0].cancelled()  # ended by the wake, not run out
    assert schedule.asked[:3] == [0, 1, 1]  # the same polls: a new plan, nothing new seen
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_cancelling_a_wait_asleep_for_news_leaves_no_task_behind(
    make_client: ClientFactory, emu: Emulator
) -> None:
    """The sleep a wake could end runs as a task of its own: a cancelled wait ends it too."""
    time, schedule, task_id, waiter, before = await asleep_for_news(make_client)

    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    assert time.held[0].cancelled()
    assert {task for task in asyncio.all_tasks() if not task.done()} <= before
    assert schedule.wake is not None
    schedule.wake()  # a wake that comes too late does nothing
    assert emu.task_gets[task_id] == 1


async def test_a_function_schedule_is_asked_before_the_first_look_too(
    make_client: ClientFactory,
) -> None:
    """A plain function sees ``polls == 0`` once, with no snapshot yet, then one call per look."""
    seen: list[tuple[int, bool]] = []

    def schedule(state: PollState) -> float:
        seen.append((state.polls, state.last is None))
        return 0.0 if state.polls == 0 else 0.002

    client = make_client(schedule=schedule)
    await client.optimize(make_request(), timeout=30)

    assert seen[0] == (0, True)
    assert all(polls >= 1 and not empty for polls, empty in seen[1:])
    assert [polls for polls, _ in seen[1:]] == list(range(1, len(seen)))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "soon", None])
@pytest.mark.parametrize("from_look", [0, 1], ids=["first-delay", "after-a-look"])
async def test_a_schedule_s_nonsense_delay_is_a_typed_error_not_a_hang(
    make_client: ClientFactory, emu: Emulator, bad: object, from_look: int
) -> None:
    """NaN would poll in a storm, infinity sleep for ever: both fail the wait at once."""

    def schedule(state: PollState) -> float:
        return bad if state.polls >= from_look else 0.002  # type: ignore[return-value]

    client = make_client(schedule=schedule)
    with pytest.raises(ConfigurationError, match="finite number of seconds") as caught:
        await client.optimize(make_request(), timeout=30)
    assert str(emu.submits[0].task_id) in str(caught.value)


async def test_unknown_status_keeps_waiting_by_default(
    client: AsyncSPOClient, emu: Emulator
) -> None:
    """An unknown status is not terminal: the wait goes on until a known end."""
    emu.inject(Fault(FaultKind.UNKNOWN_STATUS, endpoint="task", times=3))
    result = await client.optimize(make_request(), timeout=30)

    assert result.succeeded
    assert emu.faults_fired[FaultKind.UNKNOWN_STATUS] == 3


async def test_strict_status_refuses_an_unknown_status(
    make_client: ClientFactory, emu: Emulator
) -> None:
    """With strict_status=True an unknown status is a ProtocolError for get_task."""
    client = make_client(strict_status=True)
    task_id = await client.submit(make_request())
    emu.inject(Fault(FaultKind.UNKNOWN_STATUS, endpoint="task", times=1))

    with pytest.raises(ProtocolError, match="paused"):
        await client.get_task(task_id)


async def test_concurrent_waiters_share_one_poll_loop(
    make_client: ClientFactory, emu: Emulator, virtual_time: VirtualTime
) -> None:
    """Five waiters on one task cost one GET per poll: GETs = sleeps + 1, as for one waiter."""
    client = make_client(schedule=FixedSchedule(interval=0.003))
    task_id = await client.submit(make_request(max_rounds=4))
    progress: list[int] = []

    results = await asyncio.gather(
        *(
            client.wait_for_result(task_id, timeout=30, on_event=lambda e: progress.append(1))
            for _ in range(5)
        )
    )

    assert all(r == results[0] for r in results)
    assert emu.task_gets[task_id] == len(virtual_time.sleeps) + 1
    assert len(client._core.shared) == 0
    assert progress


async def test_a_follower_takes_over_when_the_leader_times_out(
    client: AsyncSPOClient, emu: Emulator
) -> None:
    """When the polling waiter leaves at its deadline, a waiter with more time keeps polling."""
    emu.script_next(TaskOutcome(round_seconds=0.02))
    task_id = await client.submit(make_request(max_rounds=3))

    short = asyncio.create_task(client.wait_for_result(task_id, timeout=0.01))
    await asyncio.sleep(0)
    long = asyncio.create_task(client.wait_for_result(task_id, timeout=30))

    with pytest.raises(WaitTimeoutError):
        await short
    assert (await long).succeeded


async def test_a_follower_that_takes_over_looks_at_once(
    make_client: ClientFactory, emu: Emulator
) -> None:
    """The first-look delay is for a task not looked at yet: a takeover does not sleep it again."""
    first = 0.0437  # a delay no deadline cap will produce by chance
    time_ = VirtualTime()
    sleeps = time_.sleeps
    client = make_client(
        clock=time_.clock,
        sleep=time_.sleep,
        schedule=FixedSchedule(first=first, interval=0.01),
    )
    emu.script_next(TaskOutcome(round_seconds=30.0))
    task_id = await client.submit(make_request(max_rounds=3))
    short = asyncio.create_task(client.wait_for_result(task_id, timeout=0.1))
    await asyncio.sleep(0)  # the short waiter leads
    long = asyncio.create_task(client.wait_for_result(task_id, timeout=0.3))

    with pytest.raises(WaitTimeoutError):
        await short
    with pytest.raises(WaitTimeoutError):
        await long

    assert sleeps.count(first) == 1  # the leader's first look only
    assert sleeps[0] == first


async def test_the_api_key_comes_from_the_environment_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without api_key, the first of the four key variables that is set wins; none is an error."""
    for name in API_KEY_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError) as info:
        AsyncSPOClient()
    for name in API_KEY_ENV_VARS:
        assert name in str(info.value)

    monkeypatch.setenv("NEXT_PUBLIC_302_API_KEY", "key-4")
    monkeypatch.setenv("AI302_KEY", "key-3")
    async with AsyncSPOClient() as client:
        assert client._core.api_key == "key-3"
    monkeypatch.setenv("AI302_API_KEY", "key-1")
    async with AsyncSPOClient() as client:
        assert client._core.api_key == "key-1"
    async with AsyncSPOClient("explicit") as client:
        assert client._core.api_key == "explicit"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"api_key": ""}, "empty", id="empty-key"),
        pytest.param({"api_key": "a b"}, "whitespace", id="key-with-space"),
        pytest.param({"api_key": 5}, "string", id="key-not-str"),
        pytest.param({"api_key": "k", "base_url": "ftp://x"}, "http", id="bad-scheme"),
        pytest.param({"api_key": "k", "base_url": "http://api.302.ai"}, "unencrypted", id="http"),
        pytest.param({"api_key": "k", "request_timeout": 0}, "request_timeout", id="timeout"),
        pytest.param({"api_key": "k", "lang": "fr"}, "lang", id="lang"),
        pytest.param({"api_key": "k", "max_connections": 0}, "max_connections", id="pool"),
    ],
)
def test_bad_settings_fail_at_construction(options: dict[str, Any], message: str) -> None:
    """A client that cannot work refuses to be built, with a message that says why."""
    with pytest.raises(ConfigurationError, match=message):
        AsyncSPOClient(**options)


async def test_the_base_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """AI302_BASE_URL is used when base_url is not passed; the default is api.302.ai."""
    monkeypatch.delenv("AI302_BASE_URL", raising=False)
    async with AsyncSPOClient("k") as client:
        assert client.base_url == "https://api.302.ai"
    monkeypatch.setenv("AI302_BASE_URL", "https://proxy.example/302/")
    async with AsyncSPOClient("k") as client:
        assert client.base_url == "https://proxy.example/302"


async def test_a_closed_client_refuses_work_and_closes_once(client: AsyncSPOClient) -> None:
    """After aclose() every call raises ClientClosedError; aclose() again does nothing."""
    await client.aclose()
    await client.aclose()
    assert client.closed
    assert "closed" in repr(client)
    with pytest.raises(ClientClosedError):
        await client.submit(make_request())
    with pytest.raises(ClientClosedError):
        await client.get_task("t")
    with pytest.raises(ClientClosedError):
        await client.wait_for_result("t")
    with pytest.raises(ClientClosedError):
        async with client:
            pass


async def test_a_forgotten_client_warns_once(emu: Emulator) -> None:
    """A client dropped without aclose() emits one ResourceWarning naming the fix."""
    client = AsyncSPOClient(emu.api_key, base_url=emu.base_url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del client
        gc.collect()
    messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(messages) == 1
    assert "aclose" in messages[0]


async def test_a_session_passed_in_is_used_and_left_open(emu: Emulator) -> None:
    """The client sends through the caller's session and never closes it."""
    async with aiohttp.ClientSession() as session:
        async with AsyncSPOClient(emu.api_key, base_url=emu.base_url, session=session) as client:
            await client.submit(make_request())
        assert not session.closed
        async with session.get(emu.base_url + "/302/prompt/spo/tasks/x") as resp:
            assert resp.status == 401
    with pytest.raises(ConfigurationError):
        AsyncSPOClient("k", session=session, transport=client._core.transport)


async def test_lang_is_sent_as_a_header(make_client: ClientFactory, emu: Emulator) -> None:
    """lang='en' travels as the Lang header the 302 template uses."""
    client = make_client(lang="en")
    await client.submit(make_request())
    assert emu.submits[0].headers.get("Lang") == "en"
    assert json.dumps(emu.submits[0].headers).count("sk-spo-emulator") == 0


async def test_on_event_tells_a_single_wait_as_typed_events(client: AsyncSPOClient) -> None:
    """optimize(on_event=...) reports submitted, every round of n, then succeeded, in order."""
    events: list[Event] = []
    result = await client.optimize(make_request(max_rounds=3), on_event=events.append, timeout=30)

    kinds = [type(e) for e in events]
    assert kinds[0] is TaskSubmitted
    assert kinds[-1] is Succeeded
    rounds = [e for e in events if isinstance(e, RoundCompleted)]
    assert [e.number for e in rounds] == [1, 2, 3]
    assert all(getattr(e, "task_id", None) == result.task_id for e in events)


async def test_on_event_reports_a_timeout(client: AsyncSPOClient, emu: Emulator) -> None:
    """A wait that runs out of time ends its event story with Errored(WaitTimeoutError)."""
    emu.script_next(TaskOutcome(round_seconds=60.0))
    task_id = await client.submit(make_request())
    events: list[Event] = []

    with pytest.raises(WaitTimeoutError):
        await client.wait_for_result(task_id, timeout=0.02, on_event=events.append)

    assert isinstance(events[-1], Errored)
    assert isinstance(events[-1].error, WaitTimeoutError)
    assert events[-1].task_id == task_id


async def test_optimize_all_keeps_input_order_and_many_yields_every_outcome(
    client: AsyncSPOClient, emu: Emulator
) -> None:
    """The batch methods return one outcome per request: by input order, or as they finish."""
    requests = {f"row-{i}": make_request(f"prompt {i}") for i in range(6)}
    emu.script_next(TaskOutcome(fail_at_round=2, error="boom"))

    every = await client.optimize_all(requests, concurrency=3)
    assert [o.key for o in every] == list(requests)
    assert sum(o.ok for o in every) == 5

    seen = [o.index async for o in client.optimize_many(requests.values(), concurrency=2)]
    assert sorted(i for i in seen if i is not None) == list(range(6))
    assert emu.tasks_created == 12


async def test_a_client_queues_each_request_once(make_client: ClientFactory, emu: Emulator) -> None:
    """A client's own transport keeps no queue of its own: the client's cap is the only one.

    Requests wait for a connection on the client's cap (``max_connections``), before
    the limiter; a second queue of the same size in the transport could never hold one
    back, and would only cost every request a pass through it.
    """
    client = make_client(max_connections=3)
    task_ids = [await client.submit(make_request()) for _ in range(6)]
    snapshots = await asyncio.gather(*(client.get_task(task_id) for task_id in task_ids))

    assert [s.task_id for s in snapshots] == task_ids
    transport = client._core.transport
    assert isinstance(transport, AiohttpTransport)
    assert transport._slots is None
    assert client._core.slots._value == 3  # every slot given back
    connector = transport.connector
    assert connector is not None
    assert connector.limit == 3  # the pool the client's cap matches


async def test_a_finished_submit_and_wait_leave_nothing_for_the_garbage_collector(
    client: AsyncSPOClient,
) -> None:
    """The retry loops' state goes with them: a busy client does not feed full collections.

    tenacity keeps each call's plan on the retrying object (a reference cycle); the
    loops drop it when they end, so twenty optimizations leave next to no cycles
    (before, about twenty objects each).
    """
    await client.optimize(make_request())  # warm: first-use imports and caches
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            await client.optimize(make_request())
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert unreachable < 20 * 5
