"""What a batch journal file holds, how a run holds it, and how it is checked.

The storage half of :mod:`spo_async._journal` (which drives it from a thread of
its own and says when each write happens):

* the SQL schema, and the application id and schema version that tell a
  journal apart from any other SQLite file;
* :func:`hold_file`: one run per journal *file*, whatever name reaches it. The
  run locks a byte of the database file itself, so a symbolic link, a second
  name or a deleted side file cannot let a second run in;
* the checks that refuse a foreign, newer, damaged or incomplete file, and
  :func:`checkpoint`, which keeps the file complete without its ``-wal``;
* the values a row is read into (:class:`JournalEntry`), the fingerprints that
  tell whether a journal belongs to a batch, and the errors these checks raise.

Everything here runs on a connection or a descriptor it is given: no event loop.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import hashlib
import json
import os
import sqlite3
import stat
import struct
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._convert import request_to_wire, task_from_wire
from ._errors import JournalError, RecordedError
from ._events import BatchKey
from ._models import OptimizationRequest, TaskResult

if TYPE_CHECKING:
    import asyncio
from ._version import __version__

if sys.platform == "win32":  # pragma: no cover - not run on the CI's Linux
    import msvcrt
else:
    import fcntl

__all__ = [
    "APPLICATION_ID",
    "LOCK_BYTE",
    "SCHEMA_VERSION",
    "HeldFile",
    "ItemState",
    "JournalEntry",
    "JournalError",
    "RecordedError",
    "batch_fingerprint",
    "batch_mismatch",
    "checkpoint",
    "error_text",
    "hold_file",
    "is_full",
    "key_text",
    "load_entries",
    "prepare_file",
    "request_fingerprint",
    "store_text",
]

#: Written as ``PRAGMA application_id``: "SPOJ", so ``file(1)`` and we can tell the file apart.
APPLICATION_ID: Final = 0x53504F4A
#: The journal layout this version writes, and the newest it can read.
SCHEMA_VERSION: Final = 1
#: The byte of the database file a run locks. It lies in the page SQLite keeps
#: for its own locks (1 GiB in, never used for data) but past the bytes SQLite
#: locks itself, so the two kinds of lock never meet.
LOCK_BYTE: Final = 0x40000400
_APPLICATION: Final = "spo-async batch journal"
_SHOWN_KEYS: Final = 5
#: A -wal file is cut back to this size after a checkpoint emptied it.
_WAL_SIZE_LIMIT: Final = 4 * 1024 * 1024

_SCHEMA = """
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE items (
    key         TEXT PRIMARY KEY,   -- the batch key, as JSON (so 1 and "1" stay apart)
    idx         INTEGER NOT NULL,   -- position in the batch's input
    fingerprint TEXT NOT NULL,      -- sha256 of the request's canonical JSON
    state       TEXT NOT NULL CHECK (state IN
                    ('new', 'submitting', 'submitted', 'finished', 'unknown')),
    submits     INTEGER NOT NULL DEFAULT 0,  -- intents written (POSTs attempted)
    task_id     TEXT,               -- as the service sent it (a BLOB if not valid UTF-8)
    status      TEXT,               -- the last status seen (a BLOB if not valid UTF-8)
    rounds      INTEGER,            -- completed rounds last seen
    result      TEXT,               -- the final TaskResult, as task_to_wire JSON (ASCII)
    error       TEXT,               -- the last error, as {"type", "message"} JSON (ASCII)
    updated_at  REAL NOT NULL       -- Unix time of the last change
);
"""


def batch_mismatch(
    *,
    path: str | os.PathLike[str],
    changed: list[BatchKey],
    missing: list[BatchKey],
    added: list[BatchKey],
) -> JournalError:
    """The error for a journal written for a different batch, naming the keys that differ."""
    parts = []
    for label, keys in (("changed", changed), ("missing", missing), ("added", added)):
        if keys:
            shown = ", ".join(repr(k) for k in keys[:_SHOWN_KEYS])
            more = f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
            parts.append(f"{len(keys)} {label} ({shown}{more})")
    error = JournalError(
        "this journal belongs to a different batch: keys "
        + "; ".join(parts or ["in a different order"])
        + ". Use a new journal file for a new batch",
        path=path,
    )
    error.different_batch = True
    error.changed, error.missing, error.added = changed, missing, added
    return error


class ItemState(enum.StrEnum):
    """Where a batch item stands in the journal (see :mod:`spo_async._journal`'s diagram)."""

    NEW = "new"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    FINISHED = "finished"
    UNKNOWN = "unknown"


@attrs.frozen(kw_only=True)
class JournalEntry:
    """One item as the journal recorded it."""

    key: BatchKey
    index: int
    fingerprint: str
    state: ItemState
    submits: int = 0
    task_id: str | None = None
    status: str | None = None
    result: TaskResult | None = None
    error: RecordedError | None = None


# -- values ---------------------------------------------------------------------------


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def request_fingerprint(request: OptimizationRequest) -> str:
    """The sha256 (hex) of the request's canonical submit body: equal requests, equal prints."""
    return hashlib.sha256(_canonical(request_to_wire(request))).hexdigest()


def key_text(key: BatchKey) -> str:
    """A key as stored: JSON, ASCII only (a lone surrogate is escaped, not refused)."""
    return json.dumps(key)


def batch_fingerprint(items: Iterable[tuple[BatchKey, str]]) -> str:
    """The sha256 (hex) of a batch's ``(key, request fingerprint)`` pairs, in input order."""
    digest = hashlib.sha256()
    for key, fingerprint in items:
        digest.update(key_text(key).encode())
        digest.update(b"\t")
        digest.update(fingerprint.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def error_text(error: BaseException) -> str:
    """An error as stored: ASCII JSON, whatever its message holds, even if ``str()`` fails."""
    try:
        message = str(error)
    except Exception:  # an exception's __str__ is someone else's code
        message = f"<{type(error).__name__} whose message could not be read>"
    return json.dumps({"type": type(error).__name__, "message": message})


def store_text(value: str) -> str | bytes:
    """Text from the service as stored: itself, or a BLOB of it if SQLite cannot take it.

    SQLite stores UTF-8, and a lone surrogate (half an emoji, valid in JSON)
    has none; such a value is kept byte for byte (``surrogatepass``) as a BLOB,
    which :func:`_load_text` tells apart by its type and turns back.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")
    return value


def _load_text(value: str | bytes | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogatepass")
    return value


def is_full(exc: sqlite3.Error) -> bool:
    """Whether SQLite failed because the disk (or the page limit) is full."""
    return getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or "full" in str(exc).lower()


# -- one run per file -----------------------------------------------------------------

#: ``F_OFD_SETLK`` (Linux): a lock owned by the open file, which SQLite's own
#: locks and the closing of other descriptors leave alone. Elsewhere a POSIX lock,
#: which is the process's: SQLite's "unlock the whole file" drops it, so it is
#: taken again once the connection holds its lasting WAL-mode lock.
_OFD_SETLK: int | None = None if sys.platform == "win32" else getattr(fcntl, "F_OFD_SETLK", None)

# The files this process holds, by (device, inode) and by real path. Never open a
# descriptor on a held file: closing it would drop the POSIX locks SQLite holds on
# it for the other run.
_registry = threading.RLock()  # re-entered: hold_file releases what it refuses
_held_files: dict[tuple[int, int], HeldFile] = {}
_held_paths: dict[str, HeldFile] = {}


class HeldFile:
    """A journal file opened and locked for one run; see :func:`hold_file`.

    ``real_path`` is where SQLite must open it (symbolic links resolved, so its
    ``-wal`` always lies next to the file itself). Release it only after the
    SQLite connection on it is closed.
    """

    def __init__(self, fd: int, identity: tuple[int, int], real_path: str, *, created: bool):
        self.fd = fd
        self.identity = identity
        self.real_path = real_path
        self.created = created
        self._orphans: list[int] = []  # descriptors another opener left on this file
        #: Once the run holding the file has begun to close, the event loop that closes
        #: it: a new run in this process waits for it (see :meth:`when_released`)
        #: instead of being refused, while that loop runs.
        self.retiring: asyncio.AbstractEventLoop | None = None
        self._released = False
        self._on_release: list[Callable[[], None]] = []

    def relock(self) -> None:
        """Take the lock again where SQLite may have dropped it (not with OFD locks)."""
        if _OFD_SETLK is None and not _try_lock(self.fd, self.real_path):  # pragma: no cover
            raise JournalError(
                "another run took this journal while it was being opened", path=self.real_path
            )

    def check(self) -> None:
        """Raise unless the journal's path still names this file, and only this name does.

        A run whose file was deleted, moved or replaced would go on recording in a
        file no later run finds; a hard link gives the file a second ``-wal``.
        """
        try:
            links = os.fstat(self.fd).st_nlink
            now = os.stat(self.real_path)
        except FileNotFoundError:
            links, now = 0, None
        if links == 0 or now is None or (now.st_dev, now.st_ino) != self.identity:
            raise JournalError(
                "the journal file was deleted, moved or replaced while this run used it; "
                "its records are no longer where the next run looks",
                path=self.real_path,
            )
        if links > 1:
            raise JournalError(_LINKED.format(links=links), path=self.real_path)

    def release(self, *, discard: bool = False) -> None:
        """Unlock and close; with ``discard``, remove the file if this run created it.

        Only the file and its rollback journal go: a ``-wal`` next to it holds
        records that are not this run's to throw away.
        """
        with _registry:
            if _held_files.get(self.identity) is self:
                del _held_files[self.identity]
                del _held_paths[self.real_path]
            if discard and self.created:
                for suffix in ("", "-journal"):
                    with contextlib.suppress(OSError):
                        os.unlink(self.real_path + suffix)
            for fd in [*self._orphans, self.fd]:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._orphans.clear()
            self._released = True
            callbacks, self._on_release = self._on_release, []
        for callback in callbacks:
            callback()

    def when_released(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from whichever thread releases the file) once it is released."""
        with _registry:
            if not self._released:
                self._on_release.append(callback)
                return
        callback()

    def forget(self, callback: Callable[[], None]) -> None:
        """Take back a ``callback`` given to :meth:`when_released` (its waiter gave up)."""
        with _registry, contextlib.suppress(ValueError):
            self._on_release.remove(callback)


_LINKED = (
    "the journal file has {links} names (hard links); SQLite keeps a journal's -wal file next "
    "to the name it was opened by, so two names can mix two runs' records. Remove the other "
    "names, or copy the file instead of linking it"
)


def hold_file(path: Path) -> HeldFile:
    """Open (or create) the journal file at ``path`` and lock it for this run.

    A run is known by the file, not by the name: two runs are refused whether
    they reach one file by the same path, a symbolic link or, within a process,
    a second :class:`~spo_async._journal.Journal`. A file with several names
    (hard links) is refused outright. Raises :class:`JournalError` naming the
    file; a refused path is left as it was (no file is created next to it).
    """
    with _registry:
        real_path = os.path.realpath(path)
        held = _held_paths.get(real_path)
        if held is None:
            try:
                now = os.stat(real_path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise JournalError(f"cannot open the journal: {exc.strerror}", path=path) from None
            else:
                held = _held_files.get((now.st_dev, now.st_ino))
        if held is not None:
            raise _in_use(path, held)
        fd, created = _open(path)
        held = _claim(fd, path, real_path, created=created)
        try:
            held.check()  # still the file at that path, now that it is locked
        except JournalError:
            held.release()
            raise
        if os.fstat(held.fd).st_size == 0 and _size(real_path + "-wal") > 0:
            held.release(discard=True)
            raise JournalError(
                "the journal file is empty but a -wal file with records lies next to it "
                "(the file was deleted or replaced, or copied without its records); it is "
                "refused rather than started over. Restore the journal file, or remove "
                "both to start a new batch",
                path=path,
            )
        _held_files[held.identity] = held
        _held_paths[real_path] = held
        return held


def retiring_holder(path: Path) -> HeldFile | None:
    """The run of this process that holds ``path``'s file and has begun to close, if any.

    A rerun right after a ``break`` from a batch meets the old run still closing (the
    event loop closes a dropped iterator a few steps later); it waits for that run
    rather than be refused.
    """
    with _registry:
        held = _held_paths.get(os.path.realpath(path))
        return held if held is not None and held.retiring is not None else None


def _claim(fd: int, path: Path, real_path: str, *, created: bool) -> HeldFile:
    """Check and lock the file just opened as ``fd``; if refused, let go of ``fd``.

    A descriptor on a file this process already holds is kept open until that
    run ends (closing it would drop the other run's SQLite locks).
    """
    info = os.fstat(fd)
    identity = (info.st_dev, info.st_ino)
    held = _held_files.get(identity)
    if held is not None:  # reached under a name that changed since the check above
        held._orphans.append(fd)
        raise _in_use(path, held)
    error = _refusal(fd, info, path, real_path, created=created)
    if error is not None:
        os.close(fd)
        raise error
    return HeldFile(fd, identity, real_path, created=created)


def _refusal(
    fd: int, info: os.stat_result, path: Path, real_path: str, *, created: bool
) -> JournalError | None:
    """Why the file open as ``fd`` cannot be this run's journal, or None once it is locked."""
    if not stat.S_ISREG(info.st_mode):
        return JournalError("not a journal: not a regular file", path=path)
    if info.st_nlink > 1:
        return JournalError(_LINKED.format(links=info.st_nlink), path=path)
    try:
        locked = _try_lock(fd, path)
    except JournalError as exc:  # no locks here at all: a file this run made is not left
        if created:
            os.unlink(real_path)
        return exc
    if not locked:
        return JournalError(
            "another run is using this journal (another process holds its lock)", path=path
        )
    return None


def _in_use(path: Path, held: HeldFile) -> JournalError:
    return JournalError(
        f"another run in this process is using this journal file (opened as {held.real_path})",
        path=path,
    )


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _open(path: Path) -> tuple[int, bool]:
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        try:
            return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            return os.open(path, flags), False
    except OSError as exc:
        raise JournalError(f"cannot open the journal: {exc.strerror}", path=path) from None


def _try_lock(fd: int, path: str | os.PathLike[str]) -> bool:
    """Lock :data:`LOCK_BYTE` of ``fd``'s file without waiting; False if another run has it."""
    try:
        if sys.platform == "win32":  # pragma: no cover - not run on the CI's Linux
            os.lseek(fd, LOCK_BYTE, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        elif _OFD_SETLK is not None:
            # struct flock: l_type, l_whence, l_start, l_len, l_pid (with native padding)
            lock = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, LOCK_BYTE, 1, 0)
            fcntl.fcntl(fd, _OFD_SETLK, lock)
        else:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, LOCK_BYTE, os.SEEK_SET)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EDEADLK):
            return False
        raise JournalError(
            f"cannot lock the journal file ({exc.strerror}); keep it on a local disk", path=path
        ) from None
    return True


# -- opening and checking -------------------------------------------------------------


def prepare_file(conn: sqlite3.Connection, path: Path) -> None:
    """Check the file is a whole journal this version can read; set one up in an empty file.

    Refused with :class:`JournalError`: a file that is not SQLite, another
    application's database, a newer layout, a file that fails SQLite's
    integrity check, and an empty WAL-mode database (what an older spo-async
    left in the main file when its ``-wal`` went missing). Leaves the file in
    WAL mode.
    """
    try:
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise _unreadable(exc, path) from None
    if app_id == 0 and not tables:
        if mode == "wal":
            raise JournalError(
                "the journal is incomplete: an SQLite file in WAL mode with no tables, "
                "its records in a -wal file that is missing. Copy the journal together "
                "with its -wal file (or delete it if it is not a journal)",
                path=path,
            )
        _create(conn, path)
    elif app_id != APPLICATION_ID:
        raise JournalError(
            "not an spo-async journal: the file is another application's SQLite database",
            path=path,
        )
    elif version > SCHEMA_VERSION:
        raise JournalError(
            f"the journal was written by a newer spo-async (schema {version}; this version "
            f"reads up to {SCHEMA_VERSION}): upgrade spo-async to resume it",
            path=path,
        )
    elif version < 1 or not {"meta", "items"} <= tables:
        raise JournalError("the journal is damaged: its tables are missing", path=path)
    else:
        _check_whole(conn, path)
    try:
        mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
    except sqlite3.Error as exc:
        raise JournalError(f"cannot use the journal: {exc}", path=path) from None
    if mode != "wal":
        raise JournalError(f"cannot switch the journal to WAL mode (got {mode})", path=path)


def _unreadable(exc: sqlite3.Error, path: Path) -> JournalError:
    if getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB":
        return JournalError(f"not a journal: the file is not an SQLite database ({exc})", path=path)
    return JournalError(f"the journal is damaged: SQLite cannot read it ({exc})", path=path)


def _check_whole(conn: sqlite3.Connection, path: Path) -> None:
    """SQLite's own structural check: every page, every index entry, every row's format."""
    try:
        problems = [r[0] for r in conn.execute("PRAGMA integrity_check(5)")]
    except sqlite3.DatabaseError as exc:
        raise _unreadable(exc, path) from None
    if problems != ["ok"]:
        raise JournalError(
            "the journal is damaged: SQLite's integrity check failed ("
            + "; ".join(problems)
            + "); it is refused rather than read as fewer items",
            path=path,
        )


def _create(conn: sqlite3.Connection, path: Path) -> None:
    # Created in rollback mode, so the tables reach the main file before any -wal
    # exists: a WAL-mode file without tables is then never ours (see prepare_file).
    try:
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?)",
                [
                    ("application", _APPLICATION),
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("written_by", f"spo-async {__version__}"),
                ],
            )
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        reason = "the disk is full" if is_full(exc) else str(exc)
        raise JournalError(f"cannot create the journal: {reason}", path=path) from None


