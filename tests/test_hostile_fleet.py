"""Hostile inputs to the fleet features: store options, passwords, hand-overs, tiny quotas.

Each test holds a behaviour an adversarial review of the shared budget, the store URIs,
the journal hand-over and the limiter found missing, with the attack it used.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import threading
import uuid
from pathlib import Path

import pytest
from spo_async import AsyncSPOClient, ConfigurationError, RequestLimiter, SPOError
from spo_async._journal import Journal, JournalError
from spo_async._shared_limiter import decode_state, encode_state
from spo_async._shared_store import open_store
from spo_async.testing import EmulatorConfig, ManualClock, ThreadedEmulator

from tests.cli_helpers import EXAMPLES, run_cli
from tests.conftest import VirtualTime, make_request
from tests.servers import redis_uri

__all__ = ["redis_uri"]  # a fixture, imported for pytest

# -- store URIs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "rediss://spo:hunter2@cache.internal:6380/0?ssl_cert_reqs=bogus",
        "redis://spo:hunter2@cache.internal:6379/0?protocol=9",
    ],
)
def test_a_redis_option_redis_py_refuses_is_a_configuration_error(uri: str) -> None:
    """An option redis-py refuses with its own RedisError is a ConfigurationError, as any.

    redis-py refuses an unknown ``ssl_cert_reqs`` with ``RedisError`` and a bad
    ``protocol`` with ``redis.exceptions.ConnectionError``, not ValueError.
    """
    with pytest.raises(SPOError) as raised:
        RequestLimiter.shared(uri)
    assert isinstance(raised.value, ConfigurationError)
    assert "hunter2" not in str(raised.value)


def test_the_cli_refuses_a_redis_option_redis_py_refuses_without_a_traceback(
    tmp_path: Path,
) -> None:
    """``--limiter=rediss://...?ssl_cert_reqs=bogus`` is a usage error (exit 2), no traceback."""
    limiter = "--limiter=rediss://spo:hunter2@127.0.0.1:1/0?ssl_cert_reqs=bogus"
    output = str(tmp_path / "out.jsonl")
    done = run_cli("batch", str(EXAMPLES / "batch.jsonl"), "-o", output, limiter,
                   "--base-url", "http://127.0.0.1:9", env={"SPO_API_KEY": "sk-test"})  # fmt: skip

    assert "Traceback" not in done.stderr
    assert done.returncode == 2
    assert "ssl_cert_reqs" in done.stderr
    assert "hunter2" not in done.stdout + done.stderr


# -- the command line ---------------------------------------------------------------------


def test_a_refused_argument_whose_password_has_a_space_shows_no_part_of_it() -> None:
    """A refused argument whose password holds a space shows no part of the password.

    A URI found in free text ends at whitespace, so the arguments given are masked
    whole before the parser's message is printed (stderr and the --json object).
    """
    args = ("batch", str(EXAMPLES / "batch.jsonl"), "--j=postgresql://spo:hunter twofish@db/app")
    human = run_cli(*args)
    machine = run_cli(*args, "--json")

    assert (human.returncode, machine.returncode) == (2, 2)
    shown = human.stdout + human.stderr + machine.stdout + machine.stderr
    assert "twofish" not in shown


# -- the journal hand-over ----------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_opening_one_journal_twice_at_once_during_a_hand_over_refuses_the_second(
    tmp_path: Path,
) -> None:
    """Two open() calls on one Journal while a retiring run holds the file: one is refused."""
    path = tmp_path / "run.db"
    first = Journal(path)
    await first.open()
    first.retire()  # the old run has begun to close (a ``break``)
    journal = Journal(path)
    opening = [asyncio.ensure_future(journal.open()) for _ in range(2)]
    for _ in range(10):
        await asyncio.sleep(0)
    await first.close()
    try:
        async with asyncio.timeout(10):  # a guard: on the defect one open() hangs for ever
            results = await asyncio.gather(*opening, return_exceptions=True)
    finally:
        for task in opening:
            task.cancel()
        await journal.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1
    assert isinstance(errors[0], JournalError)
    assert not [t for t in threading.enumerate() if t.name == "spo-async journal"]


