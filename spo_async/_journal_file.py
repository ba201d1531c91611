"""What a batch journal file holds: its layout, its identity checks and its rows.

The storage half of :mod:`spo_async._journal` (which drives it from a thread of
its own and says when each write happens): the SQL schema, the application id
and schema version that tell a journal apart from any other SQLite file, the
checks that refuse a foreign, newer or damaged file, the values a row is read
into (:class:`JournalEntry`), and the fingerprints that tell whether a journal
belongs to a batch. The errors a journal raises live here too, because these
checks raise them. Everything here runs on a connection it is given: no
threads, no event loop.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import attrs

from ._convert import request_to_wire, task_from_wire
from ._errors import SPOError
from ._events import BatchKey
from ._models import OptimizationRequest, TaskResult
from ._version import __version__

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "ItemState",
    "JournalEntry",
    "JournalError",
    "JournalMismatchError",
    "RecordedError",
    "batch_fingerprint",
    "error_text",
    "is_full",
    "key_text",
    "load_entries",
    "prepare_file",
    "request_fingerprint",
]

#: Written as ``PRAGMA application_id``: "SPOJ", so ``file(1)`` and we can tell the file apart.
APPLICATION_ID: Final = 0x53504F4A
#: The journal layout this version writes, and the newest it can read.
SCHEMA_VERSION: Final = 1
_APPLICATION: Final = "spo-async batch journal"
_SHOWN_KEYS: Final = 5

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
    task_id     TEXT,
    status      TEXT,               -- the last status seen, as the service spelled it
    rounds      INTEGER,            -- completed rounds last seen
    result      TEXT,               -- the final TaskResult, as task_to_wire JSON
    error       TEXT,               -- the last error, as {"type", "message"} JSON
    updated_at  REAL NOT NULL       -- Unix time of the last change
);
"""


class JournalError(SPOError):
    """The journal cannot be used: not a journal, too new, locked, unreadable or unwritable.

    When a write fails the file is left as it was before that write; ``path``
    says which file.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{message} (journal: {self.path})" if self.path else message)


class JournalMismatchError(JournalError):
    """The journal was written for a different batch.

    ``changed`` keys have a different request than the journal recorded;
    ``missing`` keys are in the journal but not in this batch; ``added`` are in
    this batch but not in the journal. Use a new journal file for a new batch.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str],
        changed: list[BatchKey],
        missing: list[BatchKey],
        added: list[BatchKey],
    ) -> None:
        self.changed = changed
        self.missing = missing
        self.added = added
        parts = []
        for label, keys in (("changed", changed), ("missing", missing), ("added", added)):
            if keys:
                shown = ", ".join(repr(k) for k in keys[:_SHOWN_KEYS])
                more = f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
                parts.append(f"{len(keys)} {label} ({shown}{more})")
        super().__init__(
            "this journal belongs to a different batch: keys "
            + "; ".join(parts or ["in a different order"])
            + ". Use a new journal file for a new batch",
            path=path,
        )


class RecordedError(SPOError):
    """An error that an earlier run recorded in the journal: its type's name and message."""

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.message = message
        super().__init__(f"{type_name}: {message} (recorded by an earlier run)")


class ItemState(enum.StrEnum):
    """Where a batch item stands in the journal (see the module's diagram)."""

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


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def request_fingerprint(request: OptimizationRequest) -> str:
    """The sha256 (hex) of the request's canonical submit body: equal requests, equal prints."""
    return hashlib.sha256(_canonical(request_to_wire(request))).hexdigest()


def key_text(key: BatchKey) -> str:
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
    return json.dumps({"type": type(error).__name__, "message": str(error)})


def is_full(exc: sqlite3.Error) -> bool:
    return "full" in str(exc).lower()


def prepare_file(conn: sqlite3.Connection, path: Path) -> None:
    """Check the file is a journal this version can read; set one up in an empty file."""
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise JournalError(
            f"not a journal: the file is not an SQLite database ({exc})", path=path
        ) from None
    if app_id == 0 and not tables:
        _create(conn, path)
        return
    if app_id != APPLICATION_ID:
        raise JournalError(
            "not an spo-async journal: the file is another application's SQLite database",
            path=path,
        )
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"the journal was written by a newer spo-async (schema {version}; this version "
            f"reads up to {SCHEMA_VERSION}): upgrade spo-async to resume it",
            path=path,
        )
    if version < 1 or not {"meta", "items"} <= tables:
        raise JournalError("the journal is damaged: its tables are missing", path=path)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    except sqlite3.Error as exc:
        raise JournalError(f"cannot use the journal: {exc}", path=path) from None
    if str(mode).lower() != "wal":
        raise JournalError(f"cannot switch the journal to WAL mode (got {mode})", path=path)


def _create(conn: sqlite3.Connection, path: Path) -> None:
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"cannot switch the journal to WAL mode (got {mode})", path=path)
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


def load_entries(conn: sqlite3.Connection, path: Path) -> dict[BatchKey, JournalEntry]:
    entries: dict[BatchKey, JournalEntry] = {}
    rows = conn.execute(
        "SELECT key, idx, fingerprint, state, submits, task_id, status, result, error "
        "FROM items ORDER BY idx"
    )
    for row in rows:
        try:
            entry = _entry(row)
        except Exception as exc:
            raise JournalError(
                f"the journal is damaged: the row for key {row[0]} cannot be read ({exc})",
                path=path,
            ) from None
        entries[entry.key] = entry
    return entries


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    key_text, idx, fingerprint, state, submits, task_id, status, result, error = row
    key = json.loads(key_text)
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise TypeError(f"a key must be a string or an int, got {key!r}")
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
    return JournalEntry(
        key=key,
        index=idx,
        fingerprint=fingerprint,
        state=ItemState(state),
        submits=submits,
        task_id=task_id,
        status=status,
        result=final,
        error=recorded,
    )
