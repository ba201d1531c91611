"""Review 4: the poll loop's wakeable sleep (``_PollLoop.pause``) and ``wake_on_news``.

Each test holds a behaviour a review found wrong in the first version of the wakeable
sleep (each failed on it, and passes since the fix). The loop's own tests talk to the
emulator on loopback with an injected clock and a sleep that lasts until the test (or
a wake) ends it; the schedule's are pure.
"""

from __future__ import annotations

import asyncio
import gc
import random
import threading
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from spo_async import Sample, TaskResult, TaskStatus
from spo_async.polling import AdaptiveSchedule, PollState
from spo_async.testing import Emulator, EmulatorConfig, ManualClock

from .conftest import (
    ClientFactory,
    VirtualTime,
    make_request,
    on_virtual_time,
    unpaced_limiter,
    until,
)
from .test_adaptive import looked
from .test_client import HeldSleep, WakingSchedule


@pytest.fixture
def emulator_config(clock: ManualClock) -> EmulatorConfig:
    """Tasks that move only as the clients wait: no queue, 3 s rounds."""
    return EmulatorConfig(clock=clock, queue_seconds=0.0, round_seconds=3.0, seed=1)


@pytest.fixture
def make_client(make_client: ClientFactory, virtual_time: VirtualTime) -> ClientFactory:
    """Clients whose waits move the emulator's clock on (a test may pass its own sleep)."""
    return on_virtual_time(make_client, virtual_time)


# -- helpers -----------------------------------------------------------------------------------


async def asleep(
    make_client: ClientFactory, schedule: object
) -> tuple[HeldSleep, str, asyncio.Task[TaskResult]]:
    """A wait asleep after its first look, on ``schedule``, with a sleep the test ends."""
    time = HeldSleep()
    client = make_client(
        clock=time.clock, sleep=time.sleep, schedule=schedule, limiter=unpaced_limiter()
    )
    task_id = await client.submit(make_request())
    waiter = asyncio.create_task(client.wait_for_result(task_id, timeout=None))
    await until(lambda: time.held, what="the sleep after the first look")
    return time, task_id, waiter


async def ended(waiter: asyncio.Task[TaskResult]) -> None:
    """Cancel a wait the test is done with, and let it end."""
    waiter.cancel()
    await asyncio.wait((waiter,))


@pytest.fixture
async def wait_tasks() -> AsyncIterator[list[asyncio.Task[TaskResult]]]:
    """Waits a test started; whatever it asserted, they are cancelled and awaited at the end."""
    tasks: list[asyncio.Task[TaskResult]] = []
    yield tasks
    for task in tasks:
        await ended(task)


# -- pause: cancellation -------------------------------------------------------------------------


async def test_a_sleep_cancelled_from_inside_ends_the_wait_as_without_wakes(
    make_client: ClientFactory, wait_tasks: list[asyncio.Task[TaskResult]]
) -> None:
    """A CancelledError out of the client's own sleep ends the wait; it is not taken for news.

    With a schedule that has no ``wake_on_news`` the same sleep ends the wait with
    ``CancelledError``; with one, ``pause`` reads any cancelled sleep as "woken", plans
    again and sleeps once more, swallowing the cancellation.
    """
    time, _, waiter = await asleep(make_client, WakingSchedule())
    wait_tasks.append(waiter)

    time.held[0].cancel()  # the sleep itself is cancelled: nobody woke it
    await until(lambda: waiter.done() or len(time.held) > 1, what="the wait to react")

    assert len(time.held) == 1, "the cancelled sleep was taken for a wake and slept again"
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_a_sleep_that_fails_as_the_wait_is_cancelled_is_not_left_unretrieved(
    make_client: ClientFactory,
) -> None:
    """The sleep task's own error is collected when a cancel of the wait wins the race.

    The wait is cancelled in the same turn of the loop as its sleep fails: ``pause``
    finds the sleep done and leaves its exception unread, which asyncio reports later
    as "Task exception was never retrieved".
    """
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        time, _, waiter = await asleep(make_client, WakingSchedule())
        time.held[0].set_exception(RuntimeError("the clock broke"))
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        del waiter
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)

    assert [context["message"] for context in reported] == []


# -- pause: the wake itself ----------------------------------------------------------------------


async def test_a_wake_from_another_thread_reaches_the_loop_safely(
    make_client: ClientFactory, emu: Emulator, wait_tasks: list[asyncio.Task[TaskResult]]
) -> None:
    """``wake()`` called from a worker thread ends the sleep through the loop, not behind it.

    The wake resolves an asyncio future directly, which is only safe on the loop's own
    thread: asyncio's debug mode refuses it, and without debug mode the loop may not
    notice the wake until something else wakes it.
    """
    schedule = WakingSchedule()
    time, task_id, waiter = await asleep(make_client, schedule)
    wait_tasks.append(waiter)
    loop = asyncio.get_running_loop()
    failures: list[BaseException] = []

    def wake_from_a_thread() -> None:
        assert schedule.wake is not None
        try:
            schedule.wake()
        except BaseException as exc:  # what the thread saw is the verdict
            failures.append(exc)

    schedule.news = True
    loop.set_debug(True)
    try:
        thread = threading.Thread(target=wake_from_a_thread)
        thread.start()
        await asyncio.to_thread(thread.join)
    finally:
        loop.set_debug(False)

    assert failures == []
    await until(lambda: emu.task_gets[task_id] == 2, what="the look the news asked for")
    assert time.held[0].cancelled()


