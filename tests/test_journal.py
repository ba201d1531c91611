"""The batch journal on SQLite: states, durability settings, identity checks, typed errors."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from spo_async import SPOError, TaskResult
from spo_async._convert import task_from_wire
from spo_async._events import BatchKey
from spo_async._journal import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    ItemState,
    Journal,
    JournalError,
    RecordedError,
    batch_fingerprint,
    request_fingerprint,
)

from .conftest import make_request

ITEMS: list[tuple[BatchKey, str]] = [("a", "f" * 64), ("b", "e" * 64), (3, "d" * 64)]


def final_result(task_id: str = "t-1") -> TaskResult:
    body = {
        "status": "success",
        "best_prompt": "better",
        "best_round": 2,
        "round_data_list": [
            {"round": 1, "prompt": "p", "success": True, "sample": [], "tokens": 12},
            {"round": 2, "prompt": "better", "success": True, "sample": []},
        ],
        "trace": {"kept": True},
    }
    return task_from_wire(body, task_id=task_id, max_rounds=2)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "batch.journal"


async def test_a_new_journal_records_the_batch_and_reopens_it(path: Path) -> None:
    """A new file gets every item as 'new'; reopening with the same batch gives them back."""
    async with Journal(path) as journal:
        entries = await journal.start_batch(ITEMS)
    assert [(e.key, e.index, e.state) for e in entries.values()] == [
        ("a", 0, ItemState.NEW),
        ("b", 1, ItemState.NEW),
        (3, 2, ItemState.NEW),
    ]
    async with Journal(path) as journal:
        again = await journal.start_batch(ITEMS)
    assert again == entries


async def test_every_state_and_the_final_result_round_trip(path: Path) -> None:
    """Intent, task id, status, result and errors are read back as they were written."""
    result = final_result()
    async with Journal(path) as journal:
        await journal.start_batch(ITEMS)
        await journal.intent("a")
        await journal.task_id("a", "t-1")
        journal.status("a", result)
        await journal.finished("a", result)
        await journal.intent("b")
        await journal.outcome_unknown("b", OSError("connection reset"))
        await journal.intent(3)
        await journal.submit_failed(3, ValueError("bad model"))
    async with Journal(path) as journal:
        entries = await journal.entries()
    a, b, c = entries["a"], entries["b"], entries[3]
    assert (a.state, a.task_id, a.status, a.submits) == (ItemState.FINISHED, "t-1", "success", 1)
    assert a.result == result
    assert a.result is not None
    assert a.result.extra == {"trace": {"kept": True}}
    assert a.result.rounds[0].extra == {"tokens": 12}
    assert (b.state, b.task_id) == (ItemState.UNKNOWN, None)
    assert isinstance(b.error, RecordedError)
    assert (b.error.type_name, b.error.message) == ("OSError", "connection reset")
    assert (c.state, c.submits) == (ItemState.NEW, 1)
    assert c.error is not None
    assert c.error.type_name == "ValueError"


async def test_a_reverted_intent_is_new_again(path: Path) -> None:
    """An intent whose submit never started is taken back."""
    async with Journal(path) as journal:
        await journal.start_batch(ITEMS)
        await journal.intent("a")
        journal.revert_intent("a")
        entries = await journal.entries()
    assert entries["a"].state is ItemState.NEW


async def test_a_write_whose_caller_was_cancelled_still_happens(path: Path) -> None:
    """Cancelling the coroutine that awaits a task-id write does not lose the task id."""
    async with Journal(path) as journal:
        await journal.start_batch(ITEMS)
        await journal.intent("a")
        writing = asyncio.create_task(journal.task_id("a", "t-9"))
        await asyncio.sleep(0)
        writing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writing
    async with Journal(path) as journal:
        entries = await journal.entries()
    assert (entries["a"].state, entries["a"].task_id) == (ItemState.SUBMITTED, "t-9")


async def test_the_file_is_wal_with_identity_and_schema_version(path: Path) -> None:
    """The file says what it is: WAL mode, application id, schema version, a meta table."""
    async with Journal(path) as journal:
        await journal.start_batch(ITEMS)
        conn = sqlite3.connect(path)  # a reader next to the writer: WAL allows it
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        finally:
            conn.close()
    assert meta["schema_version"] == str(SCHEMA_VERSION)
    assert meta["batch"] == batch_fingerprint(ITEMS)


def test_request_fingerprint_is_the_canonical_body_hash() -> None:
    """Equal requests print alike; any field change prints differently."""
    assert request_fingerprint(make_request()) == request_fingerprint(make_request())
    assert request_fingerprint(make_request()) != request_fingerprint(make_request(max_rounds=4))
    assert len(request_fingerprint(make_request())) == 64


async def test_a_different_batch_is_refused_with_the_keys_that_differ(path: Path) -> None:
    """Changed, missing and added keys are named; the journal is left untouched."""
    async with Journal(path) as journal:
        await journal.start_batch(ITEMS)
    other: list[tuple[BatchKey, str]] = [("a", "0" * 64), (3, "d" * 64), ("new", "1" * 64)]
    async with Journal(path) as journal:
        with pytest.raises(JournalError) as caught:
            await journal.start_batch(other)
        entries = await journal.entries()
    error = caught.value
    assert error.different_batch
    assert (error.changed, error.missing, error.added) == (["a"], ["b"], ["new"])
    assert "different batch" in str(error)
    assert isinstance(error, SPOError)
    assert [e.key for e in entries.values()] == ["a", "b", 3]


async def test_garbage_bytes_are_not_a_journal(path: Path) -> None:
    """A file of random bytes is a JournalError, and stays as it was."""
    garbage = b"\x89PNG not a database at all" * 100
    path.write_bytes(garbage)  # noqa: ASYNC240 - a test fixture file
    with pytest.raises(JournalError, match="not an SQLite database"):
        await Journal(path).open()
    assert path.read_bytes() == garbage  # noqa: ASYNC240


async def test_another_applications_database_is_refused(path: Path) -> None:
    """A valid SQLite file of someone else's is refused, not written into."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="another application"):
        await Journal(path).open()


