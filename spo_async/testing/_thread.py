"""The emulator on its own event loop in a daemon thread, for sync code and foreign loops.

An :class:`~spo_async.testing._emulator.Emulator` lives on the loop that started it. A
synchronous test, a test running under another loop (anyio, trio-asyncio, a second
``asyncio.run``) or a plain script cannot share that loop, so
:class:`ThreadedEmulator` gives the emulator a loop of its own in a background thread
and forwards the scripting calls onto it. Reading the records from another thread is
fine (they are only appended to, under the GIL); calls that change the emulator's state
run on its loop and wait for it.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

from spo_async.testing._config import EmulatorConfig
from spo_async.testing._emulator import Emulator, RequestRecord, SubmitRecord
from spo_async.testing._faults import Fault, FaultKind
from spo_async.testing._tasks import SimulatedTask, TaskOutcome

__all__ = ["ThreadedEmulator"]

_T = TypeVar("_T")


class ThreadedEmulator:
    """An :class:`Emulator` served from a daemon thread: ``with ThreadedEmulator() as emu:``.

    It mirrors the emulator's API (``base_url``, ``api_key``, ``inject``,
    ``script_next``, the records); :attr:`emulator` gives the underlying object for
    anything else, to be touched only through :meth:`call`.
    """

    def __init__(
        self, config: EmulatorConfig | None = None, *, start_timeout: float = 10.0
    ) -> None:
        self.emulator = Emulator(config)
        self._start_timeout = start_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the thread and wait until the emulator is listening (or failed to)."""
        if self._thread is not None:
            raise RuntimeError("the threaded emulator was already started")
        self._thread = threading.Thread(target=self._run, name="spo-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise TimeoutError("the emulator thread did not start in time")
        if self._error is not None:
            self._thread.join()
            raise self._error

    def _run(self) -> None:
        """The thread's body: one event loop for the emulator's whole life."""
        asyncio.run(self._main())

    async def _main(self) -> None:
        """Start the emulator, signal readiness, serve until asked to stop, then close."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.emulator.start()
        except BaseException as exc:  # handed to the starting thread, which re-raises it
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.emulator.close()

    def close(self) -> None:
        """Stop the emulator and join its thread; calling it again does nothing."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if thread is None or not thread.is_alive() or loop is None or stop is None:
            return
        loop.call_soon_threadsafe(stop.set)
        thread.join()

    def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` on the emulator's loop and return its result.

        Before :meth:`start` (or after :meth:`close`) there is no loop to race with, so
        ``fn`` runs right here.
        """
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return fn(*args)
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # re-raised in the calling thread
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result()

    # -- the emulator's API, forwarded ---------------------------------------------

    @property
    def config(self) -> EmulatorConfig:
        """The emulator's configuration."""
        return self.emulator.config

    @property
    def base_url(self) -> str:
        """The root URL to give a client, such as ``http://127.0.0.1:54321``."""
        return self.emulator.base_url

    @property
    def api_key(self) -> str:
        """A key the emulator accepts."""
        return self.emulator.api_key

    def inject(self, *faults: Fault) -> None:
        """Arm ``faults`` on the emulator's loop."""
        self.call(self.emulator.inject, *faults)

    def clear_faults(self) -> None:
        """Disarm every fault on the emulator's loop."""
        self.call(self.emulator.clear_faults)

    def script_next(self, *outcomes: TaskOutcome) -> None:
        """Queue outcomes for the next tasks created, on the emulator's loop."""
        self.call(self.emulator.script_next, *outcomes)

    def reset_records(self) -> None:
        """Forget the traffic records and fault tally, on the emulator's loop."""
        self.call(self.emulator.reset_records)

    def task_snapshot(self, task_id: str) -> dict[str, Any]:
        """Return the body the task's query would answer now, without any fault."""
        return self.call(self.emulator.task_snapshot, task_id)

    def now(self) -> float:
        """Return the current time of the simulation clock."""
        return self.emulator.now()

    @property
    def submits(self) -> list[SubmitRecord]:
        """Every submit request received, in order."""
        return self.emulator.submits

    @property
    def tasks_created(self) -> int:
        """How many tasks were created since the last reset."""
        return self.emulator.tasks_created

    @property
    def task_gets(self) -> collections.Counter[str]:
        """How many queries arrived per task id."""
        return self.emulator.task_gets

    @property
    def request_log(self) -> list[RequestRecord]:
        """Every request, in order."""
        return self.emulator.request_log

    @property
    def tasks(self) -> dict[str, SimulatedTask]:
        """Every task created, by id."""
        return self.emulator.tasks

    @property
    def faults_fired(self) -> collections.Counter[FaultKind]:
        """How many times each kind of fault fired."""
        return self.emulator.faults_fired
