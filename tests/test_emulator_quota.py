"""The emulator's quota mode, on its ManualClock: a per-key moving window, 429 past it."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from spo_async.testing import (
    DEFAULT_API_KEY,
    Emulator,
    EmulatorConfig,
    Fault,
    FaultKind,
    ManualClock,
)
from spo_async.testing._quota import QuotaGate

SUBMIT = "/302/prompt/spo/submit"
REQUEST: dict[str, Any] = {
    "qa": [{"question": "Good morning", "answer": "[reply]"}],
    "prompt": "Act as the user's girlfriend",
    "max_rounds": 2,
    "model": "gpt-4o-mini",
}
OTHER_KEY = "sk-spo-other"


@pytest.fixture
def emulator_config(clock: ManualClock) -> EmulatorConfig:
    return EmulatorConfig(
        quota_per_second=3.0, clock=clock, api_keys={DEFAULT_API_KEY, OTHER_KEY}, seed=1
    )


async def get(
    session: aiohttp.ClientSession, emu: Emulator, key: str = DEFAULT_API_KEY
) -> tuple[int, str | None]:
    """Query a task that does not exist: an answer (404) that costs one request of the quota."""
    url = emu.base_url + "/302/prompt/spo/tasks/spo-nothing"
    async with session.get(url, headers={"Authorization": f"Bearer {key}"}) as response:
        await response.read()
        return response.status, response.headers.get("Retry-After")


async def test_past_the_quota_the_answer_is_429_with_retry_after(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Three requests in a second are answered; the fourth gets 429 and a whole-second wait."""
    answers = [await get(session, emu) for _ in range(3)]
    assert answers == [(404, None)] * 3
    clock.advance(0.3)
    status, retry_after = await get(session, emu)
    assert (status, retry_after) == (429, "1")  # 0.7 s until the first leaves, rounded up
    assert emu.quota is not None
    assert (emu.quota.admitted, emu.quota.refused) == (3, 1)


async def test_the_window_moves_with_the_clock(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """A slot frees exactly one window after the request that took it, not at a window edge."""
    await get(session, emu)
    clock.advance(0.5)
    await get(session, emu)
    await get(session, emu)
    clock.advance(0.49)
    assert (await get(session, emu))[0] == 429
    clock.advance(0.02)  # the first request is now more than a second old
    assert (await get(session, emu))[0] == 404
    assert (await get(session, emu))[0] == 429


async def test_submits_and_queries_share_one_quota_per_key(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """Submits count with queries; a refused submit creates no task; another key has its own."""
    headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
    await get(session, emu)
    await get(session, emu)
    async with session.post(emu.base_url + SUBMIT, json=REQUEST, headers=headers) as response:
        assert response.status == 200
    async with session.post(emu.base_url + SUBMIT, json=REQUEST, headers=headers) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "1"
        body = await response.json()
    assert body["error"]["type"] == "rate_limit_error"
    assert emu.tasks_created == 1
    assert [record.status for record in emu.submits] == [200, 429]
    assert (await get(session, emu, OTHER_KEY))[0] == 404


async def test_the_quota_answers_before_any_fault(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """A request the quota refuses never reaches the fault plan, so no fault is spent on it."""
    for _ in range(3):
        await get(session, emu)
    emu.inject(Fault(FaultKind.SERVER_ERROR_HTML, times=1))
    assert (await get(session, emu))[0] == 429
    assert emu.faults_fired[FaultKind.SERVER_ERROR_HTML] == 0
    assert len(emu.faults) == 1


async def test_without_a_quota_nothing_is_counted(session: aiohttp.ClientSession) -> None:
    """The default config has no quota: no gate, and no request is ever refused for rate."""
    async with Emulator(EmulatorConfig()) as emu:
        assert emu.quota is None
        for _ in range(20):
            assert (await get(session, emu))[0] == 404


def test_a_quota_below_one_a_second_still_admits_one() -> None:
    """At 0.5 per second the window stretches to two seconds with one request in it."""
    clock = ManualClock()
    gate = QuotaGate(0.5, clock=clock)
    assert (gate.window, gate.limit) == (2.0, 1)
    assert gate.check("k") is None
    clock.advance(1.5)
    refused = gate.check("k")
    assert refused is not None
    assert dict(refused.headers)["Retry-After"] == "1"
    clock.advance(0.6)
    assert gate.check("k") is None
    assert gate.log == [(0.0, True), (1.5, False), (2.1, True)]


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"quota_per_second": 0.0}, id="zero-quota"),
        pytest.param({"quota_per_second": float("inf")}, id="infinite-quota"),
        pytest.param({"quota_window": 0.0}, id="zero-window"),
    ],
)
def test_a_nonsensical_quota_is_refused(changes: dict[str, float]) -> None:
    """A quota or window that is not a finite positive number is a ValueError naming it."""
    with pytest.raises(ValueError, match=next(iter(changes))):
        EmulatorConfig(**changes)  # type: ignore[arg-type]
