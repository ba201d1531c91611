"""The journal under hostile conditions: made for real, with real files, processes and bytes.

Four promises are held here. A journal is known by its file, not its path: a second
run is refused however it reaches the file. Damaged or incomplete state is refused,
never read as fewer items, and the journal file alone always holds every intent and
task id. Any text passes, and any failure in the journal's thread reaches its callers
as a JournalError at once. A task id that cannot be recorded travels in its error.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from spo_async import TaskResult
from spo_async._convert import task_from_wire
from spo_async._events import BatchKey
from spo_async._journal import ItemState, Journal, JournalError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX files and signals")

HALF_EMOJI = "\ud83d"  # a lone surrogate: valid in JSON ("\\ud83d"), not encodable as UTF-8
CONTROL = "".join(chr(c) for c in range(32)) + "\x7f"
ITEMS: list[tuple[BatchKey, str]] = [("a", "f" * 64), ("b", "e" * 64), (3, "d" * 64)]
RANK = {
    ItemState.NEW: 0,
    ItemState.SUBMITTING: 1,
    ItemState.UNKNOWN: 2,
    ItemState.SUBMITTED: 2,
    ItemState.FINISHED: 3,
}


def result(task_id: str, prompt: str = "better", *, extra: Any = None) -> TaskResult:
    body: dict[str, Any] = {
        "status": "success",
        "best_prompt": prompt,
        "best_round": 1,
        "round_data_list": [
            {"round": 1, "prompt": prompt, "success": True, "sample": [], "note": extra}
        ],
    }
    return task_from_wire(body, task_id=task_id, max_rounds=1)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "run.db"


async def write_batch(path: Path) -> None:
    """A small journal: 'a' submitted with its task id, the others new."""
    async with Journal(path) as journal:
        await journal.start_batch(ITEMS)
        await journal.intent("a")
        await journal.task_id("a", "t-a")


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def remove_all_but(path: Path) -> None:
    """Delete every file next to ``path``, as a tidy-up script might."""
    for side in path.parent.iterdir():
        if side != path:
            side.unlink()


def damage(path: Path, how: str) -> None:
    """Damage the journal file in place: a page zeroed or garbled, or the file cut short."""
    data = bytearray(path.read_bytes())
    page = 4096
    last = len(data) // page - 1  # a leaf of the items table
    if how == "zeroed page":
        data[last * page : (last + 1) * page] = bytes(page)
    elif how == "random page":
        data[last * page : (last + 1) * page] = random.Random(1).randbytes(page)
    elif how == "cut in half":
        data = data[: len(data) // 2]
    else:
        data = data[:100]
    path.write_bytes(bytes(data))


def garble_after_header(wal: Path) -> None:
    """Random bytes over a -wal file, past its 32-byte header."""
    data = bytearray(wal.read_bytes())
    data[40:] = random.Random(7).randbytes(len(data) - 40)
    wal.write_bytes(bytes(data))


def torn(earlier: bytes, later: bytes, from_later: list[bool], page: int = 4096) -> bytes:
    """A file made of pages from two moments: ``from_later[k]`` picks page ``k``'s version."""
    return b"".join(
        (later if use_later or len(earlier) <= k * page else earlier)[k * page : (k + 1) * page]
        for k, use_later in enumerate(from_later)
    )