class RaisingWakeSchedule:
    """Looks every second; its ``wake_on_news`` is broken."""

    def next_delay(self, state: PollState) -> float:
        return 0.0 if state.polls == 0 else 1.0

    def wake_on_news(self, state: PollState, wake: Callable[[], None]) -> bool:
        raise RuntimeError("a schedule bug")


async def test_a_wake_on_news_that_raises_costs_the_wake_not_the_wait(
    make_client: ClientFactory,
) -> None:
    """A broken ``wake_on_news`` is an optional hint gone wrong: the wait sleeps plainly and ends.

    Today its ``RuntimeError`` escapes ``wait_for_result`` after the first look: not an
    ``SPOError``, and with no task id, while a raising wake (the other side of the same
    hook) is only logged.
    """
    client = make_client(schedule=RaisingWakeSchedule())

    try:
        result = await client.optimize(make_request(), timeout=600)
    except RuntimeError as exc:
        pytest.fail(f"the wait died of its schedule's hint: {exc!r}")

    assert result.status is TaskStatus.SUCCESS


class AsyncWakeSchedule:
    """Looks every second; its ``wake_on_news`` is (wrongly) a coroutine function."""

    def next_delay(self, state: PollState) -> float:
        return 0.0 if state.polls == 0 else 1.0

    async def wake_on_news(self, state: PollState, wake: Callable[[], None]) -> bool:
        return True


async def test_a_wake_on_news_that_answers_no_bool_is_refused_not_taken_for_yes(
    make_client: ClientFactory,
) -> None:
    """An ``async def wake_on_news`` answers a coroutine: not "kept", and not left unawaited.

    Today any truthy answer counts as a kept wake, so the coroutine is dropped unawaited
    (a ``RuntimeWarning`` at every look) and the loop races a wake nobody holds.
    """
    client = make_client(schedule=AsyncWakeSchedule())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = await client.optimize(make_request(), timeout=600)
        gc.collect()

    assert result.status is TaskStatus.SUCCESS
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []


# -- AdaptiveSchedule: two waits of one task -------------------------------------------------


_SAMPLE = (Sample("q", "a"),)


def first_wave() -> AdaptiveSchedule:
    """A schedule with a scout and one other task of a model never seen, both looked at once."""
    schedule = AdaptiveSchedule(rng=random.Random(1))
    schedule.next_delay(looked("scout", 0.0, 1, ()))
    schedule.next_delay(looked("other", 0.0, 1, ()))
    schedule.next_delay(looked("scout", 3.0, 2, ()))
    return schedule


def test_two_waits_of_one_task_are_both_woken_by_the_news() -> None:
    """Two loops on one task (views with different retry policies share the schedule): both wake.

    ``_Model.wakes`` is keyed by task id, so the second loop's wake replaces the first's,
    and the first sleeps its whole delay through the news.
    """
    schedule = first_wave()
    woken: list[str] = []
    assert schedule.wake_on_news(looked("other", 2.0, 2, ()), lambda: woken.append("view A"))
    assert schedule.wake_on_news(looked("other", 2.0, 2, ()), lambda: woken.append("view B"))

    schedule.next_delay(looked("scout", 3.5, 3, (3.5,)))  # marks round 1

    assert sorted(woken) == ["view A", "view B"]


def test_a_real_look_with_the_same_polls_as_another_waits_is_not_a_replan() -> None:
    """A second loop's real look (same ``polls``, later, a round seen) is taken in and shared.

    ``next_delay`` takes "same polls as last time, not earlier" for a re-plan; a second
    loop on the task in step with the first passes that test with a look that showed
    round 1, which is then never folded in: no mark, and the wave is not woken.
    """
    schedule = AdaptiveSchedule(rng=random.Random(1))
    for name in ("scout", "other"):
        schedule.next_delay(looked(name, 0.0, 1, ()))
    schedule.next_delay(looked("scout", 2.0, 2, ()))  # loop A of "scout"
    woken: list[str] = []
    assert schedule.wake_on_news(looked("other", 0.0, 1, ()), lambda: woken.append("other"))

    # Loop B of "scout" (started earlier, so its clock reads later) looks with the same
    # polls and sees round 1 ended between 2.0 and 3.5: news for the whole first wave.
    schedule.next_delay(looked("scout", 3.5, 2, (3.5,)))

    assert woken == ["other"]
