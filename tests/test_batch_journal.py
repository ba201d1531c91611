"""Resuming batches from a journal: nothing lost, nothing paid twice, clear errors."""

from __future__ import annotations

import collections
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from spo_async import (
    AsyncSPOClient,
    Event,
    JournalError,
    OptimizationRequest,
    Outcome,
    OutcomeUnknown,
    SubmitOutcomeUnknownError,
    Succeeded,
    TaskSubmitted,
)
from spo_async._batch import prepare_items
from spo_async._journal import ItemState, Journal
from spo_async._journal_file import prepare_file
from spo_async.testing import Emulator, EmulatorConfig, Fault, FaultKind

from .conftest import make_request


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(round_seconds=0.01, queue_seconds=0.0, seed=1)


def req(name: str) -> OptimizationRequest:
    return make_request(name, max_rounds=2)


def by_key(outcomes: list[Outcome]) -> dict[Any, Outcome]:
    return {o.key: o for o in outcomes}


async def _journal_in_every_state(
    client: AsyncSPOClient, path: Path, requests: dict[str, OptimizationRequest]
) -> dict[str, str]:
    """Write a journal as a crashed run would have left it; return the task ids made."""
    items = prepare_items(requests)
    async with Journal(path) as journal:
        await journal.start_batch([(item.key, item.fingerprint) for item in items])
        # finished: submitted, polled to the end, result recorded
        await journal.intent("finished")
        done_id = await client.submit(requests["finished"])
        await journal.task_id("finished", done_id)
        await journal.finished("finished", await client.wait_for_result(done_id))
        # with a task id: the crash came while polling
        await journal.intent("polling")
        running_id = await client.submit(requests["polling"])
        await journal.task_id("polling", running_id)
        # intent only: the crash came while the POST was in flight (it did reach the service)
        await journal.intent("in-flight")
        lost_id = await client.submit(requests["in-flight"])
        # nothing written for "untouched"
    return {"finished": done_id, "polling": running_id, "in-flight": lost_id}


async def test_resume_treats_every_state_as_it_must(
    client: AsyncSPOClient, emu: Emulator, tmp_path: Path
) -> None:
    """Finished: no request; task id: polled; intent only: unknown; nothing written: sent."""
    path = tmp_path / "resume.journal"
    names = ["finished", "polling", "in-flight", "untouched"]
    requests = {name: req(name) for name in names}
    ids = await _journal_in_every_state(client, path, requests)
    emu.reset_records()
    events: list[Event] = []

    outcomes = by_key(await client.optimize_all(requests, journal=path, on_event=events.append))

    finished, polling = outcomes["finished"], outcomes["polling"]
    assert isinstance(finished, Succeeded)
    assert finished.from_journal
    assert finished.task_id == ids["finished"]
    assert emu.task_gets[ids["finished"]] == 0
    assert isinstance(polling, Succeeded)
    assert not polling.from_journal
    assert polling.task_id == ids["polling"]
    assert emu.task_gets[ids["polling"]] >= 1
    unknown = outcomes["in-flight"]
    assert isinstance(unknown, OutcomeUnknown)
    assert isinstance(unknown.error, SubmitOutcomeUnknownError)
    assert isinstance(outcomes["untouched"], Succeeded)
    # Only the untouched item was submitted.
    assert [s.body["prompt"] for s in emu.submits] == ["untouched"]
    assert emu.tasks_created == 1
    submitted = {e.key for e in events if isinstance(e, TaskSubmitted)}
    assert submitted == {"untouched"}
    assert {e.key for e in events if isinstance(e, OutcomeUnknown)} == {"in-flight"}

    # A third run sends nothing at all: everything is settled in the journal.
    emu.reset_records()
    again = by_key(await client.optimize_all(requests, journal=path))
    assert emu.submits == []
    assert sum(emu.task_gets.values()) == 0
    assert all(o.from_journal for o in again.values())
    assert isinstance(again["in-flight"], OutcomeUnknown)


async def test_unknown_items_are_resubmitted_only_when_asked(
    client: AsyncSPOClient, emu: Emulator, tmp_path: Path
) -> None:
    """resubmit_unknown=True sends an intent-only item again, knowingly."""
    path = tmp_path / "resubmit.journal"
    requests = {name: req(name) for name in ["finished", "polling", "in-flight", "untouched"]}
    await _journal_in_every_state(client, path, requests)
    emu.reset_records()

    outcomes = by_key(await client.optimize_all(requests, journal=path, resubmit_unknown=True))

    assert all(isinstance(o, Succeeded) for o in outcomes.values())
    assert sorted(s.body["prompt"] for s in emu.submits) == ["in-flight", "untouched"]
    async with Journal(path) as journal:
        entries = await journal.entries()
    assert entries["in-flight"].submits == 2
    assert {e.state for e in entries.values()} == {ItemState.FINISHED}