def checkpoint(conn: sqlite3.Connection, path: Path) -> None:
    """Copy every committed write from the ``-wal`` into the journal file, and flush it.

    After this returns the main file alone holds everything committed so far:
    a copy of it, or a mount that loses the ``-wal``, loses nothing. Raises
    :class:`JournalError` when another connection's read transaction keeps the
    copy from completing (after the connection's busy timeout).
    """
    busy, logged, copied = conn.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
    if busy or copied != logged:
        raise JournalError(
            "the last write reached the journal's -wal file but could not be copied into the "
            "journal file: another connection keeps a read transaction open on it",
            path=path,
        )


# -- rows -----------------------------------------------------------------------------


def load_entries(conn: sqlite3.Connection, path: Path) -> dict[BatchKey, JournalEntry]:
    """Every item recorded, checked against the batch record: all of them, or an error.

    A journal is never read as fewer (or other) items than it was written with:
    the rows must be exactly the ones whose fingerprint the ``meta`` table
    recorded when the batch started, else :class:`JournalError` ("damaged").
    """
    meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
    rows = conn.execute(
        "SELECT key, idx, fingerprint, state, submits, task_id, status, result, error "
        "FROM items ORDER BY idx"
    ).fetchall()
    recorded = meta.get("batch")
    if recorded is None:
        if rows:
            raise _damaged(path, f"it holds {len(rows)} items but no batch record")
        return {}
    entries: dict[BatchKey, JournalEntry] = {}
    for row in rows:
        try:
            entry = entry_from_row(row)
        except Exception as exc:
            raise _damaged(path, f"the row for key {row[0]!r} cannot be read ({exc})") from None
        entries[entry.key] = entry
    count = meta.get("items", "")
    if not count.isdigit() or len(rows) != int(count) or len(entries) != len(rows):
        raise _damaged(path, f"it holds {len(entries)} distinct items of the {count} recorded")
    in_order = list(entries.values())
    if [e.index for e in in_order] != list(range(len(in_order))) or recorded != batch_fingerprint(
        (e.key, e.fingerprint) for e in in_order
    ):
        raise _damaged(path, "its items do not match its batch record")
    return entries


