"""A batch's journal: an SQLite file that makes a batch survive a crash without paying twice.

For each batch item the journal holds its key and request fingerprint and where
it stands, as one row moving through these states::

    new --intent--> submitting --task id--> submitted --result--> finished
     ^                  |    |
     +-- no task made --+    +-- answer lost --> unknown

* ``submitting`` is written, durably, *before* the submit's POST leaves, and
  ``submitted`` (with the task id) the moment the id arrives, before anything
  else happens. A crash between the two leaves ``submitting``: the POST may
  have created a task whose id is lost, so a later run reports the item as
  outcome unknown instead of paying for it twice.
* Status changes and the final result (the :func:`~spo_async._convert.task_to_wire`
  JSON) are written as they come, without waiting for the disk: losing them
  costs one poll, never a task.

Writing. Every SQLite call runs in one thread of the journal's own, so the
event loop never waits on ``fsync``. Writes queued together commit together
(group commit). Commits do not wait for the disk (``synchronous=NORMAL``),
except for the two writes that prevent double billing: their commit is
checkpointed (the ``-wal`` flushed, copied into the journal file, the journal
file flushed) before the caller goes on. So the journal
file alone always holds every intent and every task id; the ``-wal`` holds at
most the statuses and results written since. Every write that is queued is
carried out even if the coroutine that asked for it is cancelled, so a task id
that arrived is never dropped on the way to disk.

Failing. Any error in the thread (a full disk, a file deleted under it, text
SQLite cannot store, a bug) fails the write that met it, and every write after
it, with :class:`JournalError` at once: the thread never dies silently and no
caller waits forever. Each caller gets an error of its own (the batch layer
adds notes to it); the task id write's error carries ``task_id``.

Identity and versions. The file carries an application id and a schema
version (``PRAGMA application_id`` / ``user_version``, and a ``meta`` table for
humans). A file that is not a journal, a journal from a newer spo-async, one
that fails SQLite's integrity check or whose rows do not match its batch
record, or one written for a different batch (a key whose request differs,
keys added or missing) is refused with :class:`JournalError` or
:class:`JournalError` (``different_batch``) before any network call.

One run at a time: while a journal is open, a lock on a byte of the journal
file itself (see :func:`~spo_async._journal_file.hold_file`) keeps a second run
off it, however the file is reached; the operating system releases it even on
SIGKILL.

The file's layout, its checks and the values read from it are in
:mod:`spo_async._journal_file`; this module drives them from its thread and
re-exports their names.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from ._convert import task_to_wire
from ._events import BatchKey
from ._journal_file import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    HeldFile,
    ItemState,
    JournalEntry,
    JournalError,
    RecordedError,
    batch_fingerprint,
    batch_mismatch,
    checkpoint,
    error_text,
    hold_file,
    is_full,
    key_text,
    load_entries,
    prepare_file,
    request_fingerprint,
    retiring_holder,
    store_text,
)
from ._models import TaskResult

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "ItemState",
    "Journal",
    "JournalEntry",
    "JournalError",
    "RecordedError",
    "batch_fingerprint",
    "request_fingerprint",
]

T = TypeVar("T")

_Op = Callable[[sqlite3.Connection], Any]
_Job = tuple[_Op, bool, concurrent.futures.Future[Any] | None]


#: Seconds a new run waits for an ending run of this process to let go of its file,
#: and how often it looks whether that run's event loop still runs.
_HANDOVER_TIMEOUT, _HANDOVER_CHECK = 60.0, 0.5


async def _handed_over(path: Path) -> None:
    """Wait until no ending run of this process holds ``path``'s file (bounded).

    A run still busy is not waited for: opening the file then is refused, as it
    should be. Nor is one whose event loop has stopped (its close will never run).
    Past the bound, the open goes ahead and is refused the same way.
    """
    held = retiring_holder(path)
    if held is None:
        return
    loop = asyncio.get_running_loop()
    released = loop.create_future()

    def wake() -> None:
        if not released.done():
            released.set_result(None)

    def from_any_thread() -> None:
        with contextlib.suppress(RuntimeError):  # this loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(wake)

    held.when_released(from_any_thread)
    try:
        deadline = loop.time() + _HANDOVER_TIMEOUT
        while not released.done() and loop.time() < deadline:
            closer = held.retiring
            if closer is None or closer.is_closed() or not closer.is_running():
                return  # nobody will close it: the open is refused at once
            with contextlib.suppress(TimeoutError):
                # Wakes at the release; looks again now and then whether the closer runs.
                await asyncio.wait_for(asyncio.shield(released), _HANDOVER_CHECK)
    finally:
        held.forget(from_any_thread)


class Journal:
    """A batch journal on one SQLite file; open it with ``async with Journal(path):``.

    All reads and writes run in the journal's own thread. The batch layer
    drives it; the methods are named after the moments they record.
    """

    #: Seconds a write waits for another connection's transaction on the file
    #: (someone reading the journal with the ``sqlite3`` shell) before it fails.
    busy_timeout: float = 5.0

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        # Guards _accepting and _failure, so no job is queued behind a thread that stopped.
        self._gate = threading.Lock()
        self._accepting = False
        self._failure: JournalError | None = None
        self._held: HeldFile | None = None
        self._closed = False
        self._retiring = False
        #: The event loop the journal was opened on, which closes it too.
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<Journal {str(self.path)!r}>"

    @property
    def failure(self) -> JournalError | None:
        """The error that stopped the journal, if one did; every write after it fails too."""
        return self._failure

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Open (or create) and lock the file; check it is a whole journal this version reads.

        Raises :class:`JournalError` (naming the file) when another run holds
        it, or it is not a journal, too new, damaged or incomplete.
        """
        if self._thread is not None:
            raise JournalError("the journal is already open", path=self.path)
        self._loop = asyncio.get_running_loop()
        await _handed_over(self.path)
        if self._thread is not None:  # another open() of this journal won the wait
            raise JournalError("the journal is already open", path=self.path)
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        started.set_running_or_notify_cancel()  # from now on only the thread settles it
        self._accepting = True
        self._thread = threading.Thread(
            target=self._serve, args=(started,), name="spo-async journal", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wrap_future(started)
        except BaseException:
            self._closed = True
            self._stop_accepting()
            raise

    async def close(self) -> None:
        """Finish every queued write, then close the file. Calling it again does nothing.

        An earlier write failure is not raised again here: it was raised to the
        write that met it.
        """
        if self._closed or self._thread is None:
            return
        self.retire()
        self._closed = True
        self._stop_accepting()
        await asyncio.wrap_future(self._stopped)
        self._thread.join()

    def retire(self) -> None:
        """Say that this run is ending: a new run of this process on the file waits for it.

        Without this, a rerun right after a batch's ``break`` would be refused as a
        second run on the file while the first is still closing. Thread-safe.
        """
        self._retiring = True
        held = self._held
        if held is not None:
            held.retiring = self._loop

    def _stop_accepting(self) -> None:
        with self._gate:
            if self._accepting:
                self._accepting = False
                self._jobs.put(None)  # the last job: the thread stops after the ones before

    # -- the writer thread -------------------------------------------------------------

    def _serve(self, started: concurrent.futures.Future[None]) -> None:
        stopped = self._stopped
        stopped.set_running_or_notify_cancel()  # from now on only this thread settles it
        conn: sqlite3.Connection | None = None
        try:
            try:
                conn = self._connect()
            except BaseException as exc:
                started.set_exception(_journal_error(exc, self.path))
                return
            started.set_result(None)
            stopping = False
            while not stopping:
                batch: list[_Job] = []
                job = self._jobs.get()
                while job is not None:
                    batch.append(job)
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                else:
                    stopping = True
                if batch:
                    self._run_group(conn, batch)
        finally:
            with self._gate:
                self._accepting = False
            self._fail_queued()
            self._shut(conn)
            stopped.set_result(None)

    def _connect(self) -> sqlite3.Connection:
        held = hold_file(self.path)
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                held.real_path,
                isolation_level=None,
                check_same_thread=True,
                timeout=self.busy_timeout,
            )
            prepare_file(conn, self.path)
            # Commits do not wait for the disk; a durable write's checkpoint flushes the
            # -wal, copies it into the file and flushes that (three flushes in all).
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            if conn is not None:
                conn.close()
            held.release(discard=True)  # a file this run created is not left behind
            raise
        try:
            held.relock()
        except BaseException:
            conn.close()
            held.release()
            raise
        held.retiring = self._loop if self._retiring else None
        self._held = held
        return conn

    def _shut(self, conn: sqlite3.Connection | None) -> None:
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the rest into the file
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        held, self._held = self._held, None
        if held is not None:
            held.release()

    def _run_group(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        """Run queued jobs in one transaction; every one of them is carried out.

        Whatever goes wrong, every job's caller gets an answer: a bug here must
        not leave a coroutine waiting forever.
        """
        try:
            waiting = [
                future if future is not None and future.set_running_or_notify_cancel() else None
                for _, _, future in batch
            ]
            outcomes: list[tuple[bool, Any]] = []
            if self._failure is None:
                try:
                    outcomes = self._write(conn, batch)
                except BaseException as exc:
                    self._fail(exc)
            failure = self._failure
            for i, future in enumerate(waiting):
                if future is None:
                    continue
                if failure is not None:
                    future.set_exception(_copy(failure))
                elif outcomes[i][0]:
                    future.set_result(outcomes[i][1])
                else:
                    future.set_exception(outcomes[i][1])
        except BaseException as exc:
            self._fail(exc)
            for _, _, future in batch:
                self._answer_failed(future)

    def _write(self, conn: sqlite3.Connection, batch: list[_Job]) -> list[tuple[bool, Any]]:
        durable = any(flag for _, flag, _ in batch)
        if durable and self._held is not None:
            self._held.check()
        conn.execute("BEGIN IMMEDIATE")
        outcomes: list[tuple[bool, Any]] = []
        try:
            for op, _, _ in batch:
                # A batch mismatch undoes its own job only; anything else undoes the group.
                conn.execute("SAVEPOINT job")
                try:
                    outcomes.append((True, op(conn)))
                except JournalError as exc:
                    if not exc.different_batch:
                        raise
                    conn.execute("ROLLBACK TO job")
                    outcomes.append((False, exc))
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        if durable:
            checkpoint(conn, self.path)
        return outcomes

    def _fail(self, exc: BaseException) -> None:
        with self._gate:
            if self._failure is None:
                self._failure = _journal_error(exc, self.path)

    def _fail_queued(self) -> None:
        """Fail whatever is still queued (the thread is stopping): nobody waits forever."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                self._answer_failed(job[2])

    def _answer_failed(self, future: concurrent.futures.Future[Any] | None) -> None:
        """Fail ``future`` unless it is answered or cancelled already."""
        if future is None or future.done():
            return
        if future.running() or future.set_running_or_notify_cancel():
            failure = self._failure
            future.set_exception(
                _copy(failure)
                if failure is not None
                else JournalError("the journal is closed", path=self.path)
            )

    # -- queuing -----------------------------------------------------------------------

    def _queue(
        self, op: _Op, *, durable: bool, wait: bool
    ) -> concurrent.futures.Future[Any] | None:
        future: concurrent.futures.Future[Any] | None = (
            concurrent.futures.Future() if wait else None
        )
        with self._gate:
            if self._failure is not None:
                raise JournalError(
                    f"the journal stopped after an earlier failure: {self._failure.reason}",
                    path=self.path,
                ) from self._failure
            if not self._accepting:
                raise JournalError("the journal is closed", path=self.path)
            self._jobs.put((op, durable, future))
        return future

    async def _call(self, op: Callable[[sqlite3.Connection], T], *, durable: bool = False) -> T:
        future = self._queue(op, durable=durable, wait=True)
        assert future is not None  # noqa: S101
        result: T = await asyncio.wrap_future(future)
        return result

    # -- the batch's moments -----------------------------------------------------------

    async def start_batch(
        self, items: list[tuple[BatchKey, str]]
    ) -> Mapping[BatchKey, JournalEntry]:
        """Record a new batch, or check that this is the batch already recorded.

        ``items`` are ``(key, request fingerprint)`` in input order. Returns what
        the journal knows of every key. Raises :class:`JournalError` (``different_batch``)
        when the journal holds a different batch.
        """
        fingerprint = batch_fingerprint(items)
        path = self.path

        def op(conn: sqlite3.Connection) -> dict[BatchKey, JournalEntry]:
            row = conn.execute("SELECT value FROM meta WHERE name = 'batch'").fetchone()
            if row is None:
                now = time.time()
                conn.executemany(
                    "INSERT INTO meta (name, value) VALUES (?, ?)",
                    [("batch", fingerprint), ("items", str(len(items))), ("created_at", str(now))],
                )
                conn.executemany(
                    "INSERT INTO items (key, idx, fingerprint, state, updated_at) "
                    "VALUES (?, ?, ?, 'new', ?)",
                    [(key_text(k), i, fp, now) for i, (k, fp) in enumerate(items)],
                )
            entries = load_entries(conn, path)
            if row is not None and row[0] != fingerprint:
                recorded = {e.key: e.fingerprint for e in entries.values()}
                given = dict(items)
                raise batch_mismatch(
                    path=path,
                    changed=[k for k, fp in items if k in recorded and recorded[k] != fp],
                    missing=[k for k in recorded if k not in given],
                    added=[k for k, _ in items if k not in recorded],
                )
            return entries

        return await self._call(op, durable=True)

    async def entries(self) -> Mapping[BatchKey, JournalEntry]:
        """Everything the journal holds, by key."""
        path = self.path
        return await self._call(lambda conn: load_entries(conn, path))

    def _update(self, key: BatchKey, sql: str, *params: Any) -> _Op:
        stored_key, path = key_text(key), self.path

        def op(conn: sqlite3.Connection) -> None:
            changed = conn.execute(
                f"UPDATE items SET {sql}, updated_at = ? WHERE key = ?",  # noqa: S608 - fixed SQL
                (*params, time.time(), stored_key),
            ).rowcount
            if changed != 1:
                raise JournalError(
                    f"the journal is damaged: it has {changed} rows for key {stored_key}",
                    path=path,
                )

        return op

    async def intent(self, key: BatchKey) -> None:
        """Durably record that ``key`` is about to be submitted. Call it before the POST.

        When this returns, the intent is in the journal file itself (not only
        in its ``-wal``).
        """
        op = self._update(key, "state = 'submitting', submits = submits + 1, error = NULL")
        await self._call(op, durable=True)

    def revert_intent(self, key: BatchKey) -> None:
        """The submit recorded by :meth:`intent` never started after all (queued, not awaited).

        It never raises (it runs while a cancellation unwinds): if the journal
        has stopped, the row stays ``submitting``, which is safe.
        """
        with contextlib.suppress(JournalError):
            self._queue(self._update(key, "state = 'new'"), durable=False, wait=False)

    async def task_id(self, key: BatchKey, task_id: str) -> None:
        """Durably record the task id the submit returned. Call it before anything else.

        When this returns, the id is in the journal file itself. If it cannot
        be recorded, the :class:`JournalError` carries ``task_id`` and says the
        task exists: it is paid for, and only this error still knows its id.
        """
        op = self._update(
            key, "state = 'submitted', task_id = ?, status = NULL", store_text(task_id)
        )
        try:
            await self._call(op, durable=True)
        except JournalError as exc:
            raise JournalError(
                f"task {task_id!r} exists on the service (item {key!r}) but its id could not "
                f"be recorded: {exc.reason}",
                path=self.path,
                task_id=task_id,
            ) from exc

    async def submit_failed(self, key: BatchKey, error: BaseException) -> None:
        """The submit failed without creating a task: the item may be submitted again."""
        await self._call(self._update(key, "state = 'new', error = ?", error_text(error)))

    async def outcome_unknown(self, key: BatchKey, error: BaseException) -> None:
        """The submit may have created a task whose id was lost."""
        await self._call(self._update(key, "state = 'unknown', error = ?", error_text(error)))

    def status(self, key: BatchKey, result: TaskResult) -> None:
        """Note a new status or round count (queued, not awaited: losing it costs one poll)."""
        op = self._update(
            key,
            "status = ?, rounds = ?",
            store_text(result.raw_status),
            len(result.completed_rounds),
        )
        self._queue(op, durable=False, wait=False)

    async def wait_failed(self, key: BatchKey, error: BaseException) -> None:
        """The wait for the task ended with an error; the task id stays, to poll next time."""
        await self._call(self._update(key, "error = ?", error_text(error)))

    async def finished(self, key: BatchKey, result: TaskResult) -> None:
        """Record the task's final snapshot (as ASCII JSON: any text the service sent fits)."""
        try:
            body = json.dumps(task_to_wire(result))
        except (TypeError, ValueError) as exc:
            raise JournalError(
                f"cannot record the result of task {result.task_id!r}: {exc}", path=self.path
            ) from None
        op = self._update(
            key,
            "state = 'finished', task_id = ?, status = ?, rounds = ?, result = ?, error = NULL",
            store_text(result.task_id),
            store_text(result.raw_status),
            len(result.completed_rounds),
            body,
        )
        await self._call(op)


def _journal_error(exc: BaseException, path: Path) -> JournalError:
    """Any failure met in the journal's thread, as the JournalError its callers get."""
    if isinstance(exc, JournalError):
        return exc
    if isinstance(exc, sqlite3.Error):
        reason = "the disk is full" if is_full(exc) else f"a write failed ({exc})"
        error = JournalError(
            f"{reason}; the journal was left as it was before this write", path=path
        )
    else:
        detail = error_text(exc)
        error = JournalError(f"the journal's thread failed: {detail}", path=path)
    error.__cause__ = exc
    return error


def _copy(error: JournalError) -> JournalError:
    """A fresh error with ``error``'s message for each caller (callers add notes to theirs)."""
    copy = JournalError(error.reason, path=error.path, task_id=error.task_id)
    copy.__cause__ = error
    return copy
