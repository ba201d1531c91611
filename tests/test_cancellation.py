"""Cancellation and resources: a cancelled wait stops at once and leaves nothing behind.

The emulator runs in its own thread (:class:`ThreadedEmulator`), so every asyncio
task on the test's loop belongs to the test or to the SDK: "no task left behind"
is then simply ``asyncio.all_tasks()`` holding nothing new.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from spo_async import (
    AsyncSPOClient,
    ClientClosedError,
    OptimizationRequest,
    QAPair,
    RetryPolicy,
)
from spo_async.polling import FixedSchedule
from spo_async.testing import EmulatorConfig, Fault, FaultKind, ThreadedEmulator
from spo_async.transport import AiohttpTransport

from .conftest import until

#: Tasks that run far longer than any test here: waits end only by cancellation.
#: How long "at once" may take here. The service holds each request 30 s, so this bounds
#: a hang, not the SDK's speed (a timing claim would belong in bench/): it stays far below
#: the hold and far above what a loaded CI machine needs.
PROMPT = 5.0

SLOW_TASKS = EmulatorConfig(round_seconds=60.0, seed=5)


def make_request(prompt: str = "Act as a patient tutor") -> OptimizationRequest:
    return OptimizationRequest(
        prompt=prompt,
        qa=[QAPair("What is 2+2?", "[steps][answer]")],
        model="gpt-4o-mini",
        max_rounds=3,
    )


@pytest.fixture
def emu() -> Iterator[ThreadedEmulator]:
    with ThreadedEmulator(SLOW_TASKS) as emulator:
        yield emulator


class Pool:
    """The client's connection pool, seen through the transport the test handed it."""

    def __init__(self, client: AsyncSPOClient, transport: AiohttpTransport) -> None:
        self.client = client
        self.transport = transport

    @property
    def connector(self) -> aiohttp.BaseConnector:
        connector = self.transport.connector
        assert connector is not None, "no request was made yet"
        return connector

    def acquired(self) -> int:
        """Connections handed out to requests and not given back (aiohttp's own count)."""
        return len(self.connector._acquired)

    def idle(self) -> int:
        return sum(len(conns) for conns in self.connector._conns.values())

    def queued(self) -> int:
        """Requests waiting for a free connection: in the client's, the transport's or aiohttp's
        queue."""
        waiting = len(self.client._core.slots._waiters or ())
        slots = self.transport._slots
        waiting += len(slots._waiters or ()) if slots is not None else 0
        return waiting + sum(len(waiters) for waiters in self.connector._waiters.values())


@pytest.fixture
async def client_and_pool(
    emu: ThreadedEmulator,
) -> AsyncIterator[tuple[AsyncSPOClient, Pool]]:
    transport = AiohttpTransport(max_connections=100)
    client = AsyncSPOClient(
        api_key=emu.api_key,
        base_url=emu.base_url,
        retry=RetryPolicy.no_wait(),
        schedule=FixedSchedule(interval=0.01),
        request_timeout=30.0,
        transport=transport,
    )
    yield client, Pool(client, transport)
    await client.aclose()


def other_tasks(before: set[asyncio.Task[object]]) -> set[asyncio.Task[object]]:
    """Tasks on this loop that did not exist before, the current one excepted."""
    return {t for t in asyncio.all_tasks() if t not in before and t is not asyncio.current_task()}


@contextlib.contextmanager
def frozen(emu: ThreadedEmulator) -> Iterator[None]:
    """Block the emulator's event loop (its thread waits on an event) for the duration."""
    stopped, release = threading.Event(), threading.Event()

    def freeze() -> None:
        stopped.set()
        release.wait(30)

    thread = threading.Thread(target=emu.call, args=(freeze,))
    thread.start()
    assert stopped.wait(5)
    try:
        yield
    finally:
        release.set()
        thread.join()


def assert_no_resource_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    leaked = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, [str(w.message) for w in leaked]


async def assert_nothing_left(
    before: set[asyncio.Task[object]], pool: Pool, emu: ThreadedEmulator, task_id: str
) -> None:
    """No SDK task remains, no connection is held, and the task is not polled any more."""
    await asyncio.sleep(0)
    assert other_tasks(before) == set()
    assert pool.acquired() == 0
    assert pool.queued() == 0
    gets = emu.task_gets[task_id]
    # Showing that nothing happens takes a wait: no event marks "no poll will ever come".
    # The SDK side is already proven idle above (no task, no connection in use); this
    # short look at the service is the end-to-end check, and a slow machine can only
    # make it miss a stray poll, never fail a correct SDK.
    await asyncio.sleep(0.1)
    assert emu.task_gets[task_id] == gets, "the task is still being polled"


async def test_cancelling_a_wait_mid_request_is_prompt(
    emu: ThreadedEmulator, client_and_pool: tuple[AsyncSPOClient, Pool]
) -> None:
    """A wait cancelled while its GET hangs raises CancelledError at once and frees the socket."""
    client, pool = client_and_pool
    task_id = await client.submit(make_request())
    emu.inject(Fault(FaultKind.DELAY, endpoint="task", delay=30.0))
    before = asyncio.all_tasks()
    waiter = asyncio.create_task(client.wait_for_result(task_id, timeout=None))
    await until(lambda: emu.task_gets[task_id] == 1)
    assert pool.acquired() == 1

    started = time.monotonic()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    assert time.monotonic() - started < PROMPT
    await assert_nothing_left(before, pool, emu, task_id)


