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
(group commit). The two writes that prevent double billing commit with
``synchronous=FULL``; the others with ``NORMAL`` (safe against a crash of the
process, which is what the journal is for). Every write that is queued is
carried out even if the coroutine that asked for it is cancelled, so a task id
that arrived is never dropped on the way to disk.

Identity and versions. The file carries an application id and a schema
version (``PRAGMA application_id`` / ``user_version``, and a ``meta`` table for
humans). A file that is not a journal, a journal from a newer spo-async, or one
written for a different batch (a key whose request differs, keys added or
missing) is refused with :class:`JournalError` or :class:`JournalMismatchError`
before any network call. A write that fails (``database or disk is full``)
rolls back whole, leaves the file as it was, and raises :class:`JournalError`.

One run at a time: while a journal is open, a lock file next to it
(``<name>.lock``, POSIX ``flock``, released by the OS even on SIGKILL) keeps a
second run from working on the same items.

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
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

from ._convert import task_to_wire
from ._events import BatchKey
from ._journal_file import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    ItemState,
    JournalEntry,
    JournalError,
    JournalMismatchError,
    RecordedError,
    batch_fingerprint,
    error_text,
    is_full,
    key_text,
    load_entries,
    prepare_file,
    request_fingerprint,
)
from ._models import TaskResult

if sys.platform != "win32":
    import fcntl

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "ItemState",
    "Journal",
    "JournalEntry",
    "JournalError",
    "JournalMismatchError",
    "RecordedError",
    "batch_fingerprint",
    "request_fingerprint",
]

T = TypeVar("T")

_Op = Callable[[sqlite3.Connection], Any]
_Job = tuple[_Op, bool, concurrent.futures.Future[Any] | None]


class Journal:
    """A batch journal on one SQLite file; open it with ``async with Journal(path):``.

    All reads and writes run in the journal's own thread. The batch layer
    drives it; the methods are named after the moments they record.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._failure: JournalError | None = None
        self._lock_file: IO[bytes] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Journal {str(self.path)!r}>"

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
        """Open (or create) the file, check that it is a journal this version can read."""
        if self._thread is not None:
            raise JournalError("the journal is already open", path=self.path)
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        started.set_running_or_notify_cancel()  # from now on only the thread settles it
        self._thread = threading.Thread(
            target=self._serve, args=(started,), name="spo-async journal", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wrap_future(started)
        except BaseException:
            self._closed = True
            self._jobs.put(None)
            raise

    async def close(self) -> None:
        """Finish every queued write, then close the file. Calling it again does nothing.

        An earlier write failure is not raised again here: it was raised to the
        write that met it.
        """
        if self._closed or self._thread is None:
            return
        self._closed = True
        self._jobs.put(None)
        await asyncio.wrap_future(self._stopped)
        self._thread.join()

    def _unlock(self) -> None:
        lock, self._lock_file = self._lock_file, None
        if lock is not None:
            lock.close()

    # -- the writer thread -------------------------------------------------------------

    def _serve(self, started: concurrent.futures.Future[None]) -> None:
        stopped = self._stopped
        stopped.set_running_or_notify_cancel()  # from now on only this thread settles it
        try:
            self._lock()
            conn = self._connect()
        except BaseException as exc:
            self._unlock()
            started.set_exception(exc)
            stopped.set_result(None)
            return
        started.set_result(None)
        try:
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
            conn.close()
            self._unlock()
            stopped.set_result(None)

    def _lock(self) -> None:
        if sys.platform == "win32":  # pragma: no cover - no flock: one run at a time is on you
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            handle = lock_path.open("ab")
        except OSError as exc:
            raise JournalError(f"cannot create the lock file: {exc}", path=self.path) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise JournalError(
                "another run is using this journal (its lock file is held)", path=self.path
            ) from None
        self._lock_file = handle

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal: {exc}", path=self.path) from None
        try:
            prepare_file(conn, self.path)
        except BaseException:
            conn.close()
            raise
        return conn

    def _run_group(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        """Run queued jobs in one transaction; every one of them is carried out."""
        for _, _, future in batch:
            if future is not None:
                future.set_running_or_notify_cancel()
        results: list[Any] = []
        error: BaseException | None = self._failure
        if error is None:
            durable = any(flag for _, flag, _ in batch)
            try:
                conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    results = [op(conn) for op, _, _ in batch]
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
            except JournalError as exc:
                error = exc
            except sqlite3.Error as exc:
                reason = "the disk is full" if is_full(exc) else f"a write failed ({exc})"
                error = self._failure = JournalError(
                    f"{reason}; the journal was left as it was before this write", path=self.path
                )
        for i, (_, _, future) in enumerate(batch):
            if future is None or future.cancelled():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(results[i])

    # -- queuing -----------------------------------------------------------------------

    def _queue(
        self, op: _Op, *, durable: bool, wait: bool
    ) -> concurrent.futures.Future[Any] | None:
        if self._closed or self._thread is None:
            raise JournalError("the journal is closed", path=self.path)
        if self._failure is not None:
            raise JournalError(f"unusable after an earlier failure: {self._failure}")
        future: concurrent.futures.Future[Any] | None = (
            concurrent.futures.Future() if wait else None
        )
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
        the journal knows of every key. Raises :class:`JournalMismatchError`
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
                raise JournalMismatchError(
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
        stored_key = key_text(key)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"UPDATE items SET {sql}, updated_at = ? WHERE key = ?",  # noqa: S608 - fixed SQL
                (*params, time.time(), stored_key),
            )

        return op

    async def intent(self, key: BatchKey) -> None:
        """Durably record that ``key`` is about to be submitted. Call it before the POST."""
        op = self._update(key, "state = 'submitting', submits = submits + 1, error = NULL")
        await self._call(op, durable=True)

    def revert_intent(self, key: BatchKey) -> None:
        """The submit recorded by :meth:`intent` never started after all (queued, not awaited)."""
        self._queue(self._update(key, "state = 'new'"), durable=False, wait=False)

    async def task_id(self, key: BatchKey, task_id: str) -> None:
        """Durably record the task id the submit returned. Call it before anything else."""
        op = self._update(key, "state = 'submitted', task_id = ?, status = NULL", task_id)
        await self._call(op, durable=True)

    async def submit_failed(self, key: BatchKey, error: BaseException) -> None:
        """The submit failed without creating a task: the item may be submitted again."""
        await self._call(self._update(key, "state = 'new', error = ?", error_text(error)))

    async def outcome_unknown(self, key: BatchKey, error: BaseException) -> None:
        """The submit may have created a task whose id was lost."""
        await self._call(self._update(key, "state = 'unknown', error = ?", error_text(error)))

    def status(self, key: BatchKey, result: TaskResult) -> None:
        """Note a new status or round count (queued, not awaited: losing it costs one poll)."""
        op = self._update(
            key, "status = ?, rounds = ?", result.raw_status, len(result.completed_rounds)
        )
        self._queue(op, durable=False, wait=False)

    async def wait_failed(self, key: BatchKey, error: BaseException) -> None:
        """The wait for the task ended with an error; the task id stays, to poll next time."""
        await self._call(self._update(key, "error = ?", error_text(error)))

    async def finished(self, key: BatchKey, result: TaskResult) -> None:
        """Record the task's final snapshot."""
        body = json.dumps(task_to_wire(result), ensure_ascii=False)
        op = self._update(
            key,
            "state = 'finished', task_id = ?, status = ?, rounds = ?, result = ?, error = NULL",
            result.task_id,
            result.raw_status,
            len(result.completed_rounds),
            body,
        )
        await self._call(op)