def test_a_rerun_does_not_wait_for_a_run_whose_loop_no_longer_runs(tmp_path: Path) -> None:
    """A rerun does not wait for a retiring run whose event loop no longer runs.

    Its close will never come: the rerun is refused at once, as before hand-overs.
    """
    journal = str(tmp_path / "run.db")
    requests = [make_request(f"p{i}") for i in range(4)]
    with ThreadedEmulator(EmulatorConfig(round_seconds=0.004, seed=1)) as emu:
        clients: list[AsyncSPOClient] = []

        async def first() -> None:
            client = AsyncSPOClient(emu.api_key, base_url=emu.base_url)
            clients.append(client)
            async for _ in client.optimize_many(requests, concurrency=2, journal=journal):
                break

        async def rerun() -> None:
            async with AsyncSPOClient(emu.api_key, base_url=emu.base_url) as client:
                async with asyncio.timeout(5):  # a guard: the defect waits 60 s
                    await client.optimize_all(requests, concurrency=2, journal=journal)

        old_loop = asyncio.new_event_loop()
        try:
            old_loop.run_until_complete(first())  # the old batch's close is left pending
            with contextlib.suppress(JournalError):  # refused at once is fine; hanging is not
                asyncio.run(rerun())
        finally:
            # Let the old run close after all: its close task, then its client.
            old_loop.run_until_complete(asyncio.sleep(0))
            pending = asyncio.all_tasks(old_loop)
            old_loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            old_loop.run_until_complete(clients[0].aclose())
            old_loop.run_until_complete(old_loop.shutdown_asyncgens())
            old_loop.close()


# -- the limiter --------------------------------------------------------------------------


def _refused_share(quota: int, retry_after: float | None, duration: float = 60.0) -> float:
    """The share of 429s over the second half of ``duration`` seconds against a small quota.

    A pure simulation of one client on a virtual clock: every request waits for the
    budget, answers after 50 ms, and a sliding one-second quota of ``quota`` requests
    refuses the rest with ``retry_after``.
    """
    policy = RequestLimiter()._policy
    state = policy.new_state()
    admitted: collections.deque[float] = collections.deque()
    answers: list[tuple[float, bool]] = []
    now, sent, refused = 0.0, 0, 0
    while now < duration:
        answers.sort()
        while answers and answers[0][0] <= now:
            at, limited = answers.pop(0)
            policy.answered(state, 0.05)
            policy.on_answer(
                state, at, limited=limited, retry_after=retry_after if limited else None
            )
        delay = policy.delay(state, now)
        if delay > 0:
            now = min(now + delay, answers[0][0]) if answers else now + delay
            continue
        policy.take(state, now, waited=True)
        while admitted and admitted[0] <= now - 1.0:
            admitted.popleft()
        ok = len(admitted) < quota
        if ok:
            admitted.append(now)
        if now > duration / 2:
            sent += 1
            refused += not ok
        answers.append((now + 0.05, not ok))
    return refused / sent


@pytest.mark.parametrize("quota", [1, 2, 3])
def test_a_quota_below_four_requests_a_second_is_learnt(quota: int) -> None:
    """A quota of 1 to 3 requests per second is learnt: few 429s once it is known.

    Fewer than four accepted answers in a window used to say nothing, so the budget
    "learnt" its own rate and ran into 429s for ever.
    """
    assert _refused_share(quota, retry_after=1.0) < 0.5


@pytest.mark.parametrize("answers", [-100.0, -200.0])
def test_a_stored_state_with_negative_answers_starts_afresh(answers: float) -> None:
    """A stored state with a negative count is one no process would write: it starts afresh."""
    policy = RequestLimiter()._policy
    good = json.loads(encode_state(policy.new_state()))
    state = decode_state(json.dumps({**good, "answers": answers}), policy, 1_000.0)
    policy.take(state, 1_000.0, waited=True)
    policy.on_answer(state, 1_000.05, limited=True, retry_after=1.0)  # must not raise
    assert state.answers >= 0


async def test_a_hostile_stored_budget_does_not_fail_requests_with_a_raw_exception(
    redis_uri: str,
) -> None:
    """A hostile stored budget fails no request with a raw exception; the budget starts afresh."""
    budget = f"review3-{uuid.uuid4().hex}"
    vt = VirtualTime(ManualClock(1_000.0))
    policy = RequestLimiter()._policy
    hostile = json.dumps({**json.loads(encode_state(policy.new_state())), "answers": -200.0})
    writer = open_store(redis_uri, "redis")
    try:
        await writer.exchange(f"budget:{budget}", lambda t, n: (hostile, None), None, ttl=60)
    finally:
        await writer.aclose()
    limiter = RequestLimiter.shared(redis_uri, name=budget, clock=vt.clock)
    limiter._bind(vt.clock, vt.sleep)
    try:
        async with limiter.slot():
            pass
        limiter.on_rate_limited(1.0)
        try:
            async with limiter.slot():
                pass
        except SPOError:
            pass  # typed: acceptable
    finally:
        await limiter._release()