async def test_cancelling_a_wait_between_polls_is_prompt(
    emu: ThreadedEmulator, client_and_pool: tuple[AsyncSPOClient, Pool]
) -> None:
    """A wait cancelled while sleeping between polls stops polling for good."""
    client, pool = client_and_pool
    task_id = await client.submit(make_request())
    before = asyncio.all_tasks()
    patient = client.with_options(schedule=FixedSchedule(interval=30.0))
    waiter = asyncio.create_task(patient.wait_for_result(task_id, timeout=None))
    await until(lambda: emu.task_gets[task_id] == 1)
    # The poll came back once its connection is back in the pool: the wait now sleeps 30 s.
    await until(lambda: pool.acquired() == 0 and pool.idle() == 1, what="the poll's answer")

    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    await assert_nothing_left(before, pool, emu, task_id)
    assert pool.idle() == 1  # the connection went back to the pool, healthy


async def test_asyncio_timeout_cancels_the_wait(
    emu: ThreadedEmulator, client_and_pool: tuple[AsyncSPOClient, Pool]
) -> None:
    """asyncio.timeout around a wait ends it on time with TimeoutError, leaving nothing behind."""
    client, pool = client_and_pool
    task_id = await client.submit(make_request())
    emu.inject(Fault(FaultKind.DELAY, endpoint="task", delay=30.0, probability=0.5))
    before = asyncio.all_tasks()

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await client.wait_for_result(task_id, timeout=None)

    assert 0.2 <= time.monotonic() - started < PROMPT
    await assert_nothing_left(before, pool, emu, task_id)


async def test_a_failing_taskgroup_sibling_cancels_the_wait(
    emu: ThreadedEmulator, client_and_pool: tuple[AsyncSPOClient, Pool]
) -> None:
    """When a TaskGroup sibling fails, the wait is cancelled and only the sibling's error shows."""
    client, pool = client_and_pool
    task_id = await client.submit(make_request())
    emu.inject(Fault(FaultKind.DELAY, endpoint="task", delay=30.0, probability=0.5))
    before = asyncio.all_tasks()
    cancelled = asyncio.Event()

    async def wait() -> None:
        try:
            await client.wait_for_result(task_id, timeout=None)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def fail() -> None:
        await until(lambda: emu.task_gets[task_id] >= 1, what="the wait's first poll")
        raise ValueError("sibling failed")

    async def together() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(wait())
            group.create_task(fail())

    started = time.monotonic()
    with pytest.raises(ExceptionGroup) as info:
        await together()

    assert time.monotonic() - started < PROMPT
    assert cancelled.is_set()
    assert [type(e) for e in info.value.exceptions] == [ValueError]
    await assert_nothing_left(before, pool, emu, task_id)


async def test_cancelling_a_submit_in_flight_is_prompt(
    emu: ThreadedEmulator, client_and_pool: tuple[AsyncSPOClient, Pool]
) -> None:
    """A submit cancelled while the service is slow raises CancelledError and frees the socket."""
    client, pool = client_and_pool
    await client.submit(make_request("warm the pool up"))
    emu.inject(Fault(FaultKind.DELAY, endpoint="submit", delay=30.0))
    before = asyncio.all_tasks()
    submit = asyncio.create_task(client.submit(make_request()))
    await until(lambda: pool.acquired() == 1)
    await until(lambda: emu.faults_fired[FaultKind.DELAY] == 1, what="the POST held by the service")

    started = time.monotonic()
    submit.cancel()
    with pytest.raises(asyncio.CancelledError):
        await submit

    assert time.monotonic() - started < PROMPT
    await asyncio.sleep(0)
    assert other_tasks(before) == set()
    assert pool.acquired() == 0


async def test_shared_waiters_cancel_independently(
    emu: ThreadedEmulator, client_and_pool: tuple[AsyncSPOClient, Pool]
) -> None:
    """Cancelling the waiter that polls hands the polling to another; cancelling all stops it."""
    client, pool = client_and_pool
    task_id = await client.submit(make_request())
    before = asyncio.all_tasks()
    waiters = [asyncio.create_task(client.wait_for_result(task_id, timeout=None)) for _ in range(3)]
    await until(lambda: emu.task_gets[task_id] >= 2)

    waiters[0].cancel()  # the leader: the first to start
    with pytest.raises(asyncio.CancelledError):
        await waiters[0]
    polled = emu.task_gets[task_id]
    await until(lambda: emu.task_gets[task_id] >= polled + 3)  # a follower took over
    assert not any(w.done() for w in waiters[1:])

    for waiter in waiters[1:]:
        waiter.cancel()
    for waiter in waiters[1:]:
        with pytest.raises(asyncio.CancelledError):
            await waiter
    await assert_nothing_left(before, pool, emu, task_id)


