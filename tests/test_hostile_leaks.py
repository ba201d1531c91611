"""Key leaks: a server that echoes the Authorization header back never gets the key anywhere.

A small aiohttp.web server in the test reads the key from each request's Authorization
header and sends it back, encoded one way per test (raw, JSON-escaped, percent- or
entity-encoded, upper-cased, as UTF-16...), in every place an answer has: a task id,
prompts, samples, unknown fields, a header, error envelopes, an HTML gateway page, a
truncated body, a failed task's error. The leak detector decodes all of those forms
again (independently of the SDK's redactor) and looks for the key and its pieces in
every exception (chain included), log record, result and file the SDK produced.
"""

from __future__ import annotations

import codecs
import html
import json
import logging
import urllib.parse
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from spo_async import (
    AsyncSPOClient,
    AuthenticationError,
    NotFoundError,
    OptimizationRequest,
    ProtocolError,
    QAPair,
    RateLimitError,
    RequestLimiter,
    RequestTimeoutError,
    RetryPolicy,
    SPOError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
    TaskResult,
    TransientError,
    TransportError,
)
from spo_async._convert import task_to_wire
from spo_async._redact import redactor_for
from spo_async._sansio import HTTPRequest, HTTPResponse
from spo_async.polling import FixedSchedule
from spo_async.testing import Emulator, EmulatorConfig, Fault, FaultKind

from .conftest import exception_texts

SECRET = "sk-LeAk-5d9e0c7b2a61f4"
#: Pieces of the key: a leak of part of it is still a leak.
PIECES = (SECRET, SECRET[3:], SECRET[-12:], SECRET[:12])


def make_request(prompt: str = "Summarize the ticket") -> OptimizationRequest:
    return OptimizationRequest(
        prompt=prompt, qa=[QAPair("Printer on fire", "[severity]")], model="gpt-4o", max_rounds=2
    )


# -- the leak detector -------------------------------------------------------------------------


def _unescape(text: str) -> str:
    """Decode backslash escapes (\\uXXXX, \\xXX, \\/) the way a reader's eye would."""
    raw = text.encode("latin-1", "backslashreplace").replace(b"\\/", b"/")
    with warnings.catch_warnings():  # "invalid escape sequence" for a stray backslash
        warnings.simplefilter("ignore", DeprecationWarning)
        return codecs.decode(raw, "unicode_escape", "ignore")


def views(text: str) -> Iterator[str]:
    """``text`` and every decoding of it a human or a tool could apply, twice over."""
    seen = {text}
    pending = [text]
    for _ in range(3):
        decoded = []
        for item in pending:
            for view in (
                item.replace("\x00", ""),
                _unescape(item),
                urllib.parse.unquote(item),
                html.unescape(item),
            ):
                if view not in seen:
                    seen.add(view)
                    decoded.append(view)
        pending = decoded
    for view in seen:
        yield view.lower()


def leaks(text: str) -> list[str]:
    return sorted({p for view in views(text) for p in PIECES if p.lower() in view})


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its ``__cause__``/``__context__`` chain and the exceptions it holds."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        error = pending.pop()
        if id(error) not in seen:
            seen.add(id(error))
            yield error
            pending += [e for e in (error.__cause__, error.__context__) if e is not None]
            pending += [v for v in vars(error).values() if isinstance(v, BaseException)]


def written(root: Path) -> dict[str, str]:
    """Every file under ``root``, by name, decoded leniently."""
    return {
        p.name: p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file()
    }


