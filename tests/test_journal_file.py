"""The journal file's refusals: odd paths, linked files and rows that cannot be read back."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from spo_async._errors import JournalError
from spo_async._journal_file import (
    batch_fingerprint,
    hold_file,
    key_text,
    load_entries,
    prepare_file,
)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A fresh journal database with its tables set up, outside any run's lock."""
    connection = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    prepare_file(connection, tmp_path / "j.db")
    yield connection
    connection.close()


def _item(
    conn: sqlite3.Connection,
    key: object,
    *,
    state: str = "new",
    task_id: str | None = None,
    result: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO items (key, idx, fingerprint, state, task_id, result, updated_at) "
        "VALUES (?, 0, 'fp', ?, ?, ?, 0)",
        (json.dumps(key), state, task_id, result),
    )


def _record(conn: sqlite3.Connection, keys: list[object]) -> None:
    fingerprint = batch_fingerprint((k, "fp") for k in keys)  # type: ignore[misc]
    conn.execute("INSERT INTO meta VALUES ('batch', ?), ('items', ?)", (fingerprint, len(keys)))


def test_a_path_through_a_regular_file_is_refused_as_unopenable(tmp_path: Path) -> None:
    """A journal path whose parent is a file is refused with a JournalError, not an OSError."""
    parent = tmp_path / "plain"
    parent.write_text("x")
    with pytest.raises(JournalError, match="cannot open the journal"):
        hold_file(parent / "journal.db")


def test_a_hard_linked_journal_is_refused_naming_its_link_count(tmp_path: Path) -> None:
    """A journal file with a second hard link is refused, and no lock is left behind."""
    first = tmp_path / "a.db"
    first.write_bytes(b"")
    os.link(first, tmp_path / "b.db")
    with pytest.raises(JournalError, match="2 names"):
        hold_file(first)
    os.unlink(tmp_path / "b.db")
    hold_file(first).release()


def test_items_without_a_batch_record_are_damage(conn: sqlite3.Connection, tmp_path: Path) -> None:
    """Rows with no batch record in meta make the journal damaged, not an empty batch."""
    _item(conn, "a")
    with pytest.raises(JournalError, match="1 items but no batch record"):
        load_entries(conn, tmp_path / "j.db")


def test_an_empty_journal_loads_as_no_entries(conn: sqlite3.Connection, tmp_path: Path) -> None:
    """A journal with neither a batch record nor rows loads as an empty mapping."""
    assert load_entries(conn, tmp_path / "j.db") == {}


@pytest.mark.parametrize(
    "case",
    [
        (True, "new", None, None, "must be a string or an int"),
        ([1], "new", None, None, "must be a string or an int"),
        ("k", "submitted", None, None, "without a task id"),
        ("k", "new", None, "{}", "a result without a task id"),
        ("k", "finished", "t1", None, "finished without a result"),
    ],
)
def test_an_unreadable_row_is_damage_naming_its_key(
    conn: sqlite3.Connection,
    tmp_path: Path,
    case: tuple[object, str, str | None, str | None, str],
) -> None:
    """A row that breaks the journal's invariants is refused with its key and the reason."""
    key, state, task_id, result, reason = case
    _item(conn, key, state=state, task_id=task_id, result=result)
    _record(conn, [key])
    with pytest.raises(JournalError, match="cannot be read") as caught:
        load_entries(conn, tmp_path / "j.db")
    assert reason in str(caught.value)
    assert key_text(key) in str(caught.value)  # type: ignore[arg-type]
