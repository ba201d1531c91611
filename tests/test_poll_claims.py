"""One poller per task across replicas that share a store, against real servers.

Each "replica" is a client with its own ``RequestLimiter.shared`` on the same store
and key, as the processes of a web service would be. Time is one manual clock for
all of them (their ``clock=``), so nothing waits for real.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable

import pytest
from spo_async import AsyncSPOClient, RequestLimiter, RoundCompleted, TaskResult
from spo_async._poll_claims import PollClaims
from spo_async._shared_store import open_store
from spo_async._store_uri import store_kind
from spo_async.polling import FixedSchedule
from spo_async.testing import Emulator, EmulatorConfig, ManualClock

from .conftest import VirtualTime, make_request
from .servers import pg_database, postgres_uri, redis_uri, store

psycopg = pytest.importorskip("psycopg", reason="needs spo-async[postgres]")
redis = pytest.importorskip("redis", reason="needs spo-async[redis]")
pytest.importorskip("redis.asyncio")

__all__ = [
    "pg_database",
    "postgres_uri",
    "redis_uri",
    "store",
]  # fixtures, imported for pytest


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_000.0)


@pytest.fixture
def emulator_config(clock: ManualClock) -> EmulatorConfig:
    """Three rounds of a second each, moving on only as the replicas wait."""
    return EmulatorConfig(round_seconds=1.0, queue_seconds=0.5, seed=3, clock=clock)


def replica(emu: Emulator, vt: VirtualTime, store: str | None, budget: str) -> AsyncSPOClient:
    """One process of the fleet: its own client, and its own handle on the shared store."""
    if store is None:  # no shared store: a limiter of its own, as replicas have by default
        limiter = RequestLimiter(start_rate=1000)
    else:
        limiter = RequestLimiter.shared(store, name=budget, clock=vt.clock, start_rate=1000)
    return AsyncSPOClient(
        api_key=emu.api_key,
        base_url=emu.base_url,
        limiter=limiter,
        schedule=FixedSchedule(interval=0.2),
        clock=vt.clock,
        sleep=vt.sleep,
    )


async def fleet_waits(
    emu: Emulator, clock: ManualClock, store: str | None
) -> tuple[str, list[TaskResult], list[list[int]]]:
    """Four replicas wait on one task at once; its id, their results and the rounds each saw."""
    vt = VirtualTime(clock)
    budget = f"test-{uuid.uuid4().hex}"
    fleet = [replica(emu, vt, store, budget) for _ in range(4)]
    rounds: list[list[int]] = [[] for _ in fleet]

    def recorder(seen: list[int]) -> Callable[[object], None]:
        def on_event(event: object) -> None:
            if isinstance(event, RoundCompleted):
                seen.append(event.number)

        return on_event

    try:
        task_id = await fleet[0].submit(make_request(max_rounds=3))
        results = await asyncio.gather(
            *(
                client.wait_for_result(task_id, on_event=recorder(seen))
                for client, seen in zip(fleet, rounds, strict=True)
            )
        )
    finally:
        for client in fleet:
            await client.aclose()
    return task_id, results, rounds


async def test_replicas_waiting_on_one_task_poll_it_about_once(
    store: str, emu: Emulator, clock: ManualClock
) -> None:
    """Four replicas on a shared store GET a task a fraction as often as four on their own."""
    alone, _, _ = await fleet_waits(emu, clock, None)
    shared, results, rounds = await fleet_waits(emu, clock, store)
    assert all(result.succeeded for result in results)
    assert len({result.best_prompt for result in results}) == 1
    assert all(seen == [1, 2, 3] for seen in rounds)  # each replica saw every round
    # Same schedule, same clock: on their own the four look four times; sharing, about once.
    # (21 GETs alone, 4 shared, in runs here.)
    assert emu.task_gets[shared] * 3 <= emu.task_gets[alone]


async def claims_on(
    uri: str, budget: str, clock: ManualClock
) -> tuple[PollClaims, Callable[[], Awaitable[None]]]:
    """Claims over the store at ``uri``, as a client would hold them, and their closer."""
    store = open_store(uri, store_kind(uri, what="uri"))
    vt = VirtualTime(clock)
    claims = PollClaims(store, budget, store_clock=clock, clock=clock, sleep=vt.sleep)
    return claims, store.aclose


def counting(result: TaskResult) -> tuple[list[int], Callable[[], Awaitable[TaskResult]]]:
    """A fetch that returns ``result`` and counts its calls (the GETs it stands for)."""
    calls: list[int] = []

    async def fetch() -> TaskResult:
        calls.append(1)
        return result

    return calls, fetch


RUNNING = TaskResult.from_dict(
    {"task_id": "spo-1", "status": "processing", "current_round": 1, "total_rounds": 3}
)


async def test_a_snapshot_published_while_waiting_is_used_instead_of_a_get(
    store: str, clock: ManualClock
) -> None:
    """The second process to look finds the first one's fresh answer and makes no GET."""
    budget = uuid.uuid4().hex
    first, close_first = await claims_on(store, budget, clock)
    second, close_second = await claims_on(store, budget, clock)
    calls, fetch = counting(RUNNING)
    try:
        assert await first.fetcher("spo-1", fetch, hold=5.0)() == RUNNING
        assert await second.fetcher("spo-1", fetch, hold=5.0)() == RUNNING
        assert calls == [1]  # the first look was a GET; the second read its snapshot
        clock.advance(1.0)
        assert await second.fetcher("spo-1", fetch, hold=5.0)() == RUNNING
        assert calls == [1, 1]  # a snapshot older than this look began is not an answer
    finally:
        await close_first()
        await close_second()