async def test_a_journal_from_another_batch_is_refused_before_any_request(
    client: AsyncSPOClient, emu: Emulator, tmp_path: Path
) -> None:
    """Changing a request under the same key is refused as a different batch, nothing sent."""
    path = tmp_path / "batch.journal"
    await client.optimize_all({"a": req("a"), "b": req("b")}, journal=path)
    emu.reset_records()
    with pytest.raises(JournalError) as caught:
        await client.optimize_all({"a": req("a"), "b": req("changed")}, journal=path)
    assert caught.value.changed == ["b"]
    assert emu.submits == []
    assert sum(emu.task_gets.values()) == 0


async def test_a_foreign_file_is_refused_before_any_request(
    client: AsyncSPOClient, emu: Emulator, tmp_path: Path
) -> None:
    """Pointing the journal at some other file is a JournalError, and the file is untouched."""
    path = tmp_path / "notes.txt"
    path.write_text("my notes, not a journal\n" * 50)
    with pytest.raises(JournalError):
        await client.optimize_all([req("a")], journal=path)
    assert emu.submits == []
    assert path.read_text().startswith("my notes")


async def test_a_full_disk_mid_run_ends_the_batch_and_a_rerun_pays_nothing_twice(
    client: AsyncSPOClient, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the journal's disk fills mid-run the batch stops with JournalError; nothing is lost."""
    path = tmp_path / "full.journal"
    requests = {f"k{i}": req(f"p {i}") for i in range(30)}
    async with Journal(path) as journal:
        await journal.start_batch(
            [(item.key, item.fingerprint) for item in prepare_items(requests)]
        )

    def tiny_disk(conn: sqlite3.Connection, where: Path) -> None:
        prepare_file(conn, where)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 2}")

    monkeypatch.setattr("spo_async._journal.prepare_file", tiny_disk)
    with pytest.raises(JournalError, match="disk is full"):
        await client.optimize_all(requests, journal=path, concurrency=5)
    monkeypatch.undo()
    assert emu.tasks_created > 0  # the disk filled up mid-run, not before the first submit

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    outcomes = await client.optimize_all(requests, journal=path, concurrency=5)
    prompts = collections.Counter(t.request["prompt"] for t in emu.tasks.values())
    assert max(prompts.values()) == 1  # no request was paid for twice
    unknown = [o for o in outcomes if isinstance(o, OutcomeUnknown)]
    assert all(isinstance(o, Succeeded) for o in outcomes if o not in unknown)
    assert len(outcomes) == 30


async def test_events_of_a_resumed_batch_end_every_story(
    client: AsyncSPOClient, tmp_path: Path
) -> None:
    """Items read back from the journal still end with their final event."""
    path = tmp_path / "events.journal"
    requests = [req(f"p {i}") for i in range(5)]
    await client.optimize_all(requests, journal=path)
    events: list[Event] = []
    await client.optimize_all(requests, journal=path, on_event=events.append)
    assert sum(isinstance(e, Succeeded) for e in events) == 5
    assert not any(isinstance(e, TaskSubmitted) for e in events)


@pytest.mark.parametrize("how", ["same path", "symlink"])
async def test_a_journal_held_by_another_run_is_refused_before_any_request(
    client: AsyncSPOClient, emu: Emulator, tmp_path: Path, how: str
) -> None:
    """A second batch on a journal in use (by any name) ends with JournalError, nothing sent."""
    path = tmp_path / "held.journal"
    other = path
    if how == "symlink":
        other = tmp_path / "alias.journal"
        other.symlink_to(path)
    async with Journal(path):
        with pytest.raises(JournalError, match="another run") as caught:
            await client.optimize_all({"a": req("a")}, journal=other)
    assert str(other) in str(caught.value)
    assert emu.submits == []


async def test_half_an_emoji_from_the_service_neither_hangs_nor_stops_a_journaled_batch(
    client: AsyncSPOClient, emu: Emulator, tmp_path: Path
) -> None:
    """A lone surrogate in a key, a status and a result is journaled; the batch ends and resumes."""
    path = tmp_path / "emoji.journal"
    # The service's own bytes: JSON's escape for half an emoji (valid JSON, no valid UTF-8).
    status = '{"status": "queue \\ud83d", "round_data_list": []}'
    final = (
        '{"status": "success", "best_prompt": "better \\ud83d", "best_round": 1, '
        '"round_data_list": [{"round": 1, "prompt": "better \\ud83d", "success": true, '
        '"sample": []}]}'
    )
    emu.inject(
        Fault(FaultKind.STATUS, endpoint="task", status=200, body=status, times=2),
        Fault(FaultKind.STATUS, endpoint="task", status=200, body=final, times=1),
    )
    requests = {"half \ud83d": req("one"), "plain": req("two")}
    first = by_key(await client.optimize_all(requests, journal=path))
    assert all(isinstance(o, Succeeded) for o in first.values())
    prompts = [o.result.best_prompt for o in first.values() if isinstance(o, Succeeded)]
    assert "better \ufffd" in prompts  # half an emoji from the service reads as U+FFFD

    emu.reset_records()
    again = by_key(await client.optimize_all(requests, journal=path))
    assert emu.submits == []
    assert all(o.from_journal for o in again.values())
    assert {k: o.result for k, o in again.items() if isinstance(o, Succeeded)} == {
        k: o.result for k, o in first.items() if isinstance(o, Succeeded)
    }
