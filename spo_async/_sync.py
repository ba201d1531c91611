"""``SPOClient``: the same client for scripts and notebooks, without ``await``.

It runs an :class:`~spo_async.AsyncSPOClient` on an event loop of its own, in a
thread of its own, and blocks the calling thread on each call. A thread rather
than ``asyncio.run`` per call, because a notebook's cell already runs inside an
event loop (where ``asyncio.run`` refuses to start) and because the
connection pool should live as long as the client, not one call.

Ctrl-C (``KeyboardInterrupt``) in the calling thread cancels the call on the
loop and waits briefly for it to stop, so no request is left running for a
caller that is gone. Closing the client (``with SPOClient() as client:`` or
:meth:`SPOClient.close`) closes the pool, stops the loop and joins the thread:
nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import warnings
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

from ._client import UNSET, AsyncSPOClient, Unset
from ._errors import ClientClosedError, ConfigurationError
from ._limiter import RequestLimiter
from ._models import OptimizationRequest, TaskResult
from ._polling import DEFAULT_WAIT_TIMEOUT
from ._retry import RetryPolicy
from ._schedules import PollModeLike, ScheduleLike
from ._settings import DEFAULT_CONCURRENCY
from ._transport import DEFAULT_MAX_RESPONSE_BYTES

if TYPE_CHECKING:
    from ._batch import BatchInput, KeyFunction
    from ._events import EventCallback, Outcome

__all__ = ["SPOClient"]

T = TypeVar("T")

#: Seconds a cancelled call is given to stop on the loop after Ctrl-C.
_CANCEL_GRACE = 5.0


class _Call:
    """One blocking call running on the loop: its task, and an event set when it ends."""

    __slots__ = ("done", "error", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class _LoopThread:
    """An event loop running in a daemon thread, fed coroutines from other threads."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="spo-async sync client", daemon=True)
        self._calls: set[_Call] = set()
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def on_loop_thread(self) -> bool:
        """Whether the caller runs on the loop's own thread (in an event callback)."""
        return threading.current_thread() is self._thread

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and wait for it; Ctrl-C cancels it there.

        After an interruption the call is cancelled on the loop and given
        :data:`_CANCEL_GRACE` seconds to stop; what its cancellation noted (the
        id of a task it had created) is copied onto the ``KeyboardInterrupt``.
        """
        if self.on_loop_thread():
            coroutine.close()
            raise ConfigurationError(
                "an SPOClient cannot be called from its own event callbacks (they run on its "
                "loop's thread); use AsyncSPOClient there"
            )
        call = _Call()

        async def run() -> T:
            call.task = asyncio.current_task()
            try:
                return await coroutine
            except BaseException as exc:
                call.error = exc
                raise
            finally:
                call.done.set()

        self._calls.add(call)
        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        try:
            return future.result()
        except BaseException as exc:
            if not call.done.is_set():  # interrupted here (Ctrl-C): stop the call over there
                self.cancel(call)
                call.done.wait(_CANCEL_GRACE)
                for note in getattr(call.error, "__notes__", ()):
                    exc.add_note(note)
            raise
        finally:
            self._calls.discard(call)

    def cancel(self, call: _Call) -> None:
        """Cancel one call on the loop (from any thread)."""
        task = call.task
        if task is not None:
            self.loop.call_soon_threadsafe(task.cancel)

    def cancel_all(self) -> None:
        """Cancel every call still running and wait (briefly) for each to end."""
        calls = list(self._calls)
        for call in calls:
            self.cancel(call)
        for call in calls:
            call.done.wait(_CANCEL_GRACE)

    def stop(self) -> None:
        """Stop the loop, join the thread and close the loop."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        if not self.loop.is_running():  # at interpreter exit the thread may be frozen instead
            self.loop.close()


