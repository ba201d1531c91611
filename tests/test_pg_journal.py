"""One batch run by many workers on a shared PostgreSQL journal, against a real server."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import pytest
from spo_async import (
    AsyncSPOClient,
    ConfigurationError,
    JournalError,
    OptimizationRequest,
    Outcome,
    OutcomeUnknown,
    SubmitOutcomeUnknownError,
    Succeeded,
)
from spo_async._batch import prepare_items
from spo_async._journal import ItemState
from spo_async._journal_pg import Claimed, PgJournal, _LeaseLostError
from spo_async.testing import (
    Emulator,
    EmulatorConfig,
    Fault,
    FaultKind,
    ManualClock,
    ThreadedEmulator,
)

from .cli_helpers import run_cli
from .conftest import (
    ClientFactory,
    VirtualTime,
    exception_texts,
    make_request,
    on_virtual_time,
)
from .servers import pg_database, postgres_uri
from .test_cli_batch import read_output, service, write_rows

psycopg = pytest.importorskip("psycopg", reason="needs spo-async[postgres]")

__all__ = ["pg_database", "postgres_uri"]  # fixtures, imported for pytest


@pytest.fixture
def emulator_config(clock: ManualClock) -> EmulatorConfig:
    """Tasks that move on only as the clients wait (virtual time)."""
    return EmulatorConfig(round_seconds=0.01, queue_seconds=0.0, seed=1, clock=clock)


@pytest.fixture
def make_client(make_client: ClientFactory, virtual_time: VirtualTime) -> ClientFactory:
    return on_virtual_time(make_client, virtual_time)


def req(name: str) -> OptimizationRequest:
    return make_request(name, max_rounds=2)


async def collect(client: AsyncSPOClient, requests: Any, journal: str, **options: Any) -> list[Any]:
    return [o async for o in client.optimize_many(requests, journal=journal, **options)]


def lapse_every_lease(uri: str) -> None:
    """What the database's clock does after a dead worker's lease: every lease is over."""
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("UPDATE spo_items SET lease_until = now() - interval '1 second'")


async def test_two_workers_share_one_batch_and_settle_every_item_once(
    make_client: ClientFactory, emu: Emulator, pg_database: str
) -> None:
    """Two workers on one journal: each item settled by exactly one of them, one task each."""
    requests = {f"k{i}": req(f"p {i}") for i in range(40)}
    first, second = await asyncio.gather(
        collect(make_client(), requests, pg_database, concurrency=4),
        collect(make_client(), requests, pg_database, concurrency=4),
    )
    keys = [o.key for o in first + second]
    assert sorted(keys) == sorted(requests)  # every key once, across both workers
    assert all(isinstance(o, Succeeded) for o in first + second)
    assert emu.tasks_created == 40
    # A third worker arriving later sends nothing: it hands over what the journal holds.
    emu.reset_records()
    later = await collect(make_client(), requests, pg_database)
    assert sorted(o.key for o in later) == sorted(requests)
    assert all(o.from_journal for o in later)
    assert emu.submits == []


async def test_a_dead_workers_items_are_taken_over_and_never_paid_twice(
    make_client: ClientFactory, emu: Emulator, pg_database: str
) -> None:
    """After a worker dies: its task is polled, its in-flight submit is unknown, the rest run."""
    requests = {name: req(name) for name in ["polling", "in-flight", "claimed", "untouched"]}
    client = make_client()
    dead = PgJournal(pg_database)
    await dead.open()
    await dead.start_batch([(item.key, item.fingerprint) for item in prepare_items(requests)])
    for _ in range(3):
        assert isinstance(await dead.claim(), Claimed)
    await dead.intent("polling")
    running_id = await client.submit(requests["polling"])
    await dead.task_id("polling", running_id)
    await dead.intent("in-flight")
    await client.submit(requests["in-flight"])  # the POST went out; the worker died before the id
    dead._held.clear()  # a SIGKILL gives nothing back
    await dead.close()
    lapse_every_lease(pg_database)
    emu.reset_records()

    outcomes: dict[Any, Outcome] = {
        o.key: o for o in await collect(make_client(), requests, pg_database)
    }

    assert isinstance(outcomes["polling"], Succeeded)
    assert outcomes["polling"].task_id == running_id
    unknown = outcomes["in-flight"]
    assert isinstance(unknown, OutcomeUnknown)
    assert isinstance(unknown.error, SubmitOutcomeUnknownError)
    assert isinstance(outcomes["claimed"], Succeeded)
    assert isinstance(outcomes["untouched"], Succeeded)
    assert sorted(s.body["prompt"] for s in emu.submits) == ["claimed", "untouched"]
    async with PgJournal(pg_database) as journal:
        await journal.start_batch([(i.key, i.fingerprint) for i in prepare_items(requests)])
        entries = await journal.entries()
    assert entries["in-flight"].state is ItemState.UNKNOWN
    assert collections.Counter(e.submits for e in entries.values()) == {1: 4}


async def test_a_worker_that_lost_its_lease_can_no_longer_write(pg_database: str) -> None:
    """Once another worker has taken an item over, the old owner's intent and writes fail."""
    items = [("a", "f" * 64)]
    async with PgJournal(pg_database) as slow, PgJournal(pg_database) as other:
        await slow.start_batch(items)
        await other.start_batch(items)
        assert isinstance(await slow.claim(), Claimed)
        assert await other.claim() is not None  # not claimable: a wait, while the lease lives
        lapse_every_lease(pg_database)
        taken = await other.claim()
        assert isinstance(taken, Claimed)
        assert taken.entry.key == "a"
        with pytest.raises(_LeaseLostError):
            await slow.intent("a")
        await other.intent("a")
        with pytest.raises(_LeaseLostError):
            await slow.task_id("a", "t-1")


