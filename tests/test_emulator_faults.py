"""Every injectable fault, as a plain aiohttp client sees it, and how the plan fires them."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import time
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
from spo_async.testing._faults import FaultPlan

from .conftest import until

SUBMIT = "/302/prompt/spo/submit"
TASKS = "/302/prompt/spo/tasks/"
AUTH = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
REQUEST: dict[str, Any] = {
    "qa": [
        {"question": "Good morning", "answer": "[reply]"},
        {"question": "Do you love me?", "answer": "[reply]"},
        {"question": "What are you doing?", "answer": "[reply]"},
    ],
    "prompt": "Act as the user's girlfriend",
    "max_rounds": 4,
    "model": "gpt-4o-mini",
}


class Answer:
    """What the client got: status, headers and raw body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


async def send(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Answer:
    async with session.request(method, url, headers=AUTH, **kwargs) as resp:
        return Answer(resp.status, dict(resp.headers), await resp.read())


async def submit(session: aiohttp.ClientSession, emu: Emulator) -> Answer:
    return await send(session, "POST", emu.base_url + SUBMIT, json=REQUEST)


async def query(session: aiohttp.ClientSession, emu: Emulator, task_id: str) -> Answer:
    return await send(session, "GET", emu.base_url + TASKS + task_id)


@pytest.fixture
def emulator_config(clock: ManualClock) -> EmulatorConfig:
    """The emulator of these tests: on the hand-driven clock, 1 s rounds."""
    return EmulatorConfig(clock=clock, round_seconds=1.0)


async def finished_task(session: aiohttp.ClientSession, emu: Emulator, clock: ManualClock) -> str:
    answer = await submit(session, emu)
    assert answer.status == 200
    clock.advance(100)
    task_id: str = answer.json()["task_id"]
    return task_id


# -- replies that replace the normal one ------------------------------------------------


async def test_rate_limit_is_a_429_with_retry_after_and_no_err_code(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """RATE_LIMIT answers 429 with Retry-After and localized messages, and creates no task."""
    emu.inject(Fault(FaultKind.RATE_LIMIT, endpoint="submit", times=1))
    answer = await submit(session, emu)
    assert answer.status == 429
    assert answer.headers["Retry-After"] == "1"
    error = answer.json()["error"]
    assert "err_code" not in error
    assert all(error[k] for k in ("message", "message_cn", "message_jp"))
    assert emu.tasks_created == 0
    assert emu.submits[-1].fault is FaultKind.RATE_LIMIT
    assert emu.submits[-1].status == 429
    assert (await submit(session, emu)).status == 200


WHEN = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [
        pytest.param(7, "7", id="int-seconds"),
        pytest.param(2.5, "2.5", id="fractional-seconds"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT", id="date"),
        pytest.param(WHEN, "Wed, 02 Jan 2030 03:04:05 GMT", id="datetime"),
    ],
)
async def test_retry_after_takes_seconds_or_an_http_date(
    emu: Emulator, session: aiohttp.ClientSession, retry_after: Any, header: str
) -> None:
    """Retry-After is sent as given: delta seconds or an HTTP-date."""
    emu.inject(Fault(FaultKind.RATE_LIMIT, retry_after=retry_after))
    answer = await query(session, emu, "anything")
    assert answer.headers["Retry-After"] == header
    if isinstance(retry_after, dt.datetime):
        assert email.utils.parsedate_to_datetime(header) == retry_after


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_error_html_is_a_gateway_page(
    emu: Emulator, session: aiohttp.ClientSession, status: int
) -> None:
    """SERVER_ERROR_HTML answers the 5xx with a text/html page, not JSON."""
    emu.inject(Fault(FaultKind.SERVER_ERROR_HTML, status=status))
    answer = await submit(session, emu)
    assert answer.status == status
    assert answer.headers["Content-Type"].startswith("text/html")
    assert answer.body.startswith(b"<html>")
    assert str(status).encode() in answer.body
    assert emu.tasks_created == 0


async def test_server_error_html_defaults_to_502(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """Without a status, SERVER_ERROR_HTML is a 502 Bad Gateway."""
    emu.inject(Fault(FaultKind.SERVER_ERROR_HTML))
    answer = await query(session, emu, "x")
    assert (answer.status, b"502 Bad Gateway" in answer.body) == (502, True)


@pytest.mark.parametrize(
    ("fault", "status", "content_type", "body"),
    [
        pytest.param(Fault(FaultKind.STATUS), 500, "text/html", None, id="default-500-html"),
        pytest.param(
            Fault(FaultKind.STATUS, status=418), 418, "text/plain", b"I'm a Teapot", id="reason"
        ),
        pytest.param(Fault(FaultKind.STATUS, status=599), 599, "text/html", None, id="unknown-5xx"),
        pytest.param(
            Fault(FaultKind.STATUS, status=499), 499, "text/plain", b"Error", id="unknown-4xx"
        ),
        pytest.param(
            Fault(FaultKind.STATUS, status=409, body='{"odd": true}'),
            409,
            "application/json",
            b'{"odd": true}',
            id="json-body",
        ),
        pytest.param(
            Fault(FaultKind.STATUS, status=400, body=b"[1]"),
            400,
            "application/json",
            b"[1]",
            id="bytes-body",
        ),
        pytest.param(
            Fault(FaultKind.STATUS, status=200, body="ok"), 200, "text/plain", b"ok", id="text-200"
        ),
    ],
)
async def test_status_fault_sends_the_given_status_and_body(
    emu: Emulator,
    session: aiohttp.ClientSession,
    *,
    fault: Fault,
    status: int,
    content_type: str,
    body: bytes | None,
) -> None:
    """STATUS sends its status and body, with a content type guessed from the body."""
    emu.inject(fault)
    answer = await query(session, emu, "x")
    assert answer.status == status
    assert answer.headers["Content-Type"].startswith(content_type)
    if body is not None:
        assert answer.body == body
    else:
        assert answer.body.startswith(b"<html>")


async def test_status_fault_carries_extra_headers(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """Headers given as a mapping reach the client, alongside an optional Retry-After."""
    emu.inject(Fault(FaultKind.STATUS, status=503, headers={"X-Gateway": "edge-7"}, retry_after=3))
    answer = await query(session, emu, "x")
    assert answer.headers["X-Gateway"] == "edge-7"
    assert answer.headers["Retry-After"] == "3"


@pytest.mark.parametrize(
    ("fault", "status", "err_code"),
    [
        pytest.param(Fault(FaultKind.ERROR_ENVELOPE), 500, -10003, id="default-network-error"),
        pytest.param(
            Fault(FaultKind.ERROR_ENVELOPE, status=504, err_code=-1024), 504, -1024, id="ai-timeout"
        ),
        pytest.param(
            Fault(FaultKind.ERROR_ENVELOPE, status=403, err_code=-10006), 403, -10006, id="quota"
        ),
        pytest.param(
            Fault(FaultKind.ERROR_ENVELOPE, status=400, err_code=-42), 400, -42, id="unknown-code"
        ),
    ],
)
async def test_error_envelope_sends_the_given_code(
    emu: Emulator, session: aiohttp.ClientSession, fault: Fault, status: int, err_code: int
) -> None:
    """ERROR_ENVELOPE answers with the 302 envelope for its err_code, in three languages."""
    emu.inject(fault)
    answer = await submit(session, emu)
    assert answer.status == status
    error = answer.json()["error"]
    assert error["err_code"] == err_code
    assert error["type"] == "api_error"
    assert all(error[k] for k in ("message", "message_cn", "message_jp"))
    assert emu.tasks_created == 0


async def test_replacing_fault_after_work_still_creates_the_task(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """With after_work, a submit answered by a 504 page has created its task anyway."""
    emu.inject(Fault(FaultKind.SERVER_ERROR_HTML, status=504, after_work=True))
    answer = await submit(session, emu)
    assert answer.status == 504
    assert emu.tasks_created == 1
    assert emu.submits[-1].task_id in emu.tasks


# -- dropped and slow connections -------------------------------------------------------


async def test_drop_before_cuts_the_connection_and_creates_no_task(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """DROP_BEFORE closes the socket unanswered; the submit did not create a task."""
    emu.inject(Fault(FaultKind.DROP_BEFORE, endpoint="submit", times=1))
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await submit(session, emu)
    assert emu.tasks_created == 0
    record = emu.submits[-1]
    assert (record.fault, record.status, record.task_id) == (FaultKind.DROP_BEFORE, None, None)
    assert record.body == REQUEST
    assert emu.request_log[-1].status is None


async def test_drop_after_creates_the_task_then_cuts_the_connection(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """DROP_AFTER does the work first: the client sees a disconnect but the task exists."""
    emu.inject(Fault(FaultKind.DROP_AFTER, endpoint="submit", times=1))
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await submit(session, emu)
    assert emu.tasks_created == 1
    record = emu.submits[-1]
    assert record.task_id in emu.tasks
    assert (record.fault, record.status) == (FaultKind.DROP_AFTER, None)


async def test_drop_on_every_query_reaches_the_client(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """A persistent DROP_BEFORE on queries fails the GET even after aiohttp's own retry."""
    task_id = await finished_task(session, emu, clock)
    emu.inject(Fault(FaultKind.DROP_BEFORE, endpoint="task"))
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await query(session, emu, task_id)
    assert emu.faults_fired[FaultKind.DROP_BEFORE] >= 1
    emu.clear_faults()
    assert (await query(session, emu, task_id)).status == 200


async def test_delay_answers_normally_after_real_seconds(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """DELAY holds the answer for the given real time, then processes the request normally."""
    emu.inject(Fault(FaultKind.DELAY, delay=0.05, times=1))
    started = time.monotonic()
    answer = await submit(session, emu)
    assert time.monotonic() - started >= 0.045  # the loop may wake a hair early
    assert answer.status == 200
    assert emu.tasks_created == 1


async def test_closing_cuts_a_long_delay_short(session: aiohttp.ClientSession) -> None:
    """Closing the emulator wakes a request stuck in a long DELAY instead of waiting it out."""
    emulator = Emulator(EmulatorConfig())
    await emulator.start()
    emulator.inject(Fault(FaultKind.DELAY, delay=60))
    pending = asyncio.ensure_future(submit(session, emulator))
    await until(lambda: emulator.faults_fired, what="the submit held by the DELAY")
    started = time.monotonic()
    await emulator.close()
    assert time.monotonic() - started < 5
    result = await asyncio.gather(pending, return_exceptions=True)
    assert isinstance(result[0], Answer | aiohttp.ClientError)


# -- how the plan fires ------------------------------------------------------------------


async def test_times_limits_how_often_a_fault_fires(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """A fault with times=2 fires on two requests, then the service behaves again."""
    emu.inject(Fault(FaultKind.ERROR_ENVELOPE, endpoint="task", times=2))
    statuses = [(await query(session, emu, "x")).status for _ in range(3)]
    assert statuses == [500, 500, 404]
    assert emu.faults_fired == {FaultKind.ERROR_ENVELOPE: 2}
    assert emu.faults == ()
    assert [r.fault for r in emu.request_log] == [FaultKind.ERROR_ENVELOPE] * 2 + [None]


async def test_endpoint_and_task_id_select_where_a_fault_fires(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """A task-only fault spares submits, and a task_id fault spares other tasks."""
    first = await finished_task(session, emu, clock)
    second = await finished_task(session, emu, clock)
    emu.inject(Fault(FaultKind.ERROR_ENVELOPE, endpoint="task", task_id=first))
    assert (await submit(session, emu)).status == 200
    assert (await query(session, emu, second)).status == 200
    assert (await query(session, emu, first)).status == 500


async def test_faults_fire_with_their_probability_reproducibly(
    session: aiohttp.ClientSession,
) -> None:
    """Probabilistic faults fire about as often as asked, in the same pattern for one seed."""
    patterns = []
    for _ in range(2):
        fault = Fault(FaultKind.ERROR_ENVELOPE, probability=0.3)
        async with Emulator(EmulatorConfig(seed=3, faults=[fault])) as emulator:
            patterns.append([(await query(session, emulator, "x")).status for _ in range(60)])
    assert patterns[0] == patterns[1]
    assert 5 <= patterns[0].count(500) <= 35
    assert set(patterns[0]) == {404, 500}


def test_zero_probability_and_zero_times_never_fire() -> None:
    """probability=0 never fires and times=0 is not even armed."""
    plan = FaultPlan([Fault(FaultKind.DELAY, probability=0.0), Fault(FaultKind.DELAY, times=0)])
    assert len(plan.faults) == 1
    assert all(plan.pick("task") is None for _ in range(50))
    plan.clear()
    assert not plan


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"probability": 1.5}, id="probability-over-one"),
        pytest.param({"probability": -0.1}, id="probability-negative"),
        pytest.param({"times": -1}, id="negative-times"),
    ],
)
def test_fault_rejects_nonsense(changes: dict[str, Any]) -> None:
    """A fault with an impossible probability or budget is refused when built."""
    with pytest.raises(ValueError, match="must be"):
        Fault(FaultKind.DELAY, **changes)


async def test_reset_records_also_forgets_fired_faults(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """reset_records clears the tally of fired faults but keeps armed ones armed."""
    emu.inject(Fault(FaultKind.ERROR_ENVELOPE))
    await query(session, emu, "x")
    emu.reset_records()
    assert emu.faults_fired == {}
    assert emu.faults_fired_at == {}
    assert len(emu.faults) == 1
