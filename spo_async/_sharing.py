"""One poll loop per task and policy, however many coroutines wait for it; invisible to each.

When several coroutines wait for the same task id under the same polling policy
(schedule, retry policy, request settings), the first becomes the *leader* and
polls; the others follow, at one GET per look in all. Sharing never changes
what a caller gets:

* **Its deadline.** Each waiter keeps its own. If the leader leaves (its own
  deadline passed, or it was cancelled), a follower still waiting takes over
  the polling, looking at once.
* **Its hooks.** Each waiter has its own :class:`Observer` (its own events,
  delivered by its own stream), fed by calls that never block: a slow or
  failing consumer delays or breaks nobody else's wait. A waiter that joins
  late is shown the latest snapshot at once.
* **Its policy.** Waits with different policies are different keys, hence
  different loops: nobody's schedule or retry policy is dropped or applied to
  another caller. Only the mode is merged: the loop looks at every round while
  any of its waiters wants progress.

Nothing here runs in the background: the polling happens inside the leader's own
``await``, so cancelling every waiter leaves no task behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable

from ._errors import SPOError, WaitTimeoutError
from ._models import TaskResult
from ._polling import Clock, LoopObserver, Observer, Retry
from ._schedules import PollMode

__all__ = ["PollRunner", "SharedPolls", "Waiter"]

log = logging.getLogger("spo_async")

#: Runs one poll loop to the end: given the leader's deadline, the observer that fans
#: out to every waiter, the mode getter, and whether it takes over from an earlier loop
#: (which looked at the task already, so the first look comes at once).
PollRunner = Callable[
    [float | None, LoopObserver, Callable[[], PollMode], bool],
    Awaitable[TaskResult],
]


class Waiter:
    """One caller waiting for a task: its own deadline and its own observer."""

    __slots__ = ("deadline", "observer", "progress", "timeout")

    def __init__(
        self,
        *,
        timeout: float | None,
        deadline: float | None,
        observer: Observer | None,
        progress: bool,
    ) -> None:
        self.timeout = timeout
        self.deadline = deadline
        self.observer = observer
        self.progress = progress


class _SharedPoll:
    """The state every waiter of one (task, policy) shares; the loop's observer, fanning out."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.waiters: list[Waiter] = []
        self.leading = False
        self.last: TaskResult | None = None
        self.final: TaskResult | None = None
        self.error: SPOError | None = None
        self._changed: asyncio.Event | None = None

    def mode(self) -> PollMode:
        """Progress mode while any waiter wants to see rounds as they land."""
        return PollMode.PROGRESS if any(w.progress for w in self.waiters) else PollMode.COMPLETION

    # -- the Observer the loop reports to ----------------------------------------------

    def snapshot(self, result: TaskResult) -> None:
        self.last = result
        for waiter in list(self.waiters):
            _tell(waiter.observer, "snapshot", result)

    def retrying(self, retry: Retry) -> None:
        for waiter in list(self.waiters):
            _tell(waiter.observer, "retrying", retry)

    def earliest_deadline(self) -> float | None:
        """The soonest deadline among the waiters: the loop wakes for it, so each holds."""
        deadlines = [w.deadline for w in self.waiters if w.deadline is not None]
        return min(deadlines, default=None)

    def tick(self) -> None:
        """The leader's loop finished a look: followers re-check their own deadlines."""
        self._wake()

    # -- waiting -------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_for_change(self, remaining: float | None) -> None:
        """Wait until the leader looks again, finishes or leaves, or ``remaining`` passes.

        Deadlines are read on the client's clock after every wake-up: the leader's
        looks, which follow the client's ``sleep``, wake the followers, so a follower's
        deadline holds on an injected clock too. The event loop's own timeout is the
        backstop for a leader stuck in a request.
        """
        if self._changed is None:
            self._changed = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await self._changed.wait()

    async def wait(self, waiter: Waiter, run: PollRunner, clock: Clock) -> TaskResult:
        """Wait for the task's final snapshot, leading the polling when nobody else does."""
        while True:
            if self.final is not None:
                return self.final
            if self.error is not None:
                raise self.error
            if not self.leading:
                break
            remaining = None if waiter.deadline is None else waiter.deadline - clock()
            if remaining is not None and remaining <= 0:
                raise WaitTimeoutError(self.task_id, waiter.timeout or 0.0, self.last)
            await self._wait_for_change(remaining)
        # Nobody polls: this waiter leads (inline, not a coroutine of its own: every
        # wait goes through here, and each coroutine in the chain costs every request).
        self.leading = True
        try:
            result = await run(waiter.deadline, self, self.mode, self.last is not None)
        except WaitTimeoutError as exc:
            # Only this waiter's deadline passed; a follower may take over. Report the
            # timeout this caller gave, whoever's loop measured it.
            raise WaitTimeoutError(
                self.task_id, waiter.timeout or 0.0, exc.last_result or self.last
            ) from exc.__cause__
        except SPOError as exc:
            self.error = exc  # about the task itself: every waiter gets it
            raise
        else:
            self.final = result
            return result
        finally:
            self.leading = False
            self._wake()


def _tell(observer: Observer | None, method: str, value: object) -> None:
    """Call one waiter's observer; whatever it does, the loop and the other waiters go on."""
    if observer is None:
        return
    try:
        getattr(observer, method)(value)
    except Exception:
        log.exception("a waiter's observer raised; the shared poll goes on")


class SharedPolls:
    """A client's registry of (task, policy) pairs being waited for."""

    def __init__(self) -> None:
        self._polls: dict[Hashable, _SharedPoll] = {}

    def __len__(self) -> int:
        return len(self._polls)

    async def wait(
        self,
        key: Hashable,
        task_id: str,
        waiter: Waiter,
        run: PollRunner,
        *,
        clock: Clock,
    ) -> TaskResult:
        """Join (or start) the shared wait under ``key`` (a task id with its policy)."""
        shared = self._polls.get(key)
        if shared is None:
            shared = self._polls[key] = _SharedPoll(task_id)
        shared.waiters.append(waiter)
        if shared.last is not None:
            _tell(waiter.observer, "snapshot", shared.last)  # what this waiter missed
        try:
            return await shared.wait(waiter, run, clock)
        finally:
            shared.waiters.remove(waiter)
            if not shared.waiters:
                del self._polls[key]
