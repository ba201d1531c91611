"""The SPO emulator's contract: validation, auth, lifecycle, votes, outcomes and records.

Every test talks to a real emulator over loopback HTTP with a plain aiohttp client.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import aiohttp
import pytest
from spo_async.testing import (
    DEFAULT_API_KEY,
    Emulator,
    EmulatorConfig,
    ManualClock,
)

SUBMIT = "/302/prompt/spo/submit"
TASKS = "/302/prompt/spo/tasks/"

QA = [
    {"question": "Good morning", "answer": "[thoughts][reply]"},
    {"question": "Do you love me?", "answer": "[thoughts][reply]"},
    {"question": "What are you doing?", "answer": "[thoughts][reply]"},
    {"question": "Where shall we eat?", "answer": "[thoughts][reply]"},
]
REQUEST: dict[str, Any] = {
    "qa": QA,
    "prompt": "Act as the user's girlfriend",
    "requirements": "Reply in Chinese",
    "max_rounds": 5,
    "model": "claude-3-5-sonnet-20240620",
}
ENVELOPE_KEYS = {"err_code", "message", "message_cn", "message_jp", "type"}


def request_with(**changes: Any) -> dict[str, Any]:
    """Return a copy of the documented example request with some fields changed."""
    body = copy.deepcopy(REQUEST)
    body.update(changes)
    return body


def without(key: str) -> dict[str, Any]:
    """Return the example request without ``key``."""
    body = copy.deepcopy(REQUEST)
    del body[key]
    return body


def auth(key: str | None = DEFAULT_API_KEY) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


async def submit(
    session: aiohttp.ClientSession,
    emu: Emulator,
    body: Any = None,
    *,
    key: str | None = DEFAULT_API_KEY,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else json.dumps(REQUEST if body is None else body).encode()
    headers = {**auth(key), "Content-Type": "application/json"}
    async with session.post(emu.base_url + SUBMIT, data=data, headers=headers) as resp:
        return resp.status, await resp.json()


async def query(
    session: aiohttp.ClientSession,
    emu: Emulator,
    task_id: str,
    *,
    key: str | None = DEFAULT_API_KEY,
) -> tuple[int, Any]:
    async with session.get(emu.base_url + TASKS + task_id, headers=auth(key)) as resp:
        return resp.status, await resp.json()


async def new_task(session: aiohttp.ClientSession, emu: Emulator, body: Any = None) -> str:
    status, data = await submit(session, emu, body)
    assert status == 200, data
    task_id: str = data["task_id"]
    return task_id


def assert_envelope(data: Any, err_code: int) -> None:
    assert set(data) == {"error"}
    assert set(data["error"]) == ENVELOPE_KEYS
    assert data["error"]["err_code"] == err_code
    assert data["error"]["type"] == "api_error"
    assert all(data["error"][k] for k in ("message", "message_cn", "message_jp"))


@pytest.fixture
def emulator_config(clock: ManualClock) -> EmulatorConfig:
    """The emulator of these tests: on the hand-driven clock, a 1 s queue and 3 s rounds."""
    return EmulatorConfig(clock=clock, queue_seconds=1.0, round_seconds=3.0)


# -- submit and auth --------------------------------------------------------------


async def test_submit_returns_unique_opaque_task_ids(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """Each accepted submit answers 200 with a fresh non-empty task id and creates a task."""
    ids = [await new_task(session, emu) for _ in range(3)]
    assert len(set(ids)) == 3
    assert all(ids)
    assert emu.tasks_created == 3
    assert set(emu.tasks) == set(ids)


async def test_task_ids_differ_between_emulators_with_the_same_seed(
    session: aiohttp.ClientSession,
) -> None:
    """Each emulator mixes a random nonce into its ids, so a new one never reuses an old id."""
    runs = []
    for _ in range(2):
        async with Emulator(EmulatorConfig(seed=5)) as emulator:
            runs.append([await new_task(session, emulator) for _ in range(2)])
    assert not set(runs[0]) & set(runs[1])


async def test_task_ids_are_reproducible_with_a_fixed_nonce(
    session: aiohttp.ClientSession,
) -> None:
    """With task_id_nonce set, the same seed hands out the same ids in the same order."""
    runs = []
    for _ in range(2):
        async with Emulator(EmulatorConfig(seed=5, task_id_nonce="run")) as emulator:
            runs.append([await new_task(session, emulator) for _ in range(2)])
    assert runs[0] == runs[1]
    async with Emulator(EmulatorConfig(seed=5, task_id_nonce="other")) as emulator:
        assert await new_task(session, emulator) not in runs[0]


async def test_task_contents_do_not_depend_on_the_id_nonce(
    session: aiohttp.ClientSession,
) -> None:
    """Random ids leave the seeded simulation alone: one seed still gives the same rounds."""
    tasks = []
    config = EmulatorConfig(seed=5, clock=ManualClock())
    for _ in range(2):
        async with Emulator(config) as emulator:
            tasks.append(emulator.tasks[await new_task(session, emulator)])
    assert tasks[0].task_id != tasks[1].task_id
    assert tasks[0].rounds == tasks[1].rounds


INVALID = [
    pytest.param([REQUEST], id="body-is-a-list"),
    pytest.param("text", id="body-is-a-string"),
    pytest.param(without("qa"), id="qa-missing"),
    pytest.param(request_with(qa=[]), id="qa-empty"),
    pytest.param(request_with(qa={"question": "q", "answer": "a"}), id="qa-not-a-list"),
    pytest.param(request_with(qa=["Good morning"]), id="qa-item-not-an-object"),
    pytest.param(request_with(qa=[{"answer": "a"}]), id="qa-question-missing"),
    pytest.param(request_with(qa=[{"question": 1, "answer": "a"}]), id="qa-question-not-str"),
    pytest.param(request_with(qa=[{"question": "q"}]), id="qa-answer-missing"),
    pytest.param(request_with(qa=[{"question": "q", "answer": None}]), id="qa-answer-null"),
    pytest.param(without("prompt"), id="prompt-missing"),
    pytest.param(request_with(prompt=["p"]), id="prompt-not-str"),
    pytest.param(without("max_rounds"), id="max-rounds-missing"),
    pytest.param(request_with(max_rounds="5"), id="max-rounds-str"),
    pytest.param(request_with(max_rounds=5.0), id="max-rounds-float"),
    pytest.param(request_with(max_rounds=True), id="max-rounds-bool"),
    pytest.param(request_with(max_rounds=0), id="max-rounds-zero"),
    pytest.param(request_with(max_rounds=-3), id="max-rounds-negative"),
    pytest.param(request_with(max_rounds=1001), id="max-rounds-over-limit"),
    pytest.param(without("model"), id="model-missing"),
    pytest.param(request_with(model=None), id="model-null"),
    pytest.param(request_with(requirements=5), id="requirements-not-str"),
    pytest.param(request_with(language=None), id="language-null"),
    pytest.param(request_with(temperature="0.7"), id="temperature-str"),
    pytest.param(request_with(temperature=False), id="temperature-bool"),
]


@pytest.mark.parametrize("body", INVALID)
async def test_invalid_submit_is_refused_with_10011(
    emu: Emulator, session: aiohttp.ClientSession, body: Any
) -> None:
    """A missing or mistyped field is a 400 with err_code -10011, and no task is created."""
    status, data = await submit(session, emu, body)
    assert status == 400
    assert_envelope(data, -10011)
    assert emu.tasks_created == 0
    assert emu.submits[-1].task_id is None


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"{not json", id="broken-json"),
        pytest.param(b"", id="empty-body"),
        pytest.param(b'{"temperature": NaN}', id="nan-temperature"),
    ],
)
async def test_undecodable_submit_body_is_refused_with_10011(
    emu: Emulator, session: aiohttp.ClientSession, raw: bytes
) -> None:
    """A body that is not a usable JSON object is a 400 with -10011."""
    status, data = await submit(session, emu, raw=raw)
    assert status == 400
    assert_envelope(data, -10011)


VALID = [
    pytest.param(request_with(qa=[{**QA[0], "id": "uuid-1"}]), id="qa-item-extra-key"),
    pytest.param(request_with(qa=[{"question": "q", "answer": ""}]), id="empty-answer"),
    pytest.param(request_with(requirements=None), id="requirements-null"),
    pytest.param(without("requirements"), id="requirements-missing"),
    pytest.param(request_with(language="en", temperature=0.3), id="language-and-float-temp"),
    pytest.param(request_with(temperature=1), id="integer-temperature"),
    pytest.param(request_with(prompt=""), id="empty-prompt"),
    pytest.param(request_with(unknown_field=[1, 2]), id="unknown-top-level-key"),
    pytest.param(request_with(max_rounds=1000), id="max-rounds-at-limit"),
]


@pytest.mark.parametrize("body", VALID)
async def test_valid_submit_variants_are_accepted(
    emu: Emulator, session: aiohttp.ClientSession, body: Any
) -> None:
    """Optional fields, nulls where allowed and extra keys do not stop a submit."""
    task_id = await new_task(session, emu, body)
    assert emu.tasks[task_id].request == body


async def test_oversized_submit_body_is_refused_with_413(session: aiohttp.ClientSession) -> None:
    """A body over max_body_bytes is a 413 with -10011."""
    async with Emulator(EmulatorConfig(max_body_bytes=1024)) as emulator:
        status, data = await submit(session, emulator, request_with(prompt="x" * 4096))
        assert status == 413
        assert_envelope(data, -10011)
        assert emulator.submits[-1].body is None


@pytest.mark.parametrize("model", ["gpt-4.1", "o3", "qwen-max", "a-model-from-next-year"])
async def test_any_model_is_accepted_by_default(
    emu: Emulator, session: aiohttp.ClientSession, model: str
) -> None:
    """Without a models list the emulator accepts every model id, like a full catalogue."""
    task_id = await new_task(session, emu, request_with(model=model))
    assert emu.tasks[task_id].request["model"] == model


async def test_model_outside_an_explicit_list_is_refused_with_503_and_10008(
    session: aiohttp.ClientSession,
) -> None:
    """With models listed, any other id is a 503 with -10008, as the service answers it."""
    config = EmulatorConfig(models={"gpt-4o", "gpt-4.1"})
    async with Emulator(config) as emulator:
        status, data = await submit(session, emulator, request_with(model="gpt-99"))
        assert status == 503
        assert_envelope(data, -10008)
        assert "'gpt-99'" in data["error"]["message"]
        assert emulator.tasks_created == 0
        await new_task(session, emulator, request_with(model="gpt-4.1"))


def test_models_must_be_a_collection_not_one_string() -> None:
    """A bare string would silently become a set of letters, so it is refused."""
    with pytest.raises(TypeError, match="collection of strings"):
        EmulatorConfig(models="gpt-4o")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"Authorization": "Bearer sk-wrong"}, id="unknown-key"),
        pytest.param({"Authorization": "Bearer "}, id="empty-key"),
        pytest.param({"Authorization": f"Basic {DEFAULT_API_KEY}"}, id="wrong-scheme"),
        pytest.param({"Authorization": DEFAULT_API_KEY}, id="no-scheme"),
    ],
)
@pytest.mark.parametrize("endpoint", ["submit", "task"])
async def test_missing_or_bad_key_is_refused_with_401_and_10001(
    emu: Emulator, session: aiohttp.ClientSession, headers: dict[str, str], endpoint: str
) -> None:
    """Both endpoints refuse a request without a valid Bearer key with 401 and -10001."""
    task_id = await new_task(session, emu)
    if endpoint == "submit":
        call = session.post(emu.base_url + SUBMIT, json=REQUEST, headers=headers)
    else:
        call = session.get(emu.base_url + TASKS + task_id, headers=headers)
    async with call as resp:
        assert resp.status == 401
        assert_envelope(await resp.json(), -10001)
    assert emu.tasks_created == 1


async def test_bearer_scheme_is_case_insensitive(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """``bearer <key>`` authenticates like ``Bearer <key>``."""
    headers = {"Authorization": f"bearer {DEFAULT_API_KEY}"}
    async with session.post(emu.base_url + SUBMIT, json=REQUEST, headers=headers) as resp:
        assert resp.status == 200


async def test_broke_key_cannot_submit_but_can_query(session: aiohttp.ClientSession) -> None:
    """A key with no balance gets 402 and -10004 on submit, yet may still read tasks."""
    config = EmulatorConfig(api_keys={"sk-a"}, insufficient_balance_keys={"sk-broke"})
    async with Emulator(config) as emulator:
        assert emulator.api_key == "sk-a"
        status, data = await submit(session, emulator, key="sk-broke")
        assert status == 402
        assert_envelope(data, -10004)
        status, data = await submit(session, emulator, key="sk-a")
        assert status == 200
        status, _ = await query(session, emulator, data["task_id"], key="sk-broke")
        assert status == 200


@pytest.mark.parametrize("not_found_status", [404, 400])
async def test_unknown_task_id_is_an_envelope_with_10010(
    session: aiohttp.ClientSession, not_found_status: int
) -> None:
    """An unknown task id is answered with -10010 and the configured status (404 by default)."""
    config = EmulatorConfig(not_found_status=not_found_status)
    async with Emulator(config) as emulator:
        status, data = await query(session, emulator, "spo-does-not-exist")
        assert status == not_found_status
        assert_envelope(data, -10010)
        assert emulator.task_gets["spo-does-not-exist"] == 1


# -- records and lifecycle of the emulator --------------------------------------------


async def test_records_capture_the_traffic_with_the_key_redacted(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """submits, task_gets and request_log tell a test what the client sent, key redacted."""
    task_id = await new_task(session, emu)
    await submit(session, emu, request_with(qa=[]))
    for _ in range(3):
        await query(session, emu, task_id)
    accepted, refused = emu.submits
    assert (accepted.body, accepted.task_id, accepted.status) == (REQUEST, task_id, 200)
    assert (refused.task_id, refused.status, refused.fault) == (None, 400, None)
    assert accepted.headers["Authorization"] == "<redacted>"
    assert DEFAULT_API_KEY not in json.dumps(dict(accepted.headers))
    assert emu.task_gets == {task_id: 3}
    assert [(r.method, r.status) for r in emu.request_log] == [("POST", 200), ("POST", 400)] + [
        ("GET", 200)
    ] * 3
    assert emu.request_log[-1].path == TASKS + task_id
    emu.reset_records()
    assert (emu.submits, emu.tasks_created, emu.task_gets, emu.request_log) == ([], 0, {}, [])
    assert task_id in emu.tasks


async def test_request_log_can_be_turned_off(session: aiohttp.ClientSession) -> None:
    """With record_requests off the request log stays empty (for long benchmarks)."""
    async with Emulator(EmulatorConfig(record_requests=False)) as emulator:
        await new_task(session, emulator)
        assert emulator.request_log == []
        assert emulator.tasks_created == 1


async def test_task_snapshot_reads_the_true_state(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """task_snapshot and the task's own methods agree with what a client reads."""
    task_id = await new_task(session, emu)
    clock.advance(8)
    task = emu.tasks[task_id]
    assert emu.now() == clock()
    assert emu.task_snapshot(task_id) == (await query(session, emu, task_id))[1]
    assert task.status(clock()) == "processing"
    assert task.rounds_done(clock()) == 3