async def test_a_claim_whose_holder_died_lapses(store: str, clock: ManualClock) -> None:
    """A claim left by a process that died is waited out, for at most its length."""
    budget = uuid.uuid4().hex
    ghost, close_ghost = await claims_on(store, budget, clock)
    claims, close = await claims_on(store, budget, clock)
    calls, fetch = counting(RUNNING)
    try:
        # The ghost claims the task, then vanishes without releasing it: write its claim
        # straight into the record, as it stood when it died.
        def claimed(text: str | bytes | None, now: float) -> tuple[str, None]:
            return json.dumps({"owner": "ghost", "until": now + 1.0}), None

        await ghost._store.exchange(f"poll:{budget}:spo-1", claimed, clock(), ttl=60)
        started = clock()
        assert await claims.fetcher("spo-1", fetch, hold=5.0)() == RUNNING
        assert calls == [1]
        assert 1.0 <= clock() - started <= 1.1  # waited out the ghost's second, no longer
    finally:
        await close_ghost()
        await close()


async def test_an_unreadable_snapshot_is_ignored(
    store: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot that is not a task answer is not believed: the process looks itself."""
    budget = uuid.uuid4().hex
    claims, close = await claims_on(store, budget, clock)
    calls, fetch = counting(RUNNING)

    def garbled(text: str | bytes | None, now: float) -> tuple[str, None]:
        record = {"snapshot": {"status": "no such"}, "seen_at": now, "terminal": True}
        return json.dumps(record), None

    try:
        await claims._store.exchange(f"poll:{budget}:spo-1", garbled, clock(), ttl=60)
        with caplog.at_level(logging.WARNING, logger="spo_async"):
            assert await claims.fetcher("spo-1", fetch, hold=5.0)() == RUNNING
        assert calls == [1]
        assert "could not be read" in caplog.text
    finally:
        await close()


async def test_accounts_never_see_each_others_snapshots(store: str, clock: ManualClock) -> None:
    """Claims live under the budget's name, which is the API key's: another key looks itself."""
    mine, close_mine = await claims_on(store, uuid.uuid4().hex, clock)
    theirs, close_theirs = await claims_on(store, uuid.uuid4().hex, clock)
    calls, fetch = counting(RUNNING)
    try:
        await mine.fetcher("spo-1", fetch, hold=5.0)()
        await theirs.fetcher("spo-1", fetch, hold=5.0)()
        assert calls == [1, 1]
    finally:
        await close_mine()
        await close_theirs()


@pytest.mark.parametrize("scheme", ["postgresql", "redis"])
async def test_without_the_store_a_look_is_a_plain_get(
    scheme: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that cannot be reached costs requests, never the wait: one warning, then GETs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    claims, close = await claims_on(f"{scheme}://127.0.0.1:{port}/0", "b", clock)
    calls, fetch = counting(RUNNING)
    try:
        with caplog.at_level(logging.WARNING, logger="spo_async"):
            look = claims.fetcher("spo-1", fetch, hold=5.0)
            assert await look() == RUNNING
            assert await look() == RUNNING
        assert calls == [1, 1]
        assert caplog.text.count("polling directly") == 1
    finally:
        await close()


async def test_the_records_expire(pg_database: str, clock: ManualClock) -> None:
    """A task's record carries an expiry, so a store does not fill up with old tasks."""
    claims, close = await claims_on(pg_database, "b", clock)
    _, fetch = counting(RUNNING)
    try:
        await claims.fetcher("spo-1", fetch, hold=5.0)()
    finally:
        await close()
    async with await psycopg.AsyncConnection.connect(pg_database) as conn:
        cursor = await conn.execute(
            "SELECT expires_at > now() + interval '23 hours' FROM spo_async_shared"
        )
        assert await cursor.fetchall() == [(True,)]


async def test_a_redis_record_expires(redis_uri: str, clock: ManualClock) -> None:
    """The same in Redis: the key has a time to live of a day."""
    budget = uuid.uuid4().hex
    claims, close = await claims_on(redis_uri, budget, clock)
    _, fetch = counting(RUNNING)
    try:
        await claims.fetcher("spo-1", fetch, hold=5.0)()
    finally:
        await close()
    client = redis.asyncio.Redis.from_url(redis_uri)
    try:
        ttl = await client.ttl(f"spo-async:poll:{budget}:spo-1")
    finally:
        await client.aclose()
    assert 23 * 3600 < ttl <= 24 * 3600


async def test_a_failed_get_releases_the_claim_at_once(store: str, clock: ManualClock) -> None:
    """A GET that fails gives its claim back: the next process looks without waiting."""
    budget = uuid.uuid4().hex
    first, close_first = await claims_on(store, budget, clock)
    second, close_second = await claims_on(store, budget, clock)
    calls, fetch = counting(RUNNING)

    async def broken() -> TaskResult:
        raise ConnectionResetError

    try:
        with pytest.raises(ConnectionResetError):
            await first.fetcher("spo-1", broken, hold=30.0)()
        started = clock()
        assert await second.fetcher("spo-1", fetch, hold=30.0)() == RUNNING
        assert calls == [1]
        assert clock() == started  # no wait for the failed process's claim
    finally:
        await close_first()
        await close_second()


@pytest.mark.parametrize(
    "record",
    [
        b"not json {",
        b"[1, 2]",
        json.dumps({"snapshot": [1], "seen_at": 1e12, "terminal": True}).encode(),
        json.dumps({"owner": "ghost", "until": "later"}).encode(),
        json.dumps({"owner": "ghost", "until": True}).encode(),
        # Claims no process would hold: for ever, or for longer than any hold.
        b'{"owner": "ghost", "until": Infinity}',
        b'{"owner": "ghost", "until": 1e999}',
        b'{"owner": "ghost", "until": 1e308}',
        b'{"owner": "ghost", "until": 1' + b"0" * 400 + b"}",
        b'{"owner": "ghost", "until": NaN}',
        # Snapshots from the far future, which would never be replaced.
        json.dumps({"snapshot": RUNNING.to_dict(), "seen_at": 1e308}).encode(),
        b'{"snapshot": {"status": "processing"}, "seen_at": 1' + b"0" * 400 + b"}",
        b'{"snapshot": {"status": "processing"}, "seen_at": Infinity}',
        b"[" * 100_000 + b"]" * 100_000,  # too deep for the JSON reader
    ],
)
async def test_a_record_no_process_would_write_is_no_reason_to_wait(
    store: str, clock: ManualClock, record: bytes
) -> None:
    """A garbled record neither answers the look nor holds it back: the process looks itself."""
    budget = uuid.uuid4().hex
    claims, close = await claims_on(store, budget, clock)
    calls, fetch = counting(RUNNING)

    def garbled(text: str | bytes | None, now: float) -> tuple[str, None]:
        return record.decode(), None

    try:
        await claims._store.exchange(f"poll:{budget}:spo-1", garbled, clock(), ttl=60)
        started = clock()
        assert await claims.fetcher("spo-1", fetch, hold=5.0)() == RUNNING
        assert calls == [1]
        assert clock() == started
        assert "budget=" in repr(claims)
    finally:
        await close()


class SharedTime:
    """One manual clock for processes that wait differently: see the test below.

    ``moving`` sleeps as :class:`VirtualTime` does (the clock jumps by the wait);
    ``patient`` waits for the other processes' waits to carry the clock past its end,
    as a process stuck at the gate would while the others go on.
    """

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self._moved = asyncio.Event()
        #: Set once a patient process waits.
        self.waiting = asyncio.Event()

    async def moving(self, seconds: float) -> None:
        self.clock.advance(seconds)
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()
        await asyncio.sleep(0)

    async def patient(self, seconds: float) -> None:
        end = self.clock() + seconds
        self.waiting.set()
        while self.clock() < end:
            await self._moved.wait()


async def test_a_claim_lasts_while_its_holder_waits_at_the_budget(
    store: str, clock: ManualClock
) -> None:
    """A GET held back by a fleet-wide Retry-After pause keeps its claim: one GET, not two.

    The claim is held for the request timeout (5 s here); the pause is 100 s. Had the
    claim lapsed at the gate, the second process would claim the task too and GET it
    as the pause ended, as the first one does.
    """
    budget = uuid.uuid4().hex
    time = SharedTime(clock)
    first, second = (
        RequestLimiter.shared(store, name=budget, clock=clock, max_pause=120) for _ in range(2)
    )
    first._bind(clock, time.patient)  # its wait at the gate lasts as long as the others'
    second._bind(clock, time.moving)
    gets: list[str] = []

    def fetch_as(name: str, limiter: RequestLimiter) -> Callable[[], Awaitable[TaskResult]]:
        async def fetch() -> TaskResult:
            async with limiter.slot():
                gets.append(name)
                return RUNNING

        return fetch

    try:
        async with first.slot():  # a burst answered 429 with Retry-After: 100 (load)
            pass
        for _ in range(20):
            first.on_rate_limited(100.0)
        second.on_success()  # the second hears the fleet's state at its next exchange
        for limiter in (first, second):
            flusher = getattr(limiter, "_flusher", None)
            assert flusher is not None
            await flusher  # it has told the store
        assert second.paused_for == pytest.approx(100.0)

        first_claims = first._poll_claims(clock, time.patient)
        second_claims = second._poll_claims(clock, time.moving)
        assert first_claims is not None
        assert second_claims is not None
        first_look = asyncio.ensure_future(
            first_claims.fetcher("spo-1", fetch_as("first", first), hold=5.0)()
        )
        await time.waiting.wait()  # the first has claimed the task and waits at the gate
        second_look = await second_claims.fetcher("spo-1", fetch_as("second", second), hold=5.0)()
        await time.moving(200.0)  # past any pause: the first ends, whatever it waits for

        assert await first_look == RUNNING
        assert second_look == RUNNING
        assert gets == ["first"]  # the second used the first one's snapshot
        assert clock() >= 1_100.0  # and nobody sent before the pause ended
    finally:
        for limiter in (first, second):
            await limiter._release()


async def test_a_look_cancelled_mid_exchange_leaves_the_store_usable(
    store: str, clock: ManualClock
) -> None:
    """Cancelling a look while it talks to the store costs its connection, not the next look."""
    budget = uuid.uuid4().hex
    claims, close = await claims_on(store, budget, clock)
    calls, fetch = counting(RUNNING)
    try:
        look = asyncio.ensure_future(claims.fetcher("spo-1", fetch, hold=5.0)())
        await asyncio.sleep(0)  # started: in the middle of its first exchange
        look.cancel()
        with pytest.raises(asyncio.CancelledError):
            await look
        assert await claims.fetcher("spo-1", fetch, hold=5.0)() == RUNNING
        assert calls == [1]  # the cancelled look made no GET; the next one did
    finally:
        await close()
