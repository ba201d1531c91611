"""A batch journal in PostgreSQL, shared by any number of workers on any machines.

``journal="postgresql://user@host/db"`` selects it. It keeps the SQLite
journal's protocol (see :mod:`spo_async._journal`): the intent is committed
before the submit's POST leaves, the task id the moment it arrives. What it
adds is sharing: the items of one batch are rows that workers *claim* one at a
time (``SELECT ... FOR UPDATE SKIP LOCKED``) under a lease, and give back when
the item is settled.

Leases. A claim sets ``owner`` and ``lease_until = now() + lease``; a worker
renews the leases of the items it holds every third of a lease. Every time
comparison uses the database's ``now()``, never a worker's clock, so a worker
with a wrong clock cannot steal or keep an item. Every write names its owner
(``WHERE owner = me``): a worker that lost an item can no longer change it.

Paying once. The intent (``new`` -> ``submitting``) is the only write that leads
to money being spent, and it also requires an unexpired lease and the state
``new``. An item whose owner's lease lapsed is taken over by the next claim:
a ``submitted`` item keeps its task id and the new owner only polls it; a
``submitting`` item (its owner died between the intent and the task id) turns
``unknown`` and is reported as outcome unknown, never submitted again. So at
most one POST is ever made per item, whichever worker dies and whatever the
clocks say. If the owner was not dead but only late (its renewals failed for a
lease) and its task id arrives after the takeover, the id is recorded all the
same and that worker polls the task: the journal keeps the real outcome, while
the worker that took the item over has already reported it as unknown.

Items that end with an error (the submit was refused, the wait gave up) are
*parked*: no worker of this run picks them up again. A worker that starts the
batch when no other worker holds a live lease on it (a new run) unparks them,
as a second run of an SQLite journal retries them.

Requires ``spo-async[postgres]`` (psycopg 3 and psycopg-pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

from ._convert import task_to_wire
from ._errors import ConfigurationError
from ._events import BatchKey
from ._journal import ItemState, JournalEntry, JournalError, batch_fingerprint
from ._journal_file import batch_mismatch, entry_from_row, error_text
from ._models import TaskResult
from ._store_uri import display_uri

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

__all__ = ["Claimed", "_LeaseLostError", "PgJournal", "is_postgres_uri", "require_psycopg"]

log = logging.getLogger("spo_async")

#: The table layout this version writes, and the newest it can read.
PG_SCHEMA_VERSION: Final = 1
#: Seconds a claim lasts without renewal, unless the URI says ``lease=``.
DEFAULT_LEASE: Final = 30.0
#: The longest an idle worker waits before looking for lapsed leases again.
MAX_IDLE_WAIT: Final = 2.0
_SCHEMA_LOCK: Final = 0x53504F4A  # the advisory lock that serializes creating the tables
_OPEN: Final = "('new', 'submitting', 'submitted')"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS spo_async_meta (name text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS spo_batches (
    name        text PRIMARY KEY,        -- the URI's batch=, or the batch fingerprint
    fingerprint text NOT NULL,
    items       integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS spo_items (
    batch       text NOT NULL REFERENCES spo_batches (name) ON DELETE CASCADE,
    key         text NOT NULL,           -- the batch key, as JSON
    idx         integer NOT NULL,
    fingerprint text NOT NULL,
    state       text NOT NULL CHECK (state IN {_OPEN[:-1]}, 'finished', 'unknown')),
    parked      boolean NOT NULL DEFAULT false,
    submits     integer NOT NULL DEFAULT 0,
    task_id     text,
    status      text,
    rounds      integer,
    result      text,
    error       text,
    owner       text,
    lease_until timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch, key)
);
CREATE INDEX IF NOT EXISTS spo_items_open ON spo_items (batch, idx)
    WHERE state IN {_OPEN} AND NOT parked
"""
_COLUMNS: Final = "key, idx, fingerprint, state, submits, task_id, status, result, error"


def is_postgres_uri(journal: object) -> bool:
    """Whether a ``journal=`` value names a PostgreSQL database rather than a file."""
    return isinstance(journal, str) and journal.startswith(("postgresql://", "postgres://"))


def require_psycopg() -> None:
    """Refuse with ConfigurationError when the ``postgres`` extra is not installed."""
    try:
        import psycopg  # noqa: F401, PLC0415
        import psycopg_pool  # noqa: F401, PLC0415
    except ImportError:
        raise ConfigurationError(
            "a postgresql:// journal or limiter needs psycopg 3 and psycopg-pool: "
            "pip install 'spo-async[postgres]'"
        ) from None


