"""Untyped failures: odd keys, ids and text fail early and typed, never with a stray
UnicodeEncodeError or ValueError from deep inside the HTTP stack, and a billed task's
id is never lost on the way.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from spo_async import (
    AsyncSPOClient,
    ClientClosedError,
    ConfigurationError,
    OptimizationRequest,
    ProtocolError,
    QAPair,
    RequestValidationError,
    RetryPolicy,
    SubmitOutcomeUnknownError,
    TaskResult,
)
from spo_async._convert import task_to_wire
from spo_async._sansio import HTTPResponse, parse_task_response, quote_task_id
from spo_async._settings import API_KEY_ENV_VARS, resolve_api_key
from spo_async.testing import Emulator

BAD_KEYS = {
    "NUL": "sk-abc\x00def",
    "newline inside": "sk-abc\ndef",
    "tab inside": "sk-abc\tdef",
    "DEL": "sk-abc\x7fdef",
    "C1 control": "sk-abc\x9bdef",
    "no-break space": "sk-abc\u00a0def",
    "zero-width space": "sk-abc\u200bdef",
    "bidi override": "sk-abc\u202edef",
    "accented letter": "sk-abcédef",
    "lone surrogate": "sk-abc\ud800def",
    "emoji": "sk-abc🔑def",
}


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=list(BAD_KEYS))
def test_a_key_that_is_not_printable_ascii_is_refused_at_construction(key: str) -> None:
    """Such a key would fail every call later; it is refused at once, and never echoed."""
    with pytest.raises(ConfigurationError) as caught:
        AsyncSPOClient(api_key=key, base_url="http://127.0.0.1:1")
    text = str(caught.value) + repr(caught.value)
    assert "abc" not in text
    assert "def" not in text


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=list(BAD_KEYS))
def test_a_bad_key_from_the_environment_is_refused_too(key: str) -> None:
    """The environment variables go through the same check."""
    with pytest.raises(ConfigurationError) as caught:
        resolve_api_key(None, {API_KEY_ENV_VARS[0]: key})
    assert "abc" not in str(caught.value)


def refusal(key: str) -> str:
    with pytest.raises(ConfigurationError) as caught:
        resolve_api_key(key, {})
    return str(caught.value)


#: Every message a refused key can get: none of them depends on the key.
KEY_REFUSALS = {refusal(""), refusal("a b"), refusal("sk-é")}


@given(st.text(max_size=40))
def test_resolve_api_key_returns_printable_ascii_or_a_configuration_error(key: str) -> None:
    """Any text is either a key made of printable ASCII or a ConfigurationError
    whose message is one of a few fixed ones (so the key is never echoed)."""
    if all(0x21 <= ord(ch) <= 0x7E for ch in key.strip()) and key.strip():
        assert resolve_api_key(key, {}) == key.strip()
    else:
        assert refusal(key) in KEY_REFUSALS


BAD_TASK_IDS = {
    "lone high surrogate": "spo-\ud800",
    "lone low surrogate": "spo-\udc00",
    "C1 control": "spo-\x9b31m",
    "NEL": "spo\x85x",
    "bidi override": "spo-\u202e1",
    "line separator": "spo\u2028x",
    "byte order mark": "\ufeffspo-1",
    "tag characters": "spo-\U000e0041",
}


@pytest.mark.parametrize("task_id", BAD_TASK_IDS.values(), ids=list(BAD_TASK_IDS))
async def test_a_task_id_that_cannot_travel_is_refused_before_any_request(
    emu: Emulator, task_id: str
) -> None:
    """Unencodable or invisible characters in a task id: RequestValidationError, nothing sent."""
    async with AsyncSPOClient(api_key=emu.api_key, base_url=emu.base_url) as client:
        with pytest.raises(RequestValidationError) as waiting:
            await client.wait_for_result(task_id)
        with pytest.raises(RequestValidationError) as getting:
            await client.get_task(task_id)
    for error in (waiting.value, getting.value):
        assert error.field == "task_id"
        str(error).encode("utf-8")  # the message itself can be printed anywhere
    assert emu.request_log == []


@given(st.text(max_size=20))
def test_quote_task_id_returns_ascii_or_a_request_validation_error(task_id: str) -> None:
    """Any text is either a percent-encoded ASCII path segment or a typed refusal."""
    try:
        quoted = quote_task_id(task_id)
    except RequestValidationError as exc:
        str(exc).encode("utf-8")
    else:
        assert quoted.isascii()
        assert "/" not in quoted


# -- ids from the service ------------------------------------------------------------------------


@pytest.fixture
async def submit_answer() -> AsyncIterator[tuple[str, Callable[[bytes], None]]]:
    """A server whose submit answers with whatever body the test sets."""
    answer = [b"{}"]

    async def submit(_: web.Request) -> web.Response:
        return web.Response(body=answer[0], content_type="application/json")

    app = web.Application()
    app.router.add_post("/302/prompt/spo/submit", submit)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]

    def set_answer(body: bytes) -> None:
        answer[0] = body

    yield f"http://{host}:{port}", set_answer
    await runner.cleanup()


UNUSABLE_IDS = {
    "lone surrogate": (b'{"task_id": "spo-\\ud800"}', "spo-\\ud800"),
    "C1 control": (b'{"task_id": "spo-\\u009b1"}', "spo-\\x9b1"),
    "bidi override": (b'{"task_id": "spo-\\u202e1"}', "spo-\\u202e1"),
    "CR LF": (b'{"task_id": "spo-1\\r\\nX: y"}', "spo-1\\x0d\\x0aX: y"),
    "slash": (b'{"task_id": "spo/1"}', "spo/1"),
    "a number": (b'{"task_id": 12345}', "12345"),
}


@pytest.mark.parametrize(("body", "kept"), UNUSABLE_IDS.values(), ids=list(UNUSABLE_IDS))
async def test_an_unusable_id_from_the_service_is_kept_printable_on_a_typed_error(
    submit_answer: tuple[str, Callable[[bytes], None]], body: bytes, kept: str
) -> None:
    """The task exists and is billed: the submit fails typed, keeping the id, printably."""
    base_url, set_answer = submit_answer
    set_answer(body)
    async with AsyncSPOClient(
        api_key="sk-test", base_url=base_url, retry=RetryPolicy.no_wait()
    ) as client:
        with pytest.raises(SubmitOutcomeUnknownError) as caught:
            await client.submit(
                OptimizationRequest(prompt="p", qa=[QAPair("q", "a")], model="gpt-4o")
            )
    error = caught.value
    assert error.task_id == kept
    assert isinstance(error.__cause__, ProtocolError)
    assert error.__cause__.task_id == kept
    for text in (str(error), repr(error), str(error.__cause__), error.task_id):
        text.encode("utf-8")
    assert kept in str(error.__cause__)
    assert pickle.loads(pickle.dumps(error)).task_id == kept  # noqa: S301 - our own bytes


def test_a_lone_surrogate_in_a_task_answer_becomes_a_replacement_character() -> None:
    """Half a surrogate pair in the service's text cannot break a file, a journal or --json."""
    body = (
        b'{"status": "success", "best_prompt": "cut \\ud83d", "round_data_list": ['
        b'{"round": 1, "prompt": "\\udc00x \\ud83d\\ude00", "success": true, "sample": []}]}'
    )
    result = parse_task_response(HTTPResponse(200, {}, body), "t")
    assert result.best_prompt == "cut \ufffd"
    assert result.rounds[0].prompt == "\ufffdx 😀"
    json.dumps(task_to_wire(result), ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("prompt", {"prompt": "act \ud800"}),
        ("qa[0].question", {"qa": [{"question": "q \udfff", "answer": "a"}]}),
        ("model", {"model": "gpt-\ud800"}),
        ("requirements", {"requirements": "be \udc00 kind"}),
    ],
)
def test_text_that_cannot_be_encoded_is_refused_when_the_request_is_made(
    field: str, changes: dict[str, Any]
) -> None:
    """A lone surrogate in a request names its field, before the request even exists."""
    fields: dict[str, Any] = {"prompt": "p", "qa": [QAPair("q", "a")], "model": "gpt-4o"}
    with pytest.raises(RequestValidationError) as caught:
        OptimizationRequest(**{**fields, **changes})
    assert caught.value.field == field