class Collector(logging.Handler):
    """Every record of the SDK's logger, formatted as a user's handler would print it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts += [self.format(record), repr(record.args), repr(vars(record))]


@pytest.fixture
def records(tmp_path: Path) -> Iterator[Collector]:
    """Every SDK record at DEBUG, kept in memory and written to a file in ``tmp_path``."""
    logger = logging.getLogger("spo_async")
    collector = Collector()
    to_file = logging.FileHandler(tmp_path / "spo_async.log", encoding="utf-8")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(collector)
    logger.addHandler(to_file)
    yield collector
    logger.removeHandler(collector)
    logger.removeHandler(to_file)
    to_file.close()
    logger.setLevel(level)


# -- the echoing server ------------------------------------------------------------------------


def _json_escaped(key: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in key)


#: How the server writes the key it received. Each value maps the key to what goes
#: inside a JSON string (so JSON escapes are written as they are, not escaped again).
ECHOES: dict[str, Callable[[str], str]] = {
    "raw": lambda key: key,
    "whole header": lambda key: f"Bearer {key}",
    "json-escaped": _json_escaped,
    "json-escaped upper hex": lambda key: _json_escaped(key).upper().replace("\\U", "\\u"),
    "json-escaped in part": lambda key: key[:2] + _json_escaped(key[2:5]) + key[5:],
    "escaped twice": lambda key: _json_escaped(key).replace("\\", "\\\\"),
    "x-escaped": lambda key: "".join(f"\\\\x{ord(c):02x}" for c in key),
    "percent-encoded": lambda key: "".join(f"%{ord(c):02X}" for c in key),
    "html decimal": lambda key: "".join(f"&#{ord(c)};" for c in key),
    "html hex, no semicolon": lambda key: "".join(f"&#x{ord(c):x}" for c in key),
    "upper-cased": str.upper,
}


def _body(value: Any, echo: str) -> bytes:
    """``value`` as JSON, with every ``"ECHO"`` placeholder string written as ``echo``."""
    return json.dumps(value).replace("ECHO", echo).encode()


def _key(request: web.Request) -> str:
    return request.headers.get("Authorization", "").partition(" ")[2]


def task_body() -> dict[str, Any]:
    """A successful task with the echo in every text and in unknown fields."""
    return {
        "status": "success",
        "best_prompt": "better ECHO",
        "best_round": 2,
        "echo": "ECHO",
        "ECHO": 1,
        "round_data_list": [
            {"round": 1, "prompt": "ECHO", "success": True, "sample": []},
            {
                "round": 2,
                "prompt": "better ECHO",
                "success": True,
                "sample": [{"question": "ECHO?", "answer": "ECHO!", "trace": "ECHO"}],
                "note": "ECHO",
            },
        ],
    }


def scenario(name: str, echo: str) -> web.Response:
    """The answer the server gives to a query for the task named ``name``."""
    envelope = {"error": {"err_code": -99999, "message": "bad key ECHO", "message_cn": "ECHO"}}
    headers = {"X-Echo": echo, "X-ECHO-Name": "ok"} if echo.isascii() else {}
    if name == "ok":
        return web.Response(body=_body(task_body(), echo), headers=headers)
    if name == "auth":
        body = {"error": {"err_code": -10001, "message": "unknown key ECHO"}}
        return web.Response(status=401, body=_body(body, echo))
    if name == "limited":
        return web.Response(status=429, body=_body(envelope, echo), headers=headers)
    if name == "gateway":
        page = f"<html><body><h1>502</h1><pre>Authorization: Bearer {echo}</pre></body></html>"
        return web.Response(status=502, text=page, content_type="text/html")
    if name == "truncated":  # cut in the middle of the echoed key
        text = json.dumps({"status": "processing", "prompt": "ECHO"})
        cut = text.index("ECHO") + len(echo) // 2
        return web.Response(body=text.replace("ECHO", echo)[:cut].encode())
    if name == "failed":
        return web.Response(body=_body({"status": "fail", "error": {"message": "ECHO"}}, echo))
    if name == "strange":
        return web.Response(body=_body({"status": "ECHO"}, echo))
    if name == "mistyped":
        return web.Response(body=_body({"status": "queue", "round_data_list": [{"ECHO": 1}]}, echo))
    return web.Response(status=404, body=_body(envelope, echo))


@attrs.define
class EchoServer:
    """Where the echoing server listens, and how it encodes the key."""

    base_url: str = ""
    encode: Callable[[str], str] = str


@pytest.fixture
async def echo_server() -> AsyncIterator[EchoServer]:
    server = EchoServer()

    async def submit(request: web.Request) -> web.Response:
        echo = server.encode(_key(request))
        return web.Response(body=_body({"task_id": "ok-ECHO"}, echo))

    async def task(request: web.Request) -> web.Response:
        name = request.match_info["task_id"].split("-")[0]
        return scenario(name, server.encode(_key(request)))

    app = web.Application()
    app.router.add_post("/302/prompt/spo/submit", submit)
    app.router.add_get("/302/prompt/spo/tasks/{task_id}", task)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.base_url = f"http://{host}:{port}"
    yield server
    await runner.cleanup()


def client_for(base_url: str, **options: Any) -> AsyncSPOClient:
    settings: dict[str, Any] = {
        "api_key": SECRET,
        "base_url": base_url,
        "retry": RetryPolicy.no_wait(attempts=2),
        "schedule": FixedSchedule(interval=0.0),
        "request_timeout": 5.0,
        # A 429 slows the client's later requests down (in real time): not here.
        "limiter": RequestLimiter(min_rate=100_000.0),
    }
    return AsyncSPOClient(**{**settings, **options})


EXPECTED = {
    "auth": AuthenticationError,
    "limited": RateLimitError,
    "gateway": TransientError,
    "truncated": ProtocolError,
    "failed": TaskFailedError,
    "strange": ProtocolError,
    "mistyped": ProtocolError,
    "gone": NotFoundError,
}


@pytest.mark.parametrize("form", list(ECHOES))
async def test_an_echoed_key_reaches_no_model_error_log_or_file(
    form: str, echo_server: EchoServer, records: Collector, tmp_path: Path
) -> None:
    """Whatever form the echo takes, no result, error, log line or file holds the key."""
    echo_server.encode = ECHOES[form]
    found: list[str] = []
    errors: list[BaseException] = []
    async with client_for(echo_server.base_url, strict_status=True) as client:
        result = await client.optimize(make_request(), timeout=10)
        task = await client.get_task(result.task_id)
        for name, expected in EXPECTED.items():
            with pytest.raises(expected) as caught:
                await client.wait_for_result(f"{name}-1", timeout=10)
            errors.append(caught.value)

    assert result.succeeded
    assert result.best_prompt is not None
    assert result.best_prompt.startswith("better ")
    assert result.task_id.startswith("ok-")
    for snapshot in (result, task):
        found += leaks(json.dumps(task_to_wire(snapshot), ensure_ascii=False))
        found += leaks(repr(snapshot))
    for error in errors:
        found += [needle for text in exception_texts(error) for needle in leaks(text)]
        assert not [e for e in chain(error) if type(e).__module__.startswith("aiohttp")]
    found += [needle for text in records.texts for needle in leaks(text)]
    found += [needle for text in written(tmp_path).values() for needle in leaks(text)]
    assert found == []
    assert len(records.texts) > 20  # the calls above did log


async def test_a_key_echoed_as_utf16_json_never_becomes_text(echo_server: EchoServer) -> None:
    """A body in UTF-16 (which json.loads would guess and read) is refused, key unseen."""
    echo_server.encode = str

    async def utf16(request: web.Request) -> web.Response:
        body = json.dumps({"status": "success", "best_prompt": _key(request)})
        return web.Response(body=body.encode("utf-16"), content_type="application/json")

    app = web.Application()
    app.router.add_get("/302/prompt/spo/tasks/{task_id}", utf16)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        async with client_for(f"http://{host}:{port}") as client:
            with pytest.raises(ProtocolError) as caught:
                await client.get_task("t-1")
    finally:
        await runner.cleanup()
    assert not [n for text in exception_texts(caught.value) for n in leaks(text)]


async def test_a_key_echoed_into_a_huge_answer_withholds_the_answer(
    echo_server: EchoServer,
) -> None:
    """An encoded key inside a large answer makes it withheld whole, not read."""

    async def big(request: web.Request) -> web.Response:
        body = {"status": "processing", "pad": "x" * 1_000_000, "k": _json_escaped(_key(request))}
        return web.Response(body=json.dumps(body).replace("\\\\", "\\").encode())

    app = web.Application()
    app.router.add_get("/302/prompt/spo/tasks/{task_id}", big)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        async with client_for(f"http://{host}:{port}") as client:
            with pytest.raises(ProtocolError) as caught:
                await client.get_task("t-1")
    finally:
        await runner.cleanup()
    assert "withheld" in caught.value.body
    assert not [n for text in exception_texts(caught.value) for n in leaks(text)]


async def test_a_batch_journal_holds_no_echoed_key(
    echo_server: EchoServer, records: Collector, tmp_path: Path
) -> None:
    """The journal a batch writes keeps results and errors without the echoed key."""
    echo_server.encode = ECHOES["json-escaped in part"]
    async with client_for(echo_server.base_url) as client:
        outcomes = await client.optimize_all(
            [make_request(f"batch {i}") for i in range(3)], journal=tmp_path / "batch.journal"
        )
    assert len(outcomes) == 3
    files = written(tmp_path)
    assert any(name.startswith("batch.journal") for name in files)
    for name, text in files.items():
        assert leaks(text) == [], name
    assert not [text for outcome in outcomes for text in [repr(outcome)] if leaks(text)]


# -- a caller's session that raises for status -------------------------------------------------


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    """An emulator that accepts only the secret key."""
    return EmulatorConfig(api_keys=frozenset({SECRET}), round_seconds=0.002, seed=3)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault(FaultKind.ERROR_ENVELOPE, err_code=-10001, status=401), AuthenticationError),
        (Fault(FaultKind.STATUS, status=401, body=""), AuthenticationError),
        (Fault(FaultKind.RATE_LIMIT, retry_after=3600), RateLimitError),
        (Fault(FaultKind.STATUS, status=404, body="{}"), NotFoundError),
    ],
    ids=["401-envelope", "401-empty", "429", "404"],
)
async def test_a_session_that_raises_for_status_gives_the_same_typed_answers(
    emu: Emulator, fault: Fault, expected: type[SPOError]
) -> None:
    """With the caller's session(raise_for_status=True), a 401 or 429 on submit is that
    error, not a false "outcome unknown", and nothing is resubmitted."""
    emu.inject(attrs.evolve(fault, endpoint="submit"))
    async with (
        aiohttp.ClientSession(raise_for_status=True) as session,
        client_for(emu.base_url, session=session) as client,
    ):
        with pytest.raises(expected) as caught:
            await client.submit(make_request())
    assert not isinstance(caught.value, SubmitOutcomeUnknownError)
    assert not [e for e in chain(caught.value) if type(e).__module__.startswith("aiohttp")]
    assert emu.tasks_created == 0


# -- transport errors carry no aiohttp exception -----------------------------------------------


TRANSPORT_FAULTS = {
    "dropped before": (Fault(FaultKind.DROP_BEFORE), TransportError),
    "dropped after": (Fault(FaultKind.DROP_AFTER), TransportError),
    "too slow": (Fault(FaultKind.DELAY, delay=2.0), RequestTimeoutError),
}


@pytest.mark.parametrize("kind", list(TRANSPORT_FAULTS))
async def test_transport_errors_chain_no_aiohttp_exception(
    emu: Emulator, kind: str, records: Collector
) -> None:
    """A transport failure leaves no aiohttp exception (which holds the request's headers)
    anywhere in the error's chain, for a read and for a submit."""
    fault, expected = TRANSPORT_FAULTS[kind]
    emu.inject(fault)
    async with client_for(emu.base_url, request_timeout=0.05) as client:
        with pytest.raises(expected) as read:
            await client.get_task("spo-anything")
        with pytest.raises(SubmitOutcomeUnknownError) as submit:
            await client.submit(make_request())
    for error in (read.value, submit.value):
        assert not [e for e in chain(error) if type(e).__module__.startswith("aiohttp")]
        assert not [n for text in exception_texts(error) for n in leaks(text)]
    assert isinstance(submit.value.__cause__, expected)


async def test_a_refused_connection_chains_no_aiohttp_exception(unused_tcp_port: int) -> None:
    """TransportError carries the OS's reason as text only."""
    async with client_for(f"http://127.0.0.1:{unused_tcp_port}") as client:
        with pytest.raises(TransportError) as caught:
            await client.get_task("spo-1")
    assert caught.value.__context__ is None
    assert caught.value.__cause__ is None
    assert "cannot connect" in str(caught.value)


async def test_a_body_cut_short_chains_no_aiohttp_exception() -> None:
    """An answer shorter than its Content-Length is a TransportError, chain clean."""

    async def short(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b'{"status": "proc')
        assert request.transport is not None
        request.transport.close()
        return response

    app = web.Application()
    app.router.add_get("/302/prompt/spo/tasks/{task_id}", short)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        async with client_for(f"http://{host}:{port}") as client:
            with pytest.raises(TransportError) as caught:
                await client.get_task("t-1")
    finally:
        await runner.cleanup()
    assert not [e for e in chain(caught.value) if type(e).__module__.startswith("aiohttp")]


def test_snapshots_of_a_leak_free_run_are_plain_results() -> None:
    """The detector itself sees every form the server can send (a check of the check)."""
    for form, encode in ECHOES.items():
        assert leaks(encode(SECRET)), form
    assert leaks("\x00".join(SECRET))
    assert not leaks(TaskResult.__doc__ or "")


# -- any key, any mix of forms -------------------------------------------------------------

#: How one character may be written; a leaked key may mix them freely.
CHARACTER_FORMS: list[Callable[[str], str]] = [
    lambda c: c,
    str.upper,
    lambda c: f"\\u{ord(c):04x}",
    lambda c: f"\\u{ord(c):04X}",
    lambda c: f"\\\\u{ord(c):04x}",
    lambda c: f"\\x{ord(c):02x}",
    lambda c: f"%{ord(c):02x}",
    lambda c: f"%{ord(c):02X}",
    lambda c: f"&#{ord(c)};",
    lambda c: f"&#{ord(c):05d};",
    lambda c: f"&#x{ord(c):x};",
    lambda c: f"&#X{ord(c):X}",
]

printable_ascii = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


@settings(max_examples=300, deadline=None)
@given(
    key=st.text(printable_ascii, min_size=12, max_size=60),
    forms=st.lists(st.sampled_from(range(len(CHARACTER_FORMS))), min_size=60, max_size=60),
    before=st.text(max_size=24),
    after=st.text(max_size=24),
)
def test_any_key_in_any_mix_of_forms_is_taken_out(
    key: str, forms: list[int], before: str, after: str
) -> None:
    """Whatever the key and however each of its characters is written, no decoding of
    what the redactor returns shows it again, in bytes or in text."""
    encoded = "".join(CHARACTER_FORMS[form](ch) for form, ch in zip(forms, key, strict=False))
    redactor = redactor_for([key])
    assert redactor is not None
    as_bytes = redactor.data(f"{before}{encoded}{after}".encode("utf-8", "surrogatepass"))
    as_text = redactor.text(f"{before}{encoded}{after}")
    for out in (as_bytes.decode("utf-8", "replace"), as_text):
        assert not [view for view in views(out) if key.lower() in view]


def test_a_reference_without_its_semicolon_does_not_hide_a_key_of_digits() -> None:
    """``&#X30`` before ``000`` decodes to one character (U+30000), but it was the key's first.

    Read without decoding references, the reference's own ``0`` and the digits after
    it show the key: bytes were let through because the decoded view did not hold it.
    """
    key = "000000000000"
    body = "1&#X30000\\u00300000000" + "1"
    redactor = redactor_for([key])
    assert redactor is not None
    assert redactor.data(body.encode()) == b"1<redacted>1"
    assert redactor.text(body) == "1<redacted>1"


class EchoingTransport:
    """A user's own Transport, careless with the request it failed to send."""

    async def send(self, request: HTTPRequest, *, timeout: float) -> HTTPResponse:
        """Fail with an error that quotes the headers, chained to one that holds them."""
        try:
            raise ValueError(dict(request.headers))
        except ValueError as exc:
            raise TransportError(f"could not send {request.headers}") from exc

    async def aclose(self) -> None:
        """Nothing to release."""


async def test_errors_from_a_users_transport_are_scrubbed_chain_included() -> None:
    """The client takes the key out of a transport's error and cuts a foreign link that
    holds it where it cannot be rewritten."""
    async with AsyncSPOClient(
        api_key=SECRET,
        base_url="http://127.0.0.1:9",
        transport=EchoingTransport(),
        retry=RetryPolicy.never(),
    ) as client:
        with pytest.raises(TransportError) as caught:
            await client.get_task("spo-1")
    assert not [n for text in exception_texts(caught.value) for n in leaks(text)]
    assert "<redacted>" in str(caught.value)