async def test_a_journal_from_a_newer_version_is_refused(path: Path) -> None:
    """A schema version above this one's is a clear error asking for an upgrade."""
    async with Journal(path) as journal:
        await journal.start_batch(ITEMS)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="newer spo-async"):
        await Journal(path).open()


async def test_a_journal_with_missing_tables_is_damaged(path: Path) -> None:
    """Our file with its items table gone is reported as damaged."""
    async with Journal(path) as journal:
        await journal.start_batch(ITEMS)
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE items")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="damaged"):
        await Journal(path).open()


async def test_a_second_run_on_the_same_journal_is_refused(path: Path) -> None:
    """While one run holds the journal, another cannot open it; after close it can."""
    async with Journal(path):
        with pytest.raises(JournalError, match="another run"):
            await Journal(path).open()
    async with Journal(path) as journal:
        assert await journal.entries() == {}


async def test_a_full_disk_is_a_journal_error_and_the_file_stays_whole(path: Path) -> None:
    """When the disk fills, the write fails as a whole with JournalError; what came before stays."""
    async with Journal(path) as journal:
        await journal.start_batch(ITEMS)
        await journal.intent("a")
        await journal.task_id("a", "t-1")

        def fill_up(conn: sqlite3.Connection) -> None:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await journal._call(fill_up)
        huge = task_from_wire(
            {"status": "success", "best_prompt": "x" * 200_000, "round_data_list": []},
            task_id="t-1",
        )
        with pytest.raises(JournalError, match="disk is full"):
            await journal.finished("a", huge)
        with pytest.raises(JournalError, match="disk is full"):
            await journal.intent("b")  # the journal stays refused after a failure
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    async with Journal(path) as journal:
        entries = await journal.entries()
    assert (entries["a"].state, entries["a"].task_id) == (ItemState.SUBMITTED, "t-1")
    assert entries["b"].state is ItemState.NEW


async def test_a_closed_journal_refuses_writes(path: Path) -> None:
    """Writing after close is a JournalError, not a silent loss."""
    journal = Journal(path)
    await journal.open()
    await journal.start_batch(ITEMS)
    await journal.close()
    await journal.close()
    with pytest.raises(JournalError, match="closed"):
        await journal.intent("a")


async def test_a_new_journal_is_whole_in_its_file_before_any_wal(path: Path) -> None:
    """Tables and identity reach the file itself first, so a file copied alone is a journal."""
    async with Journal(path):
        conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)  # the file's bytes only
        try:
            assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
            assert {"meta", "items"} <= {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master")
            }
        finally:
            conn.close()


async def test_after_close_the_file_alone_holds_everything(path: Path) -> None:
    """A closed journal leaves no -wal: its file alone is the whole journal, results included."""
    result = final_result()
    async with Journal(path) as journal:
        await journal.start_batch(ITEMS)
        await journal.intent("a")
        await journal.task_id("a", "t-1")
        await journal.finished("a", result)
    assert not path.with_name(path.name + "-wal").exists()
    async with Journal(path) as journal:
        entries = await journal.entries()
    assert entries["a"].result == result
