"""A small shared state for many processes: named texts, each changed under a lock.

What processes on many machines share (a rate budget, who polls which task) is a
handful of named records, each read, decided on and written back as one step under
the store's lock: :meth:`SharedStore.exchange`. Two engines users already run:

- **PostgreSQL**: one row per name in ``spo_async_shared``, locked with
  ``SELECT ... FOR UPDATE`` for the step. One connection per process, not a pool:
  a process's exchanges go one at a time (an :class:`asyncio.Lock`), and the row
  lock orders the fleet's.
- **Redis / Valkey**: one key per name (``spo-async:<name>``), changed with
  ``WATCH`` / ``MULTI``: a writer that lost the race reads again and decides again,
  so every decision is made on the record as it is.

Times are the store's clock (``clock_timestamp()``, ``TIME``), so processes whose
clocks disagree agree on the record's times, unless the caller gives ``now`` (tests,
on a manual clock). Every record expires ``ttl`` seconds after its last change.

A store that cannot be reached raises :class:`~spo_async.TransportError`
(``request_sent=False``) naming the store without its password; the driver's own
error is not even its context, since it may quote the connection string. A URI whose
options the driver cannot use (``?socket_timeout=abc``, an unknown option) raises
:class:`~spo_async.ConfigurationError` instead (:func:`check_uri`): when the limiter
is built, and again before each connection, never as the driver's ``ValueError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from ._errors import ConfigurationError, TransportError
from ._store_uri import StoreKind, display_uri, driver_uri

if TYPE_CHECKING:
    import psycopg
    import redis.asyncio

__all__ = ["SharedStore", "Step", "check_uri", "open_store"]

T = TypeVar("T")

#: One decision on a record: its text (``None``: no record yet) and the time in;
#: the text to store and what to return out.
Step = Callable[[str | bytes | None, float], tuple[str, T]]

#: Seconds to wait for a store connection before the exchange fails.
_CONNECT_TIMEOUT: Final = 10
#: The advisory lock that serialises creating the table, and the statements.
_SCHEMA_LOCK: Final = 0x53504F42
_CREATE: Final = """CREATE TABLE IF NOT EXISTS spo_async_shared (
    name text PRIMARY KEY, state text NOT NULL, expires_at timestamptz NOT NULL)"""
_SELECT: Final = """SELECT state, extract(epoch FROM clock_timestamp())::float8
    FROM spo_async_shared WHERE name = %s FOR UPDATE"""
_INSERT: Final = """INSERT INTO spo_async_shared (name, state, expires_at)
    VALUES (%s, '', now() + interval '1 hour') ON CONFLICT DO NOTHING"""
_UPDATE: Final = """UPDATE spo_async_shared
    SET state = %s, expires_at = clock_timestamp() + make_interval(secs => %s) WHERE name = %s"""
_EXPIRE: Final = "DELETE FROM spo_async_shared WHERE expires_at < clock_timestamp()"
#: One exchange in this many also deletes the expired records (PostgreSQL).
_SWEEP_ONE_IN: Final = 1000

#: What every Redis client of a store is given besides the URI.
_REDIS_OPTIONS: Final[dict[str, Any]] = {
    "socket_connect_timeout": _CONNECT_TIMEOUT,
    "client_name": "spo-async-shared",
}

_EXTRAS: Final[dict[StoreKind, str]] = {
    "postgresql": "pip install 'spo-async[postgres]'",
    "redis": "pip install 'spo-async[redis]'",
}


class SharedStore(Protocol):
    """Named records, each changed by one step at a time across every process."""

    async def exchange(self, name: str, step: Step[T], now: float | None, *, ttl: float) -> T:
        """Run ``step(stored_text, now)`` under ``name``'s lock; store the text it returns.

        ``now`` is the store's clock unless the caller gives one; the record expires
        ``ttl`` seconds after this change.
        """
        ...

    async def aclose(self) -> None:
        """Close the connection (the next exchange opens it again)."""
        ...


def _unreachable(uri: str, exc: BaseException) -> TransportError:
    return TransportError(
        f"the shared store at {display_uri(uri)} cannot be used ({type(exc).__name__}); "
        "the request was not sent",
        request_sent=False,
    )


class PostgresStore:
    """Records as rows of ``spo_async_shared``: see the module."""

    def __init__(self, uri: str) -> None:
        import psycopg  # noqa: PLC0415 - an optional extra, imported by open_store first

        self._psycopg = psycopg
        self._uri = uri
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<PostgresStore {display_uri(self._uri)}>"

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        _check_postgres(self._uri)
        conn = await self._psycopg.AsyncConnection.connect(
            driver_uri(self._uri),
            autocommit=True,
            connect_timeout=_CONNECT_TIMEOUT,
            application_name="spo-async shared",
        )
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                await conn.execute(_CREATE)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def exchange(self, name: str, step: Step[T], now: float | None, *, ttl: float) -> T:
        async with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await self._connect()
                conn = self._conn
                async with conn.transaction():
                    row = await (await conn.execute(_SELECT, (name,))).fetchone()
                    if row is None:
                        await conn.execute(_INSERT, (name,))
                        row = await (await conn.execute(_SELECT, (name,))).fetchone()
                        assert row is not None  # noqa: S101 - inserted or there already
                    text, store_now = row
                    stored, result = step(text or None, store_now if now is None else now)
                    await conn.execute(_UPDATE, (stored, ttl, name))
                if random.randrange(_SWEEP_ONE_IN) == 0:
                    await conn.execute(_EXPIRE)
            except (self._psycopg.Error, OSError) as exc:
                failure = _unreachable(self._uri, exc)
            except BaseException:
                # Cancelled mid-exchange: the connection may be mid-query; start afresh.
                await asyncio.shield(self._drop())
                raise
            else:
                return result
            await self._drop()
            raise failure  # out here: see the module

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def aclose(self) -> None:
        async with self._lock:
            await self._drop()


class RedisStore:
    """Records as Redis keys: see the module."""

    def __init__(self, uri: str) -> None:
        import redis.asyncio  # noqa: PLC0415 - an optional extra, imported by open_store first
        import redis.exceptions  # noqa: PLC0415

        self._redis = redis
        self._uri = uri
        self._client: redis.asyncio.Redis | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<RedisStore {display_uri(self._uri)}>"

    async def exchange(self, name: str, step: Step[T], now: float | None, *, ttl: float) -> T:
        key = f"spo-async:{name}"
        errors = self._redis.exceptions
        async with self._lock:
            try:
                if self._client is None:
                    _check_redis(self._uri)
                    self._client = self._redis.asyncio.Redis.from_url(
                        driver_uri(self._uri), **_REDIS_OPTIONS
                    )
                async with self._client.pipeline(transaction=True) as pipe:
                    while True:
                        try:
                            await pipe.watch(key)
                            text = await pipe.get(key)
                            seconds, micros = await pipe.time()
                            store_now = seconds + micros / 1e6
                            stored, result = step(text, store_now if now is None else now)
                            pipe.multi()  # type: ignore[no-untyped-call]
                            pipe.set(key, stored, px=max(1, round(ttl * 1000)))
                            await pipe.execute()
                        except errors.WatchError:
                            continue
                        return result
            except (errors.RedisError, OSError) as exc:
                failure = _unreachable(self._uri, exc)
            except BaseException:
                await asyncio.shield(self._drop())  # as PostgresStore.exchange does
                raise
            await self._drop()
            raise failure  # out here: see the module

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def aclose(self) -> None:
        async with self._lock:
            await self._drop()


def check_uri(uri: str, kind: StoreKind) -> None:
    """Raise :class:`ConfigurationError` if the driver could not use ``uri``'s options.

    Checked without a connection: libpq's parser (unknown options, unencoded
    characters) or redis-py's (option values, unknown options). The message names
    the URI without its password and never quotes the driver, whose messages may
    quote the connection string, password included.
    """
    if kind == "postgresql":
        _check_postgres(uri)
    else:
        _check_redis(uri)


def _check_postgres(uri: str) -> None:
    import psycopg.conninfo  # noqa: PLC0415 - an optional extra, imported by open_store first

    try:
        psycopg.conninfo.conninfo_to_dict(driver_uri(uri))
    except psycopg.Error:
        pass  # raised below, so that libpq's message (it quotes the URI) is not the context
    else:
        return
    raise ConfigurationError(
        f"the shared store URI {display_uri(uri)} is not one libpq can read: an unknown "
        "option, or a character that must be percent-encoded (in the password too)"
    )


def _check_redis(uri: str) -> None:
    import redis.asyncio  # noqa: PLC0415 - an optional extra, imported by open_store first
    import redis.exceptions  # noqa: PLC0415

    try:
        pool = redis.asyncio.ConnectionPool.from_url(driver_uri(uri), **_REDIS_OPTIONS)
        # Unknown options reach the connection's constructor only here (no I/O yet).
        pool.make_connection()  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, redis.exceptions.RedisError) as exc:
        said = str(exc)
    else:
        return
    # Out here, as for libpq: only the names of the options redis-py named are repeated.
    query = uri.partition("?")[2].partition("#")[0]
    names = urllib.parse.parse_qs(query, keep_blank_values=True)
    bad = [name for name in names if f"'{name}'" in said] or ["(see redis-py's from_url)"]
    raise ConfigurationError(
        f"the shared store URI {display_uri(uri)} has an option redis cannot use: {', '.join(bad)}"
    )


def open_store(uri: str, kind: StoreKind) -> SharedStore:
    """A store for ``uri`` (no connection yet), or a ConfigurationError naming the extra."""
    try:
        if kind == "postgresql":
            import psycopg  # noqa: F401, PLC0415

            return PostgresStore(uri)
        import redis.asyncio  # noqa: F401, PLC0415

        return RedisStore(uri)
    except ImportError:
        raise ConfigurationError(
            f"a shared store in {kind} needs an optional extra: {_EXTRAS[kind]}"
        ) from None