def _damaged(path: Path, what: str) -> JournalError:
    return JournalError(f"the journal is damaged: {what}; it is refused, not resumed", path=path)


_NEEDS_TASK = (ItemState.SUBMITTED, ItemState.FINISHED)


def entry_from_row(row: tuple[Any, ...]) -> JournalEntry:
    stored_key, idx, fingerprint, state, submits, stored_id, status, result, error = row
    key = json.loads(stored_key)
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise TypeError(f"a key must be a string or an int, got {key!r}")
    task_id = _load_text(stored_id)
    item_state = ItemState(state)
    if item_state in _NEEDS_TASK and task_id is None:
        raise ValueError(f"state {state!r} without a task id")
    recorded = None
    if error is not None:
        info = json.loads(error)
        recorded = RecordedError(str(info["type"]), str(info["message"]))
    final = None
    if result is not None:
        if task_id is None:
            raise ValueError("a result without a task id")
        body = json.loads(result)
        final = task_from_wire(body, task_id=task_id, max_rounds=body.get("max_rounds"))
    elif item_state is ItemState.FINISHED:
        raise ValueError("finished without a result")
    return JournalEntry(
        key=key,
        index=idx,
        fingerprint=fingerprint,
        state=item_state,
        submits=submits,
        task_id=task_id,
        status=_load_text(status),
        result=final,
        error=recorded,
    )