async def test_an_intent_needs_a_live_lease_on_the_database_clock(pg_database: str) -> None:
    """A worker whose lease lapsed, even unclaimed by anyone, may not start a submit."""
    async with PgJournal(pg_database) as journal:
        await journal.start_batch([("a", "f" * 64)])
        assert isinstance(await journal.claim(), Claimed)
        lapse_every_lease(pg_database)
        with pytest.raises(_LeaseLostError):
            await journal.intent("a")


async def test_a_named_batch_with_other_requests_is_refused_before_any_request(
    make_client: ClientFactory, emu: Emulator, pg_database: str
) -> None:
    """batch= names a batch; different requests under it are a JournalError (different_batch)."""
    uri = pg_database + "?batch=nightly"
    await collect(make_client(), {"a": req("a"), "b": req("b")}, uri)
    emu.reset_records()
    with pytest.raises(JournalError) as caught:
        await collect(make_client(), {"a": req("a"), "b": req("changed")}, uri)
    assert caught.value.different_batch
    assert caught.value.changed == ["b"]
    assert emu.submits == []


async def test_the_database_password_never_shows(emu: Emulator) -> None:
    """A URI's password stays out of the journal's repr and of the error when it cannot connect."""
    journal = PgJournal("postgresql://spo:hunter2@127.0.0.1:1/db?lease=5&connect_timeout=1")
    assert "hunter2" not in repr(journal)
    with pytest.raises(JournalError) as caught:
        await journal.open()
    assert all("hunter2" not in text for text in exception_texts(caught.value))


def test_resubmit_unknown_is_refused_with_a_shared_journal(make_client: ClientFactory) -> None:
    """resubmit_unknown=True would defeat the takeover rule, so it is refused up front."""
    with pytest.raises(ConfigurationError, match="resubmit_unknown"):
        make_client().optimize_many(
            [req("a")], journal="postgresql://127.0.0.1/db", resubmit_unknown=True
        )


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture
def spo_emulator_config() -> EmulatorConfig:
    return EmulatorConfig(round_seconds=0.02, seed=5)