async def test_cancelling_1000_concurrent_waiters_leaves_nothing_behind(
    emu: ThreadedEmulator, client_and_pool: tuple[AsyncSPOClient, Pool]
) -> None:
    """1,000 waiters (polls in flight, sleeping, or queued for a connection) cancel cleanly.

    After the cancellation: every waiter raised CancelledError within a second, no
    asyncio task the SDK created is pending, the connector holds no acquired connection
    and no queued request; after aclose it holds no connection at all; no
    ResourceWarning is raised.
    """
    client, pool = client_and_pool
    task_ids = await asyncio.gather(
        *(client.submit(make_request(f"waiter {i}")) for i in range(1000))
    )
    # One poll in ten hangs, so the cancellation finds requests in flight, waits asleep
    # between polls, and requests queued for one of the 100 connections.
    emu.inject(Fault(FaultKind.DELAY, endpoint="task", delay=30.0, probability=0.1))
    before = asyncio.all_tasks()
    waiters = [
        asyncio.create_task(client.wait_for_result(task_id, timeout=None)) for task_id in task_ids
    ]
    await until(lambda: len(emu.task_gets) >= 300 and pool.queued() > 0, timeout=10)
    assert pool.acquired() > 0
    assert len(other_tasks(before)) == 1000

    gc.collect()  # start the clock on a clean heap: a full collection is not the SDK's doing
    # Freeze the emulator's thread while cancelling: the SDK must not need the server to
    # let go, and the timing then measures the SDK alone, not a fight for the GIL.
    with frozen(emu):
        started = time.monotonic()
        for waiter in waiters:
            waiter.cancel()
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        elapsed = time.monotonic() - started

    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
    assert elapsed < PROMPT  # not 30 s: no cancelled wait waited for its hanging answer
    await asyncio.sleep(0)
    assert other_tasks(before) == set()
    assert pool.acquired() == 0
    assert pool.queued() == 0
    # The thawed emulator reads the GETs sent before the cancel. Nothing it exposes says
    # when it has read the last of them (it counts a GET on arrival only), so this stays a wait;
    # then, as in assert_nothing_left, a short look shows that no new poll comes.
    await asyncio.sleep(0.2)
    gets = sum(emu.task_gets.values())
    await asyncio.sleep(0.1)
    assert sum(emu.task_gets.values()) == gets, "something still polls"

    connector = pool.connector
    await client.aclose()
    assert connector.closed
    assert pool.transport.connector is None
    assert sum(len(conns) for conns in connector._conns.values()) == 0
    assert len(connector._acquired) == 0
    assert_no_resource_warning()
    print(
        f"\n1000 waiters cancelled in {elapsed * 1000:.0f} ms; "
        f"{len(emu.task_gets)} tasks polled, {gets} GETs before the cancellation"
    )


# -- the client's lifecycle ------------------------------------------------------------------


async def test_client_used_after_aclose_raises_client_closed_error(emu: ThreadedEmulator) -> None:
    """Every call on a closed client raises ClientClosedError, before any request is sent."""
    client = AsyncSPOClient(api_key=emu.api_key, base_url=emu.base_url)
    task_id = await client.submit(make_request())
    await client.aclose()
    requests = len(emu.request_log)

    with pytest.raises(ClientClosedError):
        await client.submit(make_request())
    with pytest.raises(ClientClosedError):
        await client.get_task(task_id)
    with pytest.raises(ClientClosedError):
        await client.wait_for_result(task_id)
    with pytest.raises(ClientClosedError):
        await client.optimize(make_request())
    with pytest.raises(ClientClosedError):
        async with client:
            pass
    assert len(emu.request_log) == requests
    assert client.closed


async def test_aclose_twice_is_harmless(emu: ThreadedEmulator) -> None:
    """A second aclose (or an aclose after async with) does nothing and raises nothing."""
    async with AsyncSPOClient(api_key=emu.api_key, base_url=emu.base_url) as client:
        await client.submit(make_request())
    await client.aclose()
    await client.aclose()
    assert client.closed
    assert_no_resource_warning()


async def test_a_client_never_used_needs_no_close_warning_beyond_its_own(
    emu: ThreadedEmulator,
) -> None:
    """An unclosed client warns once with ResourceWarning, even if it never sent a request."""
    client = AsyncSPOClient(api_key=emu.api_key, base_url=emu.base_url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del client
        gc.collect()
    assert [w.category for w in caught] == [ResourceWarning]
    assert "aclose" in str(caught[0].message)


async def test_forgetting_to_close_a_used_client_warns_once(emu: ThreadedEmulator) -> None:
    """A client dropped without aclose, after it made requests, warns exactly once."""
    client = AsyncSPOClient(api_key=emu.api_key, base_url=emu.base_url)
    await client.submit(make_request())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del client
        gc.collect()
        await asyncio.sleep(0)
    assert [w.category for w in caught] == [ResourceWarning], [str(w.message) for w in caught]
    assert "unclosed" in str(caught[0].message)
    assert "sk-" not in str(caught[0].message)
