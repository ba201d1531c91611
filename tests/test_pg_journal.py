"""One batch run by many workers on a shared PostgreSQL journal, against a real server."""

from __future__ import annotations

import asyncio
import collections
import sys
from pathlib import Path
from typing import Any

import attrs
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
    TaskSubmitted,
)
from spo_async import _journal_pg as journal_pg
from spo_async._batch import prepare_items
from spo_async._journal import ItemState
from spo_async._journal_pg import Claimed, PgJournal, _LeaseLostError
from spo_async.testing import (
    Emulator,
    EmulatorConfig,
    Fault,
    FaultKind,
    ManualClock,
    TaskOutcome,
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


# -- a task id that arrives after its item was taken over -------------------------------------


async def test_a_task_id_that_arrives_after_a_takeover_is_recorded_and_polled(
    pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A late owner's task id is kept: the item turns submitted, held by that owner again."""
    items = [("k", "f" * 64)]
    async with PgJournal(pg_database) as late, PgJournal(pg_database) as taker:
        await late.start_batch(items)
        await taker.start_batch(items)
        assert isinstance(await late.claim(), Claimed)
        await late.intent("k")
        # The late worker's renewals fail for a lease (a failover, a stalled loop)...
        lapse_every_lease(pg_database)
        taken = await taker.claim()
        assert isinstance(taken, Claimed)
        assert taken.entry.state is ItemState.UNKNOWN  # ...and the taker reports it unknown.

        await late.task_id("k", "task-123")  # then the POST's answer arrives: a paid task

        entry = (await taker.entries())["k"]
        assert entry.state is ItemState.SUBMITTED
        assert entry.task_id == "task-123"
        assert entry.error is None
        assert entry.submits == 1
        assert "the task id is recorded and this worker polls it" in caplog.text
        # The late worker holds it again: nobody else claims it, and it can finish it.
        assert not isinstance(await taker.claim(), Claimed)
        with pytest.raises(_LeaseLostError):
            await taker.intent("k")  # nobody can submit it again either
        assert await late.renew() == set()


async def test_a_task_id_the_row_cannot_explain_is_refused(pg_database: str) -> None:
    """If the row already has another task id, the late one is not written over it."""
    async with PgJournal(pg_database) as journal:
        await journal.start_batch([("k", "f" * 64)])
        assert isinstance(await journal.claim(), Claimed)
        await journal.intent("k")
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("UPDATE spo_items SET owner = NULL, task_id = 'other', state = 'unknown'")
        with pytest.raises(_LeaseLostError):
            await journal.task_id("k", "task-123")
        assert (await journal.entries())["k"].task_id == "other"


async def test_a_submit_taken_over_in_flight_is_polled_by_its_worker(
    make_client: ClientFactory, emu: Emulator, pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The batch whose item was taken over during its POST records the task and reports it."""
    requests = {"taken": req("taken"), "kept": req("kept")}

    def take_over_during_the_post(body: Any) -> None:
        # What another worker's claim does to a lapsed 'submitting' item: it turns unknown.
        if body["prompt"] == "taken":
            with psycopg.connect(pg_database, autocommit=True) as conn:
                conn.execute(
                    "UPDATE spo_items SET state = 'unknown', owner = NULL, lease_until = NULL "
                    "WHERE key = '\"taken\"'"
                )

    emu.config = attrs.evolve(emu.config, outcome_for=take_over_during_the_post)
    outcomes = {o.key: o for o in await collect(make_client(), requests, pg_database)}

    assert isinstance(outcomes["taken"], Succeeded)
    assert isinstance(outcomes["kept"], Succeeded)
    assert emu.tasks_created == 2
    assert "this worker polls it" in caplog.text
    async with PgJournal(pg_database) as journal:
        await journal.start_batch([(i.key, i.fingerprint) for i in prepare_items(requests)])
        entries = await journal.entries()
    assert entries["taken"].state is ItemState.FINISHED
    assert entries["taken"].task_id == outcomes["taken"].task_id
    assert entries["taken"].submits == 1


async def test_a_worker_never_takes_over_an_item_it_still_holds(pg_database: str) -> None:
    """Its renewals failed, but one of its own tasks is on the item: its claims leave it alone."""
    async with PgJournal(pg_database) as journal:
        await journal.start_batch([("a", "f" * 64), ("b", "e" * 64)])
        assert isinstance(await journal.claim(), Claimed)
        lapse_every_lease(pg_database)
        other = await journal.claim()
        assert isinstance(other, Claimed)
        assert other.entry.key == "b"
        assert not isinstance(await journal.claim(), Claimed)


async def test_a_worker_whose_item_was_finished_by_another_leaves_it_to_that_one(
    make_client: ClientFactory, emu: Emulator, pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Taken over and finished elsewhere while this worker polled: it reports nothing for it."""
    requests = {"taken": req("taken"), "kept": req("kept")}

    def finished_elsewhere(event: object) -> None:
        # Its lease lapsed while it polled; another worker took the task over and finished it.
        if isinstance(event, TaskSubmitted) and event.key == "taken":
            with psycopg.connect(pg_database, autocommit=True) as conn:
                conn.execute(
                    "UPDATE spo_items SET state = 'finished', owner = NULL, lease_until = NULL "
                    "WHERE key = '\"taken\"'"
                )

    outcomes = await collect(make_client(), requests, pg_database, on_event=finished_elsewhere)
    assert [o.key for o in outcomes] == ["kept"]
    assert "another worker reports it" in caplog.text
    assert emu.tasks_created == 2


async def test_an_intent_given_back_makes_the_item_new_again(pg_database: str) -> None:
    """A submit that never left takes its intent back: the item can be submitted later."""
    async with PgJournal(pg_database) as journal:
        await journal.start_batch([("a", "f" * 64)])
        assert isinstance(await journal.claim(), Claimed)
        await journal.intent("a")
        journal.revert_intent("a")  # queued: a cancelled submit cannot wait for it
    async with PgJournal(pg_database) as journal:
        await journal.start_batch([("a", "f" * 64)])
        entry = (await journal.entries())["a"]
    assert entry.state is ItemState.NEW
    assert entry.submits == 1


# -- closing, whatever happens -------------------------------------------------------------------


def drop_database(server_uri: str, uri: str) -> None:
    """Drop the test's database: PostgreSQL refuses while any connection to it is left open."""
    name = uri.rpartition("/")[2]
    with psycopg.connect(server_uri, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name}")


#: The statement with which a closing journal gives its held items back.
GIVING_BACK = "%SET owner = NULL, lease_until = NULL%"


async def until_a_query_waits_for_a_lock(uri: str, query: str = GIVING_BACK) -> None:
    """Return once a statement like ``query`` is blocked on a lock (looked up, not slept)."""
    async with await psycopg.AsyncConnection.connect(uri, autocommit=True) as conn:
        for _ in range(10_000):
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE %s",
                (query,),
            )
            row = await cur.fetchone()
            if row is not None and row[0] > 0:
                return
    raise AssertionError("no query ever waited for the lock")


async def lock_every_item(uri: str) -> Any:
    """Another session that holds every item's row; roll it back to let go."""
    blocker = await psycopg.AsyncConnection.connect(uri)
    await blocker.execute("SELECT * FROM spo_items FOR UPDATE")
    return blocker


async def test_a_cancelled_close_still_closes_the_pool(postgres_uri: str, pg_database: str) -> None:
    """close() cancelled while giving items back: the connections are closed all the same."""
    journal = PgJournal(pg_database)
    await journal.open()
    await journal.start_batch([("a", "f" * 64)])
    assert isinstance(await journal.claim(), Claimed)
    pool = journal._pool
    assert pool is not None
    blocker = await lock_every_item(pg_database)
    closing = asyncio.create_task(journal.close())
    await until_a_query_waits_for_a_lock(pg_database)  # giving the item back waits
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert pool.closed
    await journal.close()  # a second close has nothing left to do
    await blocker.rollback()
    await blocker.close()
    drop_database(postgres_uri, pg_database)


async def test_a_pool_close_whose_caller_is_cancelled_still_finishes(pg_database: str) -> None:
    """Cancelling the wait for a pool's close does not stop the close: it ends first."""
    journal = PgJournal(pg_database)
    await journal.open()
    pool = journal._pool
    assert pool is not None
    journal._pool = None  # closed here by hand, the way close() does
    await journal.close()
    closing = asyncio.create_task(journal_pg._close_pool(pool))
    await asyncio.sleep(0)  # it has started closing
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert pool.closed


async def test_a_cancelled_aclose_still_closes_the_journal_and_a_second_one_returns(
    make_client: ClientFactory, emu: Emulator, postgres_uri: str, pg_database: str
) -> None:
    """Batch.aclose() cancelled while its journal closes: pool closed, the next aclose returns."""
    emu.script_next(TaskOutcome(queue_seconds=1e9))  # a task that stays queued: held
    batch = make_client().optimize_many({"slow": req("slow")}, journal=pg_database)
    await batch.__aenter__()
    async with await psycopg.AsyncConnection.connect(pg_database, autocommit=True) as conn:
        status = None
        while status is None:  # until the worker polls the task and has written "queue"
            cur = await conn.execute("SELECT status FROM spo_items")
            (status,) = await cur.fetchone() or (None,)
    journal = batch._journal
    assert isinstance(journal, PgJournal)
    pool = journal._pool
    assert pool is not None
    blocker = await lock_every_item(pg_database)
    closing = asyncio.create_task(batch.aclose())
    await until_a_query_waits_for_a_lock(pg_database)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await asyncio.wait_for(batch.aclose(), timeout=30)  # returns, does not hang
    assert pool.closed
    await blocker.rollback()
    await blocker.close()
    drop_database(postgres_uri, pg_database)


async def test_an_open_that_fails_on_the_tables_closes_its_connections(
    postgres_uri: str, pg_database: str
) -> None:
    """Tables of a newer version, unreadable or of another program: JournalError, nothing open."""
    async with PgJournal(pg_database):
        pass
    for value, problem in [("99", "newer spo-async"), ("one", "no readable schema version")]:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("UPDATE spo_async_meta SET value = %s", (value,))
        journal = PgJournal(pg_database)
        with pytest.raises(JournalError, match=problem):
            await journal.open()
        assert journal._pool is None
    drop_database(postgres_uri, pg_database)


async def test_tables_of_another_program_are_refused_and_nothing_stays_open(
    postgres_uri: str, pg_database: str
) -> None:
    """An spo_items table with other columns: a JournalError naming the SQLSTATE, pool closed."""
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE spo_items (id integer)")
    with pytest.raises(JournalError, match=r"UndefinedColumn, SQLSTATE 42703"):
        await PgJournal(pg_database).open()
    drop_database(postgres_uri, pg_database)


async def test_a_database_error_carries_no_driver_text_and_no_context(pg_database: str) -> None:
    """A failing call says which error it was, never the driver's text: that may quote secrets."""
    # Trust auth accepts any password; this one is a word the server's message quotes.
    uri = pg_database.replace("spo@", "spo:spo_items@")
    async with PgJournal(uri) as journal:
        await journal.start_batch([("a", "f" * 64)])
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("DROP TABLE spo_items")
        with pytest.raises(JournalError, match="UndefinedTable") as caught:
            await journal.claim()
    error = caught.value
    assert error.__context__ is None
    assert error.__cause__ is None
    assert not any("spo_items" in text for text in exception_texts(error))


# -- ported: leases over time, workers leaving, a failing database ---------------------------


async def test_renewing_extends_held_leases_and_names_the_ones_lost(
    pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewal keeps a lapsed-but-untaken item, and reports one another worker took."""
    items = [("kept", "f" * 64), ("taken", "e" * 64)]
    async with PgJournal(pg_database) as slow, PgJournal(pg_database) as other:
        await slow.start_batch(items)
        await other.start_batch(items)
        for _ in items:
            assert isinstance(await slow.claim(), Claimed)
        lapse_every_lease(pg_database)
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("UPDATE spo_items SET owner = 'someone else' WHERE key = '\"taken\"'")
        assert await slow.renew() == {'"taken"'}
        assert "lost the lease" in caplog.text
        with psycopg.connect(pg_database, autocommit=True) as conn:
            row = conn.execute(
                "SELECT lease_until > now() FROM spo_items WHERE key = '\"kept\"'"
            ).fetchone()
        assert row == (True,)
        assert await other.renew() == set()  # holds nothing


async def test_a_worker_waits_for_a_live_lease_then_takes_the_item_over(
    make_client: ClientFactory, emu: Emulator, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An item held by a live worker is left alone; once that lease lapses, it is taken over."""
    monkeypatch.setattr(journal_pg, "MAX_IDLE_WAIT", 0.05)  # the watcher looks often
    requests = {"held": req("held"), "free": req("free")}
    holder = PgJournal(pg_database)
    await holder.open()
    await holder.start_batch([(i.key, i.fingerprint) for i in prepare_items(requests)])
    assert isinstance(await holder.claim(), Claimed)  # "held", the first by index
    holder._held.clear()  # it dies holding it
    await holder.close()

    def on_event(event: object) -> None:
        # Once "free" is settled, a worker watches the live lease on "held"; now it lapses.
        if isinstance(event, Succeeded) and event.key == "free":
            lapse_every_lease(pg_database)

    outcomes = await collect(make_client(), requests, pg_database, concurrency=2, on_event=on_event)
    assert sorted(o.key for o in outcomes) == ["free", "held"]
    assert all(isinstance(o, Succeeded) for o in outcomes)
    assert emu.tasks_created == 2


async def test_leaving_early_gives_held_items_back_at_once(
    make_client: ClientFactory, pg_database: str
) -> None:
    """A batch left early releases its items: another worker claims them without waiting."""
    requests = {f"k{i}": req(f"p {i}") for i in range(6)}
    async with make_client().optimize_many(requests, journal=pg_database, concurrency=3) as batch:
        async for _ in batch:
            break
    async with PgJournal(pg_database) as journal:
        await journal.start_batch([(i.key, i.fingerprint) for i in prepare_items(requests)])
        assert isinstance(await journal.claim(), Claimed)


async def test_a_failing_database_call_is_a_journal_error(pg_database: str) -> None:
    """A statement the database refuses, or a closed journal, is a JournalError."""
    journal = PgJournal(pg_database)
    await journal.open()
    await journal.start_batch([("a", "f" * 64)])
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("DROP TABLE spo_items")
    with pytest.raises(JournalError, match="a database call failed"):
        await journal.claim()
    await journal.close()
    with pytest.raises(JournalError, match="closed"):
        await journal.claim()


async def test_a_database_lost_mid_batch_ends_the_batch_with_a_journal_error(
    make_client: ClientFactory, emu: Emulator, pg_database: str
) -> None:
    """When the journal cannot be written any more, the batch stops and raises JournalError."""
    requests = {f"k{i}": req(f"p {i}") for i in range(3)}

    def drop_the_table(event: object) -> None:
        if isinstance(event, Succeeded):
            with psycopg.connect(pg_database, autocommit=True) as conn:
                conn.execute("DROP TABLE IF EXISTS spo_items")

    with pytest.raises(JournalError, match="a database call failed"):
        await collect(make_client(), requests, pg_database, concurrency=1, on_event=drop_the_table)
    assert emu.tasks_created == 1


async def test_an_unreachable_server_is_a_journal_error_without_the_password(
    make_client: ClientFactory, emu: Emulator
) -> None:
    """No server: the batch raises JournalError before any request, the password in no text."""
    nobody = "postgresql://spo:hunter2@127.0.0.1:1/db?connect_timeout=1"
    with pytest.raises(JournalError, match="cannot connect") as caught:
        await collect(make_client(), [req("a")], nobody)
    assert not any("hunter2" in text for text in exception_texts(caught.value))
    assert emu.submits == []


def test_without_psycopg_the_error_names_the_extra(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain install refuses a postgresql:// journal and says which extra to install."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'spo-async\[postgres\]'"):
        make_client().optimize_many([req("a")], journal="postgresql://127.0.0.1/db")