def test_the_cli_runs_and_reruns_a_batch_on_a_shared_journal(
    spo_emulator: ThreadedEmulator, pg_database: str, tmp_path: Path
) -> None:
    """``--journal postgresql://``: every row runs once; a rerun writes them all, sends nothing."""
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_rows(source, 4, max_rounds=2)
    flags, env = service(spo_emulator)
    uri = pg_database.replace("spo@", "spo:hunter2@")  # trust auth: any password is accepted
    args = ("batch", str(source), "-o", str(out), "--journal", uri, "--json", *flags)

    first = run_cli(*args, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    assert set(read_output(out)) == set(ids)
    assert spo_emulator.tasks_created == 4

    second = run_cli(*args, env=env, timeout=60)
    assert second.returncode == 0, second.stderr
    lines = read_output(out)
    assert set(lines) == set(ids)
    assert all(line["from_journal"] for line in lines.values())
    assert spo_emulator.tasks_created == 4  # nothing submitted twice
    assert "hunter2" not in first.stdout + first.stderr + second.stdout + second.stderr


# -- what each ending writes, and a journal that cannot be used ------------------------------


async def test_a_refused_submit_is_parked_and_a_new_run_retries_it(
    make_client: ClientFactory, emu: Emulator, pg_database: str
) -> None:
    """A submit the service refused made no task: it is parked for this run, retried by the next."""
    emu.inject(Fault(FaultKind.STATUS, endpoint="submit", status=400, times=1))
    requests = {"refused": req("refused")}
    (first,) = await collect(make_client(), requests, pg_database)
    assert not first.ok
    async with PgJournal(pg_database) as journal:
        await journal.start_batch([(i.key, i.fingerprint) for i in prepare_items(requests)])
        entries = await journal.entries()
    assert entries["refused"].state is ItemState.NEW
    assert entries["refused"].error is not None
    (again,) = await collect(make_client(), requests, pg_database)
    assert isinstance(again, Succeeded)
    assert emu.tasks_created == 1


async def test_a_wait_that_gave_up_keeps_its_task_and_a_new_run_polls_it(
    make_client: ClientFactory, emu: Emulator, pg_database: str
) -> None:
    """The GETs fail until the wait gives up: the task id stays; the next run only polls it."""
    emu.inject(Fault(FaultKind.STATUS, endpoint="task", status=500))
    requests = {"slow": req("slow")}
    (first,) = await collect(make_client(), requests, pg_database)
    assert not first.ok
    assert first.task_id is not None
    emu.clear_faults()
    emu.reset_records()
    (again,) = await collect(make_client(), requests, pg_database)
    assert isinstance(again, Succeeded)
    assert again.task_id == first.task_id
    assert emu.submits == []  # polled, never submitted again


async def test_a_submit_whose_answer_was_lost_is_unknown_and_never_sent_again(
    make_client: ClientFactory, emu: Emulator, pg_database: str
) -> None:
    """The connection drops after the POST: the item is unknown, in this run and the next."""
    emu.inject(Fault(FaultKind.DROP_AFTER, endpoint="submit", times=1))
    requests = {"lost": req("lost")}
    (outcome,) = await collect(make_client(), requests, pg_database)
    assert isinstance(outcome, OutcomeUnknown)
    emu.reset_records()
    (again,) = await collect(make_client(), requests, pg_database)
    assert isinstance(again, OutcomeUnknown)
    assert again.from_journal
    assert emu.submits == []


@pytest.mark.parametrize("lease", ["soon", "0", "-1"])
def test_a_bad_lease_is_refused(lease: str) -> None:
    """``lease=`` must be a positive number of seconds."""
    with pytest.raises(ConfigurationError, match="lease="):
        PgJournal(f"postgresql://spo@127.0.0.1/db?lease={lease}")


async def test_tables_of_a_newer_version_are_refused(pg_database: str) -> None:
    """A database whose tables a newer spo-async made is not written by this one."""
    async with PgJournal(pg_database):
        pass
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("UPDATE spo_async_meta SET value = '99' WHERE name = 'schema_version'")
    with pytest.raises(JournalError, match="newer"):
        await PgJournal(pg_database).open()


async def test_a_row_that_cannot_be_read_is_refused(pg_database: str) -> None:
    """A row changed by hand into something no journal writes is an error, not a guess."""
    async with PgJournal(pg_database) as journal:
        await journal.start_batch([("a", "f" * 64)])
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("UPDATE spo_items SET key = '[1, 2]'")
        with pytest.raises(JournalError, match="cannot be read"):
            await journal.entries()


async def test_a_closed_journal_refuses_writes(pg_database: str) -> None:
    """After close, a write is a JournalError, not a crash on a closed pool."""
    journal = PgJournal(pg_database)
    await journal.open()
    await journal.start_batch([("a", "f" * 64)])
    assert isinstance(await journal.claim(), Claimed)
    await journal.close()  # gives the held item back
    with pytest.raises(JournalError, match="closed"):
        await journal.intent("a")
    async with PgJournal(pg_database) as other:
        await other.start_batch([("a", "f" * 64)])
        assert isinstance(await other.claim(), Claimed)  # given back: claimable at once