async def test_emulator_start_and_close_are_guarded() -> None:
    """base_url needs a running emulator; starting twice fails; closing twice is harmless."""
    emulator = Emulator()
    with pytest.raises(RuntimeError, match="not running"):
        _ = emulator.base_url
    await emulator.start()
    try:
        assert emulator.base_url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError, match="already running"):
            await emulator.start()
    finally:
        await emulator.close()
    await emulator.close()


async def test_emulator_can_listen_on_ipv6_loopback(session: aiohttp.ClientSession) -> None:
    """An IPv6 host is bracketed in base_url."""
    try:
        emulator = Emulator(EmulatorConfig(host="::1"))
        await emulator.start()
    except OSError:  # pragma: no cover - no IPv6 on this machine
        pytest.skip("IPv6 loopback is unavailable")
    try:
        assert emulator.base_url.startswith("http://[::1]:")
        await new_task(session, emulator)
    finally:
        await emulator.close()


async def test_start_failure_frees_the_runner() -> None:
    """A port already in use makes start() raise, and the emulator can still be closed."""
    async with Emulator() as first:
        port = int(first.base_url.rsplit(":", 1)[1])
        second = Emulator(EmulatorConfig(port=port))
        with pytest.raises(OSError, match=r"[Aa]ddress already in use"):
            await second.start()
        await second.close()


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"round_seconds": -1.0}, id="negative-round"),
        pytest.param({"queue_seconds": -0.1}, id="negative-queue"),
        pytest.param({"jitter": 1.5}, id="jitter-over-one"),
        pytest.param({"win_probability": -0.1}, id="probability-below-zero"),
        pytest.param({"max_rounds_limit": 0}, id="zero-round-limit"),
        pytest.param({"max_body_bytes": 0}, id="zero-body-limit"),
    ],
)
def test_config_rejects_nonsense(changes: dict[str, Any]) -> None:
    """Impossible timing or limits are refused when the config is built."""
    with pytest.raises(ValueError, match="must be"):
        EmulatorConfig(**changes)


def test_manual_clock_only_moves_forward() -> None:
    """A ManualClock advances by hand and refuses to go back."""
    clock = ManualClock(5)
    assert clock() == 5.0
    assert clock.advance(2.5) == 7.5
    assert clock.advance_to(9) == 9.0
    assert repr(clock) == "ManualClock(9.0)"
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance_to(8)