class SPOClient:
    """A blocking client for scripts and notebooks: :class:`AsyncSPOClient` without ``await``.

    It takes the same arguments as :class:`AsyncSPOClient` (except ``session``,
    ``transport`` and ``sleep``, which belong to an event loop) and offers the
    same calls but ``optimize_many``::

        with SPOClient() as client:                 # key from AI302_API_KEY
            result = client.optimize(request)
            print(result.best_prompt)

    Event callbacks (``on_event``) run in the client's own thread; keep them
    short. Use one client per thread or share one: calls from several threads
    run concurrently on the client's loop. Ctrl-C cancels the call in progress.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        request_timeout: float = 30.0,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        retry: RetryPolicy | None = None,
        schedule: ScheduleLike | None = None,
        limiter: RequestLimiter | None = None,
        lang: Literal["en", "cn", "jp"] | None = None,
        strict_status: bool = False,
        allow_insecure_http: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runner: _LoopThread | None = None
        self._root = self
        runner = _LoopThread()
        try:

            async def build() -> AsyncSPOClient:
                return AsyncSPOClient(
                    api_key,
                    base_url=base_url,
                    timeout=timeout,
                    request_timeout=request_timeout,
                    max_connections=max_connections,
                    max_response_bytes=max_response_bytes,
                    retry=retry,
                    schedule=schedule,
                    limiter=limiter,
                    lang=lang,
                    strict_status=strict_status,
                    allow_insecure_http=allow_insecure_http,
                    clock=clock,
                )

            self._client = runner.call(build())
            self._client._core.warns_unclosed = False  # this client warns, and closes it
        except BaseException:
            runner.stop()
            raise
        self._runner = runner
        self._lock = threading.Lock()

    def _view(self, client: AsyncSPOClient) -> SPOClient:
        """A client on the same loop and pool, with ``client``'s options; its root owns the loop."""
        view = object.__new__(SPOClient)
        view._client = client
        view._runner = None
        view._root = self._root
        view._lock = self._root._lock
        return view

    def __repr__(self) -> str:
        return repr(self._client).replace("AsyncSPOClient", "SPOClient", 1)

    def _loop(self) -> _LoopThread:
        runner = self._root._runner
        if runner is None or self._client.closed:
            raise ClientClosedError("this SPOClient is closed; create a new one")
        return runner

    def _call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return self._loop().call(make())

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._loop()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._client.closed

    def close(self) -> None:
        """Close the pool, stop the loop and join its thread. Calling it again does nothing.

        Closing a view made by :meth:`with_options` closes the client it was made from.
        """
        root = self._root
        runner = root._runner
        if runner is not None and runner.on_loop_thread():
            raise ConfigurationError(
                "an SPOClient cannot be closed from its own event callbacks; close it afterwards"
            )
        with root._lock:
            runner, root._runner = root._runner, None
        if runner is None:
            return
        try:
            runner.cancel_all()  # calls in other threads end with CancelledError, not a hang
            runner.call(root._client.aclose())
        finally:
            runner.stop()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        runner = getattr(self, "_runner", None)
        if runner is not None:
            _warn(f"unclosed {self!r}: use 'with' or call close()", ResourceWarning, stacklevel=2)
            self._runner = None
            if runner.on_loop_thread():  # collected on its own loop: let the loop end itself
                runner.loop.call_soon(runner.loop.stop)
                return
            with contextlib.suppress(Exception):  # close the pool as close() would
                runner.call(self._client.aclose())
            runner.stop()

    # -- the calls ---------------------------------------------------------------------------

    def with_options(
        self,
        *,
        timeout: float | Unset | None = UNSET,
        request_timeout: float | Unset = UNSET,
        retry: RetryPolicy | Unset = UNSET,
        schedule: ScheduleLike | Unset = UNSET,
        strict_status: bool | Unset = UNSET,
    ) -> SPOClient:
        """A view with other options; see :meth:`AsyncSPOClient.with_options`."""
        client = self._client.with_options(
            timeout=timeout,
            request_timeout=request_timeout,
            retry=retry,
            schedule=schedule,
            strict_status=strict_status,
        )
        self._loop()
        return self._view(client)

    def submit(self, request: OptimizationRequest) -> str:
        """Start an optimization; see :meth:`AsyncSPOClient.submit`."""
        return self._call(lambda: self._client.submit(request))

    def get_task(self, task_id: str, *, max_rounds: int | None = None) -> TaskResult:
        """Read one snapshot with one GET; see :meth:`AsyncSPOClient.get_task`."""
        return self._call(lambda: self._client.get_task(task_id, max_rounds=max_rounds))

    def wait_for_result(
        self,
        task_id: str,
        *,
        timeout: float | Unset | None = UNSET,
        on_event: EventCallback | None = None,
        max_rounds: int | None = None,
        raise_on_failure: bool = True,
        poll_mode: PollModeLike | None = None,
    ) -> TaskResult:
        """Poll the task until it finishes; see :meth:`AsyncSPOClient.wait_for_result`."""
        return self._call(
            lambda: self._client.wait_for_result(
                task_id,
                timeout=timeout,
                on_event=on_event,
                max_rounds=max_rounds,
                raise_on_failure=raise_on_failure,
                poll_mode=poll_mode,
            )
        )

    def optimize(
        self,
        request: OptimizationRequest,
        *,
        timeout: float | Unset | None = UNSET,
        on_event: EventCallback | None = None,
        raise_on_failure: bool = True,
        poll_mode: PollModeLike | None = None,
    ) -> TaskResult:
        """Submit and wait, within ``timeout``; see :meth:`AsyncSPOClient.optimize`."""
        return self._call(
            lambda: self._client.optimize(
                request,
                timeout=timeout,
                on_event=on_event,
                raise_on_failure=raise_on_failure,
                poll_mode=poll_mode,
            )
        )

    def optimize_all(
        self,
        requests: BatchInput,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        keys: KeyFunction | None = None,
        journal: str | os.PathLike[str] | None = None,
        resubmit_unknown: bool = False,
        timeout: float | Unset | None = UNSET,
        on_event: EventCallback | None = None,
        poll_mode: PollModeLike | None = None,
    ) -> list[Outcome]:
        """Run a batch; every outcome in input order (see :meth:`AsyncSPOClient.optimize_all`)."""
        return self._call(
            lambda: self._client.optimize_all(
                requests,
                concurrency=concurrency,
                keys=keys,
                journal=journal,
                resubmit_unknown=resubmit_unknown,
                timeout=timeout,
                on_event=on_event,
                poll_mode=poll_mode,
            )
        )
