"""One poll loop per task, however many coroutines wait for it.

When several coroutines wait for the same task id, the first becomes the
*leader* and polls; the others follow: they see every snapshot through their own
``on_progress`` hooks and receive the leader's final result or error, at one GET
per poll in all. If the leader leaves early (its own deadline passed, or it was
cancelled), a follower still waiting takes over the polling. Each waiter keeps
its own deadline; the loop uses the leader's schedule and retry policy, in
progress mode as soon as any waiter asked for progress.

Nothing here runs in the background: the polling happens inside the leader's
own ``await``, so cancelling every waiter leaves no task behind.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from ._errors import SPOError, WaitTimeoutError
from ._models import TaskResult
from ._schedules import PollMode

__all__ = ["SharedPoll", "SharedPolls"]

#: Runs one poll loop to the end: given the remaining time, the snapshot hook, the
#: mode getter and whether it takes over from an earlier loop (which looked at the
#: task already, so the first look comes at once), returns the final snapshot or raises.
PollRunner = Callable[
    [float | None, Callable[[TaskResult], Awaitable[None]], Callable[[], PollMode], bool],
    Awaitable[TaskResult],
]


class SharedPoll:
    """The state all waiters of one task share."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.waiters = 0
        self.progress_waiters = 0
        self.leading = False
        self.last: TaskResult | None = None
        self.final: TaskResult | None = None
        self.error: SPOError | None = None
        self.hooks: dict[object, Callable[[TaskResult], Any]] = {}
        self._changed: asyncio.Event | None = None

    def mode(self) -> PollMode:
        """Progress mode while any waiter wants to see rounds as they land."""
        return PollMode.PROGRESS if self.progress_waiters else PollMode.COMPLETION

    async def publish(self, snapshot: TaskResult) -> None:
        """Hand a new snapshot to every waiter's hook."""
        self.last = snapshot
        for hook in list(self.hooks.values()):
            outcome = hook(snapshot)
            if inspect.isawaitable(outcome):
                await outcome

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_for_change(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        await self._changed.wait()

    async def wait(
        self,
        run: PollRunner,
        *,
        timeout: float | None,
        clock: Callable[[], float],
    ) -> TaskResult:
        """Wait for the task's final snapshot, leading the polling when nobody else does."""
        deadline = None if timeout is None else clock() + timeout
        while True:
            if self.final is not None:
                return self.final
            if self.error is not None:
                raise self.error
            remaining = None if deadline is None else max(0.0, deadline - clock())
            if not self.leading:
                return await self._lead(run, remaining, timeout)
            if remaining is not None and remaining <= 0:
                raise WaitTimeoutError(self.task_id, timeout or 0.0, self.last)
            try:
                async with asyncio.timeout(remaining):
                    await self._wait_for_change()
            except TimeoutError:
                raise WaitTimeoutError(self.task_id, timeout or 0.0, self.last) from None

    async def _lead(
        self, run: PollRunner, remaining: float | None, timeout: float | None
    ) -> TaskResult:
        self.leading = True
        try:
            result = await run(remaining, self.publish, self.mode, self.last is not None)
        except WaitTimeoutError as exc:
            # Only this waiter's deadline passed; a follower may take over. Report the
            # timeout the caller gave, not what was left of it when this waiter took the lead.
            raise WaitTimeoutError(
                self.task_id, timeout or 0.0, exc.last_result or self.last
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


class SharedPolls:
    """The client's registry of tasks being waited for."""

    def __init__(self) -> None:
        self._polls: dict[str, SharedPoll] = {}

    def __len__(self) -> int:
        return len(self._polls)

    async def wait(
        self,
        task_id: str,
        run: PollRunner,
        *,
        timeout: float | None,
        clock: Callable[[], float],
        on_progress: Callable[[TaskResult], Any] | None,
    ) -> TaskResult:
        """Join (or start) the shared wait for ``task_id``."""
        shared = self._polls.get(task_id)
        if shared is None:
            shared = self._polls[task_id] = SharedPoll(task_id)
        token = object()
        shared.waiters += 1
        if on_progress is not None:
            shared.hooks[token] = on_progress
            shared.progress_waiters += 1
        try:
            return await shared.wait(run, timeout=timeout, clock=clock)
        finally:
            shared.waiters -= 1
            if shared.hooks.pop(token, None) is not None:
                shared.progress_waiters -= 1
            if shared.waiters == 0:
                del self._polls[task_id]