def split_uri(uri: str) -> tuple[str, dict[str, str], str]:
    """The connection URI without spo-async's own parameters, those parameters, a safe label.

    ``batch=`` names the batch and ``lease=`` sets the lease in seconds; libpq
    would refuse them, so they are taken out. The label has no password.
    """
    parts = urlsplit(uri)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        (
            ours.__setitem__(name, value)
            if name in {"batch", "lease"}
            else theirs.append((name, value))
        )
    conninfo = urlunsplit(parts._replace(query=urlencode(theirs)))
    return conninfo, ours, display_uri(uri)


async def _close_pool(pool: AsyncConnectionPool[Any]) -> None:
    """Close a pool even if the caller is cancelled meanwhile (then re-raise the cancel).

    The close runs as its own task: a cancellation stops the waiting, not the close,
    and the first cancellation still waits for it (psycopg-pool bounds it with its
    own timeout) so that whoever cancelled finds the connections closed.
    """
    closing = asyncio.ensure_future(pool.close())
    _closing_pools.add(closing)
    closing.add_done_callback(_closing_pools.discard)
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        await asyncio.wait({closing})
        raise


#: Pool closes under way (a strong reference, so that none is collected half-way).
_closing_pools: set[asyncio.Future[None]] = set()


class _LeaseLostError(JournalError):
    """The worker no longer holds the item: its lease lapsed and another worker took it."""


@attrs.frozen
class Claimed:
    """An item this worker now holds (or, state ``unknown``, has just settled as unknown)."""

    entry: JournalEntry


def _entry(row: tuple[Any, ...], label: str) -> JournalEntry:
    """One item's row, read as the file journal reads its own (the same columns)."""
    try:
        return entry_from_row(row)
    except (ValueError, TypeError, KeyError) as exc:
        raise JournalError(
            f"the row for key {row[0]!r} cannot be read ({exc}); the batch is refused",
            path=label,
        ) from None


_LAPSED = error_text(
    JournalError("its worker stopped after sending the submit and before its answer arrived")
)