# -- a second process ---------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from spo_async._journal import Journal, JournalError
    from spo_async import _journal_file
    from spo_async._convert import task_from_wire

    path, what = sys.argv[1], sys.argv[2]
    if "posix-lock" in what:
        _journal_file._OFD_SETLK = None  # the lock other systems than Linux get
    items = [("a", "f" * 64), ("b", "e" * 64), (3, "d" * 64)]
    body = {"status": "success", "best_prompt": "p", "round_data_list": []}

    async def main():
        journal = Journal(path)
        try:
            await journal.open()
        except JournalError as exc:
            print("refused:", exc, flush=True)
            return
        await journal.start_batch(items)
        if "write" in what:
            await journal.intent("a")
            await journal.task_id("a", "t-a")
            await journal.intent("b")
            # Written after the last durable write: only in the -wal when the kill comes.
            await journal.finished("a", task_from_wire(body, task_id="t-a"))
        print("holding", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await journal.close()
        print("closed", flush=True)

    asyncio.run(main())
    """
)


class Child:
    """A second process running a journal on ``path``; it says what happened on stdout."""

    def __init__(self, path: Path, what: str = "hold") -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own code
            [sys.executable, "-c", CHILD, str(path), what],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.first_line = self.process.stdout.readline().strip()

    def finish(self) -> str:
        out, err = self.process.communicate("\n", timeout=60)
        assert self.process.returncode == 0, err
        return out

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=60)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:  # reap every child and close its pipes
        if child.process.poll() is None:
            child.process.kill()
        child.process.communicate()


# -- 1. one run per file, however it is reached ------------------------------------------


@pytest.mark.parametrize("name", ["same path", "symlink", "relative path", "symlinked dir"])
async def test_a_second_journal_on_the_same_file_is_refused_by_any_name(
    path: Path, tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within one process, a second Journal is refused whatever path leads to the file."""
    await write_batch(path)
    if name == "same path":
        other = path
    elif name == "symlink":
        other = tmp_path / "alias.db"
        other.symlink_to(path)
    elif name == "relative path":
        monkeypatch.chdir(tmp_path)
        other = Path("sub/../run.db")
        (tmp_path / "sub").mkdir()
    else:
        (tmp_path / "linked").symlink_to(tmp_path, target_is_directory=True)
        other = tmp_path / "linked" / "run.db"
    async with Journal(path):
        with pytest.raises(JournalError, match="another run in this process") as caught:
            await Journal(other).open()
    assert caught.value.path == str(other)
    assert str(other) in str(caught.value)


async def test_a_run_that_is_closing_hands_the_file_over_to_the_next(path: Path) -> None:
    """A second Journal waits for a first one that has begun to close, then opens the file."""
    await write_batch(path)
    first = Journal(path)
    await first.open()
    first.retire()  # what a batch says as soon as it ends (a ``break`` included)
    second = Journal(path)
    opening = asyncio.ensure_future(second.open())
    for _ in range(20):  # many loop steps: still waiting, the first run holds the file
        await asyncio.sleep(0)
    assert not opening.done()
    await first.close()
    await opening
    assert (await second.entries())["a"].task_id == "t-a"  # the first run's records
    await second.close()


async def test_waiting_for_a_run_that_is_closing_can_be_cancelled(path: Path) -> None:
    """A new run cancelled while it waits leaves nothing behind: the file opens later as usual."""
    await write_batch(path)
    first = Journal(path)
    await first.open()
    first.retire()
    opening = asyncio.ensure_future(Journal(path).open())
    await asyncio.sleep(0)
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    await first.close()
    async with Journal(path):
        pass


async def test_a_second_process_is_refused_through_a_symlink_both_ways(
    path: Path, tmp_path: Path, children: list[Child]
) -> None:
    """A run in another process holds the file; this one is refused, and the other way round."""
    await write_batch(path)
    alias = tmp_path / "alias.db"
    alias.symlink_to(path)
    holder = Child(alias)
    children.append(holder)
    assert holder.first_line == "holding"
    with pytest.raises(JournalError, match="another process holds its lock"):
        await Journal(path).open()
    assert "closed" in holder.finish()

    async with Journal(path):
        refused = Child(alias)
        children.append(refused)
        assert refused.first_line.startswith("refused: another run is using this journal")
        assert str(alias) in refused.first_line


async def test_the_lock_holds_where_only_posix_locks_exist(
    path: Path, children: list[Child], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without Linux's OFD locks, a process lock is used and taken again after SQLite drops it.

    SQLite unlocks the whole file when its rollback-mode transactions end (as when a
    journal is created), which drops any process lock on it; the journal locks again
    once the connection is in WAL mode.
    """
    monkeypatch.setattr("spo_async._journal_file._OFD_SETLK", None)
    async with Journal(path) as journal:  # created here: through rollback mode
        await journal.start_batch(ITEMS)
        await journal.intent("a")
        refused = Child(path, "posix-lock")
        children.append(refused)
        assert refused.first_line.startswith("refused: another run is using this journal")
    holder = Child(path, "posix-lock")
    children.append(holder)
    assert holder.first_line == "holding"
    with pytest.raises(JournalError, match="another process"):
        await Journal(path).open()
    holder.finish()


async def test_a_hard_linked_journal_is_refused_by_either_name(path: Path, tmp_path: Path) -> None:
    """Two names mean two -wal files for one journal, so a file with two names is refused."""
    await write_batch(path)
    second = tmp_path / "second.db"
    os.link(path, second)
    for name in (path, second):
        with pytest.raises(JournalError, match="2 names"):
            await Journal(name).open()
    second.unlink()
    async with Journal(path) as journal:
        entries = await journal.entries()
    assert entries["a"].task_id == "t-a"


async def test_a_run_stops_when_its_file_gets_a_second_name(path: Path, tmp_path: Path) -> None:
    """A hard link made while a run works is seen before the next intent goes out."""
    async with Journal(path) as journal:
        await journal.start_batch(ITEMS)
        os.link(path, tmp_path / "second.db")
        with pytest.raises(JournalError, match="2 names"):
            await journal.intent("a")


async def test_no_lock_file_exists_and_deleting_side_files_lets_no_second_run_in(
    path: Path, tmp_path: Path, children: list[Child]
) -> None:
    """The lock is on the journal file itself: removing every other file changes nothing."""
    await write_batch(path)
    holder = Child(path)
    children.append(holder)
    assert holder.first_line == "holding"
    assert not any(name.endswith(".lock") for name in listing(tmp_path))
    remove_all_but(path)
    second = Child(path)
    children.append(second)
    assert second.first_line.startswith("refused: another run is using this journal")
    holder.finish()


@pytest.mark.parametrize("case", ["held", "directory", "not sqlite", "hard link", "no folder"])
async def test_a_refused_path_is_left_as_it_was(
    tmp_path: Path, case: str, children: list[Child]
) -> None:
    """Whatever the reason for refusing, nothing is created next to the path."""
    folder = tmp_path / "jobs"
    folder.mkdir()
    target = folder / "run.db"
    if case == "held":
        await write_batch(target)
        holder = Child(target)
        children.append(holder)
    elif case == "directory":
        target.mkdir()
    elif case == "not sqlite":
        target.write_text("notes\n" * 100)
    elif case == "hard link":
        await write_batch(target)
        os.link(target, folder / "other.db")
    else:
        target = folder / "missing" / "run.db"
    before = listing(folder)
    with pytest.raises(JournalError) as caught:
        await Journal(target).open()
    assert str(target) in str(caught.value)
    assert listing(folder) == before


async def test_where_no_lock_can_be_taken_the_journal_is_refused_and_nothing_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that refuses locks (here fcntl answers EINVAL) is a JournalError, no file."""
    monkeypatch.setattr("spo_async._journal_file._OFD_SETLK", -1)  # not a command: EINVAL
    with pytest.raises(JournalError, match="cannot lock the journal file"):
        await Journal(tmp_path / "run.db").open()
    assert listing(tmp_path) == []


async def test_a_journal_deleted_or_moved_under_a_run_stops_it(path: Path, tmp_path: Path) -> None:
    """A run whose file was deleted or renamed stops before its next intent, with a reason."""
    async with Journal(path) as journal:
        await journal.start_batch(ITEMS)
        os.rename(path, tmp_path / "moved.db")
        with pytest.raises(JournalError, match="deleted, moved or replaced"):
            await journal.intent("a")
    async with Journal(tmp_path / "moved.db") as journal:
        entries = await journal.entries()
    assert entries["a"].state is ItemState.NEW  # the intent was refused before the POST


async def test_an_empty_file_next_to_a_journals_wal_is_not_a_new_journal(
    path: Path, children: list[Child]
) -> None:
    """A journal file emptied (or deleted) while its -wal remains is refused, not started over."""
    child = Child(path, "write")
    children.append(child)
    assert child.first_line == "holding"
    child.kill()
    wal = path.with_name(path.name + "-wal")
    assert wal.stat().st_size > 0
    os.truncate(path, 0)
    with pytest.raises(JournalError, match="empty but a -wal file"):
        await Journal(path).open()
    assert wal.stat().st_size > 0  # the records are left alone
    os.unlink(path)
    with pytest.raises(JournalError, match="empty but a -wal file"):
        await Journal(path).open()
    assert "run.db" not in listing(path.parent)


# -- 2. damaged or incomplete state is refused ---------------------------------------------


async def test_after_a_kill_the_journal_file_alone_holds_every_intent_and_task_id(
    path: Path, tmp_path: Path, children: list[Child]
) -> None:
    """SIGKILL with records in the -wal: a copy of the file alone still has every id and intent.

    Only what came after the last durable write (here a result) may need the -wal.
    """
    child = Child(path, "write")
    children.append(child)
    assert child.first_line == "holding"
    child.kill()
    assert path.with_name("run.db-wal").stat().st_size > 0
    alone = tmp_path / "copy" / "run.db"
    alone.parent.mkdir()
    shutil.copyfile(path, alone)

    async with Journal(alone) as journal:
        entries = await journal.start_batch(ITEMS)
    assert (entries["a"].state, entries["a"].task_id) == (ItemState.SUBMITTED, "t-a")
    assert entries["b"].state is ItemState.SUBMITTING
    assert entries[3].state is ItemState.NEW

    async with Journal(path) as journal:  # with its -wal: the result too
        entries = await journal.start_batch(ITEMS)
    assert (entries["a"].state, entries["a"].task_id) == (ItemState.FINISHED, "t-a")


async def test_a_damaged_wal_never_costs_an_intent_or_a_task_id(
    path: Path, children: list[Child]
) -> None:
    """Garbage in the -wal after a kill: SQLite drops its tail, and the ids are all still there."""
    child = Child(path, "write")
    children.append(child)
    assert child.first_line == "holding"
    child.kill()
    garble_after_header(path.with_name("run.db-wal"))

    async with Journal(path) as journal:
        entries = await journal.start_batch(ITEMS)
    assert (entries["a"].task_id, entries["b"].state) == ("t-a", ItemState.SUBMITTING)


@pytest.mark.parametrize("how", ["zeroed page", "random page", "cut in half", "cut short"])
async def test_a_damaged_journal_file_is_refused(path: Path, how: str) -> None:
    """Damage SQLite can see is a JournalError naming the file, never a shorter batch."""
    async with Journal(path) as journal:
        await journal.start_batch([(f"k{i}", f"{i:064x}") for i in range(400)])
    damage(path, how)
    with pytest.raises(JournalError, match="damaged") as caught:
        async with Journal(path) as journal:
            await journal.start_batch([(f"k{i}", f"{i:064x}") for i in range(400)])
    assert caught.value.path == str(path)


async def test_a_missing_row_is_refused_not_read_as_fewer_items(path: Path) -> None:
    """A well-formed file that lost a row no longer matches its batch record: refused."""
    await write_batch(path)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM items WHERE key = '\"b\"'")
    conn.commit()
    conn.close()
    async with Journal(path) as journal:
        with pytest.raises(JournalError, match="holds 2 distinct items of the 3 recorded"):
            await journal.start_batch(ITEMS)
        with pytest.raises(JournalError, match="earlier failure"):
            await journal.entries()


async def test_a_changed_row_is_refused(path: Path) -> None:
    """A row whose fingerprint no longer matches the batch record is damage, not a new batch."""
    await write_batch(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE items SET fingerprint = 'x' WHERE key = '\"b\"'")
    conn.commit()
    conn.close()
    async with Journal(path) as journal:
        with pytest.raises(JournalError, match="do not match its batch record"):
            await journal.entries()


async def test_an_older_journal_copied_without_its_wal_is_refused(
    path: Path, tmp_path: Path
) -> None:
    """A WAL-mode file with no tables is what a -wal-only journal leaves: refused as incomplete."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")  # as older versions did, before the tables
    conn.execute("CREATE TABLE items (key TEXT)")
    alone = tmp_path / "alone.db"
    shutil.copyfile(path, alone)  # while the tables are only in the -wal
    conn.close()
    with pytest.raises(JournalError, match="incomplete"):
        await Journal(alone).open()


async def test_a_torn_copy_is_refused_or_holds_everything_it_held_before(tmp_path: Path) -> None:
    """Pages from two moments mixed (a copy made while a run wrote): never fewer or older items.

    Every mix of the pages of an earlier and a later journal file is either refused
    or holds every item at least where the earlier file had it.
    """
    items: list[tuple[BatchKey, str]] = [(f"k{i}", f"{i:064x}") for i in range(150)]
    live = tmp_path / "live.db"
    async with Journal(live) as journal:
        await journal.start_batch(items)
        for i in range(75):
            await journal.intent(f"k{i}")
            await journal.task_id(f"k{i}", f"t{i}")
            if i % 3 == 0:
                await journal.finished(f"k{i}", result(f"t{i}", "long prompt " * 300))
    earlier = live.read_bytes()
    async with Journal(live) as journal:
        before = await journal.entries()
        for i in range(150):
            if i >= 75:
                await journal.intent(f"k{i}")
                await journal.task_id(f"k{i}", f"t{i}")
            if i % 3 != 0 and i % 2 == 0:
                await journal.finished(f"k{i}", result(f"t{i}", "long prompt " * 300))
    later = live.read_bytes()
    pages = max(len(earlier), len(later)) // 4096
    rng = random.Random(3)
    mixes = [[k <= cut for k in range(pages)] for cut in range(pages)]
    mixes += [[k > cut for k in range(pages)] for cut in range(pages)]
    mixes += [[rng.random() < 0.5 for _ in range(pages)] for _ in range(40)]
    refused, reasons = 0, []
    for n, from_later in enumerate(mixes):
        copy = tmp_path / f"torn-{n}.db"
        copy.write_bytes(torn(earlier, later, from_later))
        try:
            async with Journal(copy) as journal:
                entries = await journal.start_batch(items)
        except JournalError as exc:
            reasons.append(exc.reason)
            refused += 1
            continue
        for key, then in before.items():
            now = entries[key]
            assert RANK[now.state] >= RANK[then.state], (n, key)
            assert then.task_id is None or now.task_id == then.task_id
    assert all(r.startswith(("the journal is damaged", "not a journal")) for r in reasons)
    assert 0 < refused < len(mixes)


async def test_a_reader_that_blocks_the_copy_into_the_file_fails_the_intent(path: Path) -> None:
    """If the write cannot reach the file itself (a reader holds it), the intent fails: no POST."""
    journal = Journal(path)
    journal.busy_timeout = 0
    async with journal:
        await journal.start_batch(ITEMS)
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM items").fetchone()
            with pytest.raises(JournalError, match="read transaction"):
                await journal.intent("a")
        finally:
            reader.close()


# -- 3. any text passes; any failure in the thread reaches its callers ----------------------


async def test_lone_surrogates_and_control_characters_are_recorded_as_they_came(
    path: Path,
) -> None:
    """Half an emoji or any control character, in keys, ids, statuses, errors and results."""
    odd = f"x{HALF_EMOJI}{CONTROL}\udfff"
    key = f"key {odd}"
    task_id = f"task {odd}"
    final = result(task_id, f"prompt {odd}", extra={odd: [odd]})
    progress = task_from_wire({"status": f"queue {odd}"}, task_id=task_id)
    items: list[tuple[BatchKey, str]] = [(key, "a" * 64), ("plain", "b" * 64)]
    async with Journal(path) as journal:
        await journal.start_batch(items)
        await journal.intent(key)
        await journal.task_id(key, task_id)
        journal.status(key, progress)
        got = await journal.entries()
        assert got[key].status == f"queue {odd}"
        await journal.wait_failed(key, RuntimeError(f"boom {odd}"))
        await journal.finished(key, final)
        await journal.intent("plain")
        await journal.submit_failed("plain", ValueError(odd))
    async with Journal(path) as journal:
        entries = await journal.start_batch(items)
    entry = entries[key]
    assert (entry.key, entry.task_id, entry.state) == (key, task_id, ItemState.FINISHED)
    assert entry.result == final
    assert entries["plain"].error is not None
    assert entries["plain"].error.message == odd


async def test_an_exception_whose_message_cannot_be_read_is_still_recorded(path: Path) -> None:
    """An error whose __str__ raises is recorded under its type's name, not a crash."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    async with Journal(path) as journal:
        await journal.start_batch(ITEMS)
        await journal.outcome_unknown("a", Unprintable())
        entries = await journal.entries()
    assert entries["a"].error is not None
    assert entries["a"].error.type_name == "Unprintable"


async def test_a_failure_in_the_thread_fails_every_later_write_at_once(path: Path) -> None:
    """The connection closed under the thread: that write and every later one raise, none hang."""
    journal = Journal(path)
    async with journal:
        await journal.start_batch(ITEMS)
        with pytest.raises(JournalError, match="a write failed"):
            await journal._call(lambda conn: conn.close())
        assert journal.failure is not None
        async with asyncio.timeout(30):  # a guard: each of these raises at once
            with pytest.raises(JournalError, match="earlier failure"):
                await journal.intent("a")
            with pytest.raises(JournalError, match="earlier failure"):
                journal.status("a", result("t"))
            journal.revert_intent("a")  # never raises: it runs while a cancellation unwinds
            with pytest.raises(JournalError, match="task 't-1' exists"):
                await journal.task_id("a", "t-1")


async def test_a_write_queued_without_waiting_that_fails_stops_the_next_one(path: Path) -> None:
    """A status note that fails (full disk) is not lost in silence: the next write raises."""
    async with Journal(path) as journal:
        await journal.start_batch(ITEMS)

        def fill_up(conn: sqlite3.Connection) -> None:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await journal._call(fill_up)
        journal.status("a", task_from_wire({"status": "x" * 50_000}, task_id="t"))
        with pytest.raises(JournalError, match="disk is full"):
            await journal.intent("b")


async def test_a_bug_in_the_writer_thread_fails_the_waiting_write_instead_of_hanging(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even an error in the thread's own bookkeeping answers every waiting caller."""
    journal = Journal(path)
    async with journal:
        await journal.start_batch(ITEMS)
        monkeypatch.setattr(journal, "_write", lambda conn, batch: [])  # too few answers
        async with asyncio.timeout(30):
            with pytest.raises(JournalError, match="thread failed"):
                await journal.intent("a")
            with pytest.raises(JournalError, match="earlier failure"):
                await journal.entries()


async def test_an_update_for_a_key_with_no_row_is_damage(path: Path) -> None:
    """Writing for a key the journal has no row for is refused rather than lost."""
    async with Journal(path) as journal:
        await journal.start_batch(ITEMS)
        with pytest.raises(JournalError, match="0 rows for key"):
            await journal.intent("not in the batch")


# -- 4. a task id that cannot be recorded travels in its error -------------------------------


async def test_a_task_id_that_cannot_be_recorded_is_carried_by_the_error(path: Path) -> None:
    """Disk full when the id arrives: the JournalError says the task exists and carries its id."""
    long_id = "t-" + "9" * 20_000
    async with Journal(path) as journal:
        await journal.start_batch(ITEMS)
        await journal.intent("a")

        def fill_up(conn: sqlite3.Connection) -> None:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await journal._call(fill_up)
        with pytest.raises(JournalError) as caught:
            await journal.task_id("a", long_id)
    error = caught.value
    assert error.task_id == long_id
    assert f"task {long_id!r} exists on the service (item 'a')" in str(error)
    assert "disk is full" in str(error)
    assert error.path == str(path)


async def test_a_task_id_stuck_in_the_wal_is_carried_by_the_error(path: Path) -> None:
    """When the id reaches the -wal but not the file (a reader blocks it), the error has it too."""
    journal = Journal(path)
    journal.busy_timeout = 0
    async with journal:
        await journal.start_batch(ITEMS)
        await journal.intent("a")
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM items").fetchone()
            with pytest.raises(JournalError) as caught:
                await journal.task_id("a", "t-7")
        finally:
            reader.close()
    assert caught.value.task_id == "t-7"
    assert "exists on the service" in str(caught.value)
    async with Journal(path) as journal:  # the -wal had it: it is not lost
        entries = await journal.entries()
    assert entries["a"].task_id == "t-7"