@pytest.mark.parametrize(
    "url",
    [
        "https://api.302.ai/\r\nX: y",
        "https://api\x00.302.ai",
        "https://api.302.ai/\ud800",
        "\x1b[2J",
    ],
)
def test_a_base_url_with_control_or_unencodable_characters_is_refused(url: str) -> None:
    """The base URL is checked like the key: typed, at construction, not echoed."""
    with pytest.raises(ConfigurationError) as caught:
        AsyncSPOClient(api_key="sk-test", base_url=url)
    assert url not in str(caught.value)


async def test_a_closed_session_of_the_caller_is_a_typed_error(emu: Emulator) -> None:
    """A session its owner already closed gives ClientClosedError, not aiohttp's RuntimeError."""
    session = aiohttp.ClientSession()
    await session.close()
    async with AsyncSPOClient(
        api_key=emu.api_key, base_url=emu.base_url, session=session
    ) as client:
        with pytest.raises(ClientClosedError):
            await client.get_task("spo-1")
        with pytest.raises(ClientClosedError):
            await client.submit(
                OptimizationRequest(prompt="p", qa=[QAPair("q", "a")], model="gpt-4o")
            )
    assert emu.request_log == []


def test_task_results_from_odd_answers_stay_printable_by_escaping() -> None:
    """The CLI's helper makes any parsed field safe for a terminal (a check of the pairing)."""
    from spo_async._redact import printable

    body = b'{"status": "queue", "note": "\\u001b[2J\\u202e"}'
    result: TaskResult = parse_task_response(HTTPResponse(200, {}, body), "t")
    assert printable(result.extra["note"]) == "\\x1b[2J\\u202e"