class PgJournal:
    """A batch journal in PostgreSQL; ``async with PgJournal(uri):``, then the batch's moments.

    One instance is one worker: it has its own owner id and renews its own leases.
    """

    def __init__(self, uri: str, *, pool_size: int = 4) -> None:
        self._conninfo, params, self.label = split_uri(uri)
        self._name = params.get("batch") or None
        try:
            self.lease = float(params.get("lease", DEFAULT_LEASE))
        except ValueError:
            raise ConfigurationError(
                f"lease= must be a number of seconds in {self.label}"
            ) from None
        if not self.lease > 0:
            raise ConfigurationError(f"lease= must be > 0 in {self.label}")
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.batch: str | None = None
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]] | None = None
        self._held: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<PgJournal {self.label!r} batch={self.batch!r} owner={self.owner!r}>"

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect, and create the tables if the database has none (one worker at a time)."""
        require_psycopg()
        import psycopg  # noqa: PLC0415
        from psycopg_pool import AsyncConnectionPool  # noqa: PLC0415

        # One plain connection first: a server that refuses fails now, where the pool
        # would keep trying until its timeout.
        failure: JournalError | None
        try:
            probe = await psycopg.AsyncConnection.connect(self._conninfo, connect_timeout=10)
        except (psycopg.Error, OSError) as exc:
            failure = JournalError(f"cannot connect: {type(exc).__name__}", path=self.label)
        else:
            await probe.close()
            failure = None
        if failure is not None:
            raise failure  # out of the except: the driver's error may quote the password

        pool: AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]] = AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=self._pool_size,
            kwargs={"autocommit": True},
            open=False,
        )
        self._pool = pool
        try:
            await self._open_pool(pool)
            await self._create_tables()
        except BaseException:
            # No server, tables this version cannot use, a cancelled open: the pool is
            # closed here, since a caller whose open() failed has nothing to close.
            await self.close()
            raise
        self._renewer = asyncio.create_task(self._renew_forever(), name="spo-async lease renewer")

    async def _open_pool(self, pool: AsyncConnectionPool[Any]) -> None:
        failure: JournalError | None = None
        try:
            await pool.open(wait=True, timeout=10.0)
        except Exception as exc:
            failure = JournalError(f"cannot connect: {type(exc).__name__}", path=self.label)
        if failure is not None:
            raise failure  # out of the except, as above

    async def _create_tables(self) -> None:
        """Create the tables if missing (one worker at a time); refuse those of a newer version."""
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            await conn.execute(_SCHEMA)
            await conn.execute(
                "INSERT INTO spo_async_meta VALUES ('schema_version', %s) ON CONFLICT DO NOTHING",
                (str(PG_SCHEMA_VERSION),),
            )
            cur = await conn.execute("SELECT value FROM spo_async_meta WHERE name='schema_version'")
            row = await cur.fetchone()
        version = row[0] if row is not None else None
        if not (isinstance(version, str) and version.isdigit()):
            raise JournalError(
                f"the tables have no readable schema version ({version!r}); "
                "they were not made by spo-async",
                path=self.label,
            )
        if int(version) > PG_SCHEMA_VERSION:
            raise JournalError(
                f"the tables were made by a newer spo-async (schema {version}): upgrade",
                path=self.label,
            )

    async def close(self) -> None:
        """Finish queued writes, give back every held item, stop renewing, disconnect.

        The pool is closed whatever happens, a cancellation included: a cancelled
        close skips the polite part (queued writes, giving items back, whose leases
        then lapse) but still closes the pool's connections and its tasks.
        """
        try:
            if self._renewer is not None:
                self._renewer.cancel()
                await asyncio.gather(self._renewer, return_exceptions=True)
                self._renewer = None
            if self._background:
                await asyncio.gather(*self._background, return_exceptions=True)
            if self._pool is not None and self._held and self.batch is not None:
                # Items still held go back now rather than when the lease lapses.
                with contextlib.suppress(Exception):
                    async with self._pool.connection() as conn:
                        await conn.execute(
                            "UPDATE spo_items SET owner = NULL, lease_until = NULL "
                            "WHERE batch = %s AND owner = %s AND key = ANY(%s)",
                            (self.batch, self.owner, list(self._held)),
                        )
        finally:
            self._held.clear()
            pool, self._pool = self._pool, None
            if pool is not None:
                await _close_pool(pool)

    @contextlib.asynccontextmanager
    async def _connection(self, *, transaction: bool = False) -> Any:
        if self._pool is None:
            raise JournalError("the journal is closed", path=self.label)
        import psycopg  # noqa: PLC0415

        try:
            async with self._pool.connection() as conn:
                if transaction:
                    async with conn.transaction():
                        yield conn
                else:
                    yield conn
        except (psycopg.Error, UnicodeError) as exc:
            # UnicodeError: text the database cannot store (a lone surrogate from the service).
            # Only the error's class and SQLSTATE: the driver's text may quote the conninfo.
            code = getattr(exc, "sqlstate", None)
            failure = JournalError(
                f"a database call failed ({type(exc).__name__}"
                + (f", SQLSTATE {code})" if code else ")"),
                path=self.label,
            )
        else:
            return
        # Raised outside the except, and its context cleared on the way: this generator
        # runs inside the caller's ``async with`` exit, where the driver's error is still
        # the exception being handled, and would become the JournalError's __context__.
        try:
            raise failure
        except JournalError:
            failure.__context__ = None
            raise

    def _transaction(self) -> Any:
        return self._connection(transaction=True)

    async def _renew_forever(self) -> None:
        """Renew the held items' leases every third of a lease (real time: the database's)."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.renew()
            except JournalError as exc:
                log.warning("could not renew leases: %s", exc)

    async def renew(self) -> set[str]:
        """Extend the lease of every item held now; the (stored) keys of those found lost.

        An item is lost when another worker took it over after its lease lapsed;
        a lapsed lease nobody took is simply extended (the database's ``now()``).
        """
        if not self._held or self.batch is None:
            return set()
        sent = set(self._held)
        async with self._connection() as conn:
            cur = await conn.execute(
                "UPDATE spo_items SET lease_until = now() + %s * interval '1 second' "
                "WHERE batch = %s AND owner = %s AND key = ANY(%s) RETURNING key",
                (self.lease, self.batch, self.owner, list(sent)),
            )
            kept = {row[0] for row in await cur.fetchall()}
        # Items given back while the renewal ran are not lost; only those still held.
        lost = (sent & self._held) - kept
        for key in lost:
            log.warning("lost the lease on item %s: another worker has it", key)
        return lost

    # -- the batch ---------------------------------------------------------------------

    async def start_batch(self, items: Sequence[tuple[BatchKey, str]]) -> None:
        """Record the batch (the first worker does), or check it is the one recorded.

        Without ``batch=`` in the URI the batch is named by its fingerprint, so
        workers given the same input join the same batch. A named batch whose
        recorded input differs is refused with a JournalError (``different_batch``).
        """
        fingerprint = batch_fingerprint(items)
        name = self._name or fingerprint
        rows = [(name, json.dumps(k), i, fp) for i, (k, fp) in enumerate(items)]
        async with self._transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO spo_batches (name, fingerprint, items) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO NOTHING RETURNING name",
                (name, fingerprint, len(items)),
            )
            if await cur.fetchone() is not None:
                async with conn.cursor() as c:
                    await c.executemany(
                        "INSERT INTO spo_items (batch, key, idx, fingerprint, state) "
                        "VALUES (%s, %s, %s, %s, 'new')",
                        rows,
                    )
            else:
                cur = await conn.execute(
                    "SELECT fingerprint FROM spo_batches WHERE name = %s", (name,)
                )
                recorded = await cur.fetchone()
                if recorded is not None and recorded[0] != fingerprint:
                    cur = await conn.execute(
                        "SELECT key, fingerprint FROM spo_items WHERE batch = %s", (name,)
                    )
                    known = {json.loads(k): fp for k, fp in await cur.fetchall()}
                    given = dict(items)
                    raise batch_mismatch(
                        path=self.label,
                        changed=[k for k, fp in items if k in known and known[k] != fp],
                        missing=[k for k in known if k not in given],
                        added=[k for k, _ in items if k not in known],
                    )
                # A new run (nobody holds a live lease): retry the items parked by errors.
                await conn.execute(
                    "UPDATE spo_items SET parked = false WHERE batch = %s AND parked AND NOT "
                    "EXISTS (SELECT 1 FROM spo_items WHERE batch = %s AND lease_until > now())",
                    (name, name),
                )
        self.batch = name

    async def entries(self) -> Mapping[BatchKey, JournalEntry]:
        """Every item of the batch, as recorded now, by key."""
        async with self._connection() as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM spo_items WHERE batch = %s ORDER BY idx",  # noqa: S608
                (self.batch,),
            )
            return {e.key: e for e in (_entry(row, self.label) for row in await cur.fetchall())}

    async def claim(self) -> Claimed | float | None:
        """Take the next item: a :class:`Claimed`, else seconds to wait, else ``None`` (done).

        A ``submitted`` item of a dead worker comes back with its task id (poll
        it); a ``submitting`` one comes back settled as ``unknown``. An item this
        worker still holds is never taken over by it, even with a lapsed lease (its
        renewals failed): one of this worker's tasks is still on it.
        """
        async with self._connection() as conn:
            cur = await conn.execute(
                f"""
                WITH pick AS (
                    SELECT key FROM spo_items
                    WHERE batch = %(b)s AND state IN {_OPEN} AND NOT parked
                      AND (lease_until IS NULL OR lease_until < now())
                      AND (owner IS DISTINCT FROM %(me)s OR NOT key = ANY(%(held)s))
                    ORDER BY idx LIMIT 1 FOR UPDATE SKIP LOCKED)
                UPDATE spo_items i SET
                    owner = CASE WHEN i.state = 'submitting' THEN NULL ELSE %(me)s END,
                    lease_until = CASE WHEN i.state = 'submitting' THEN NULL
                                  ELSE now() + %(lease)s * interval '1 second' END,
                    error = CASE WHEN i.state = 'submitting' THEN %(lapsed)s ELSE i.error END,
                    state = CASE WHEN i.state = 'submitting' THEN 'unknown' ELSE i.state END,
                    updated_at = now()
                FROM pick WHERE i.batch = %(b)s AND i.key = pick.key
                RETURNING {", ".join("i." + c for c in _COLUMNS.split(", "))}
                """,  # noqa: S608 - fixed SQL
                {
                    "b": self.batch,
                    "me": self.owner,
                    "held": list(self._held),
                    "lease": self.lease,
                    "lapsed": _LAPSED,
                },
            )
            row = await cur.fetchone()
            if row is not None:
                entry = _entry(row, self.label)
                if entry.state is not ItemState.UNKNOWN:
                    self._held.add(row[0])
                return Claimed(entry)
            cur = await conn.execute(
                f"SELECT count(*), extract(epoch FROM min(lease_until) - now()) FROM spo_items "  # noqa: S608
                f"WHERE batch = %s AND state IN {_OPEN} AND NOT parked",
                (self.batch,),
            )
            counts = await cur.fetchone()
        if counts is None or counts[0] == 0:
            return None
        lapse = float(counts[1]) if counts[1] is not None else 0.0
        return min(max(lapse, 0.05), MAX_IDLE_WAIT)

    # -- writes, each checked against the lease ------------------------------------------

    async def _write(self, key: BatchKey, sql: str, *params: Any, intent: bool = False) -> None:
        """Change the held row of ``key``; raise _LeaseLostError if this worker lost it.

        The intent also needs an unexpired lease (on the database's clock) and a new item.
        """
        stored = json.dumps(key)
        lease_check = " AND lease_until > now() AND state = 'new'" if intent else ""
        async with self._connection() as conn:
            cur = await conn.execute(
                f"UPDATE spo_items SET {sql}, updated_at = now() "  # noqa: S608 - fixed SQL
                f"WHERE batch = %s AND key = %s AND owner = %s{lease_check}",
                (*params, self.batch, stored, self.owner),
            )
            if cur.rowcount != 1:
                self._held.discard(stored)
                raise _LeaseLostError(
                    f"item {key!r} is no longer held by this worker", path=self.label
                )

    async def _release(self, key: BatchKey, sql: str, *params: Any) -> None:
        await self._write(key, f"{sql}, owner = NULL, lease_until = NULL", *params)
        self._held.discard(json.dumps(key))

    def _queue(self, write: Any) -> None:
        task = asyncio.create_task(write)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def intent(self, key: BatchKey) -> None:
        """Commit that ``key`` is about to be submitted; only a live lease on a new item may."""
        await self._write(
            key, "state = 'submitting', submits = submits + 1, error = NULL", intent=True
        )

    def revert_intent(self, key: BatchKey) -> None:
        """The submit never started after all (queued, not awaited)."""
        self._queue(self._write(key, "state = 'new'"))

    async def task_id(self, key: BatchKey, task_id: str) -> None:
        """Commit the task id the submit returned; this worker then polls the task.

        The task exists and is paid for, so its id is recorded even when this worker
        lost the item meanwhile: its lease lapsed between the intent and the answer,
        and another worker's claim settled the item as ``unknown`` (and reported it
        so). The item then becomes ``submitted`` with that id, held again by this
        worker, which polls the task and reports its outcome: the journal ends with
        the real outcome, and no worker can submit the item again (only a ``new``
        item takes an intent). Raises _LeaseLostError only if the row holds
        something no lapsed submit leads to (it has a task id, or is not
        ``submitting``/``unknown``); the id is then lost but for the caller's log.
        """
        try:
            await self._write(key, "state = 'submitted', task_id = %s, status = NULL", task_id)
        except _LeaseLostError:
            if not await self._take_back(key, task_id):
                raise
            log.warning(
                "task %s (item %r) was created after this worker's lease lapsed, and another "
                "worker may have reported the item as outcome unknown; the task id is recorded "
                "and this worker polls it",
                task_id,
                key,
                extra={"task_id": task_id},
            )

    async def _take_back(self, key: BatchKey, task_id: str) -> bool:
        """Record ``task_id`` on an item whose in-flight submit was taken over; hold it again."""
        stored = json.dumps(key)
        async with self._connection() as conn:
            cur = await conn.execute(
                "UPDATE spo_items SET state = 'submitted', task_id = %s, status = NULL, "
                "error = NULL, owner = %s, lease_until = now() + %s * interval '1 second', "
                "updated_at = now() "
                "WHERE batch = %s AND key = %s AND task_id IS NULL "
                "AND state IN ('submitting', 'unknown') "
                "AND (lease_until IS NULL OR lease_until < now())",
                (task_id, self.owner, self.lease, self.batch, stored),
            )
            if cur.rowcount != 1:
                return False
        self._held.add(stored)
        return True

    async def submit_failed(self, key: BatchKey, error: BaseException) -> None:
        """No task was made: the item is parked, for a later run to submit again."""
        await self._release(key, "state = 'new', parked = true, error = %s", error_text(error))

    async def outcome_unknown(self, key: BatchKey, error: BaseException) -> None:
        """The submit may have made a task whose id was lost."""
        await self._release(key, "state = 'unknown', error = %s", error_text(error))

    def status(self, key: BatchKey, result: TaskResult) -> None:
        """Note a new status or round count (queued, not awaited)."""
        self._queue(
            self._write(
                key, "status = %s, rounds = %s", result.raw_status, len(result.completed_rounds)
            )
        )

    async def wait_failed(self, key: BatchKey, error: BaseException) -> None:
        """The wait gave up; the task id stays and the item is parked for a later run."""
        await self._release(key, "parked = true, error = %s", error_text(error))

    async def finished(self, key: BatchKey, result: TaskResult) -> None:
        """Record the task's final snapshot and give the item back."""
        body = json.dumps(task_to_wire(result))  # ASCII: PostgreSQL text has no lone surrogates
        await self._release(
            key,
            "state = 'finished', task_id = %s, status = %s, rounds = %s, result = %s, error = NULL",
            result.task_id,
            result.raw_status,
            len(result.completed_rounds),
            body,
        )
