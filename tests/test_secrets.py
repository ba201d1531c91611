"""Secrets and safety: the API key never leaks, task ids cannot escape their URL, TLS stays on.

The leak test drives every error path the emulator can produce with a distinctive key
(and a distinctive wrong one for the authentication error), then greps everything the
SDK produced for either: each exception's str, repr, args, notes and attributes along
its whole ``__cause__``/``__context__`` chain and formatted traceback, every log record,
the reprs of the public objects, and every file written during the test.
"""

from __future__ import annotations

import logging
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiohttp import web
from spo_async import (
    AsyncSPOClient,
    AuthenticationError,
    ConfigurationError,
    OptimizationRequest,
    ProtocolError,
    QAPair,
    RequestValidationError,
    RetryPolicy,
    SPOError,
    TaskFailedError,
    TransportError,
    WaitTimeoutError,
)
from spo_async.polling import FixedSchedule
from spo_async.testing import Emulator, EmulatorConfig, Fault, FaultKind, TaskOutcome
from spo_async.transport import AiohttpTransport

from .conftest import exception_texts, until

SECRET = "sk-SECRET-7f3a9c"
WRONG = "sk-WRONG-4b1d2e"
#: Pieces of the keys: a leak of part of a key is still a leak.
NEEDLES = (SECRET, WRONG, "SECRET-7f3a9c", "WRONG-4b1d2e", "7f3a9c", "4b1d2e")


def make_request(prompt: str = "Act as a careful reviewer") -> OptimizationRequest:
    return OptimizationRequest(
        prompt=prompt,
        qa=[QAPair("Review this diff", "[findings][verdict]")],
        model="gpt-4o",
        max_rounds=3,
    )


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def leaks(text: str) -> list[str]:
    return [needle for needle in NEEDLES if needle in text]


class Collector(logging.Handler):
    """Keeps every record, formatted the way a user's handler would print it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s %(task_id)s")
        )
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not hasattr(record, "task_id"):
            record.task_id = None
        self.texts.append(self.format(record))
        self.texts.append(repr(record.args))
        self.texts.append(repr(vars(record)))


@pytest.fixture
def records(tmp_path: Path) -> Iterator[Collector]:
    """Every record of the 'spo_async' logger at DEBUG, also written to a file in tmp_path."""
    logger = logging.getLogger("spo_async")
    collector = Collector()
    to_file = logging.FileHandler(tmp_path / "spo_async.log", encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(collector)
    logger.addHandler(to_file)
    yield collector
    logger.removeHandler(collector)
    logger.removeHandler(to_file)
    to_file.close()
    logger.setLevel(level)


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    """An emulator that accepts only the secret key, so every call must carry it."""
    return EmulatorConfig(api_keys=frozenset({SECRET}), round_seconds=0.003, seed=9)


SUBMIT_FAULTS = [
    Fault(FaultKind.RATE_LIMIT, retry_after=3600),
    Fault(FaultKind.SERVER_ERROR_HTML),
    Fault(FaultKind.SERVER_ERROR_HTML, status=504, after_work=True),
    Fault(FaultKind.DROP_BEFORE),
    Fault(FaultKind.DROP_AFTER),
    Fault(FaultKind.DELAY, delay=0.5),
    Fault(FaultKind.TRUNCATED_JSON),
    Fault(FaultKind.WRONG_TYPES),
    Fault(FaultKind.EMPTY_BODY),
    Fault(FaultKind.HUGE_FIELD, size=200_000),
    Fault(FaultKind.STATUS, status=418, body="I'm a teapot"),
    *(
        Fault(FaultKind.ERROR_ENVELOPE, err_code=code, status=status)
        for code, status in [
            (-10001, 401), (-10002, 403), (-10003, 500), (-10004, 402), (-10005, 401),
            (-10006, 403), (-10007, 403), (-10008, 503), (-10009, 400), (-10010, 404),
            (-10011, 400), (-10012, 429), (-10018, 403), (-1024, 504), (-99999, 500),
        ]
    ),
]  # fmt: skip

TASK_FAULTS = [
    *SUBMIT_FAULTS,
    Fault(FaultKind.UNKNOWN_STATUS),  # with strict_status: a ProtocolError
]


async def drive_every_error_path(emu: Emulator, base_url: str) -> list[BaseException]:
    """Provoke every error the SDK can raise against the emulator; return them all."""
    errors: list[BaseException] = []

    async def expect(call: Any) -> None:
        try:
            await call
        except SPOError as exc:
            errors.append(exc)
        else:  # pragma: no cover - a path that should have failed
            raise AssertionError(f"{call} did not fail")

    quick = RetryPolicy.no_wait(attempts=2)
    async with AsyncSPOClient(
        api_key=SECRET,
        base_url=base_url,
        retry=quick,
        schedule=FixedSchedule(interval=0.002),
        request_timeout=0.2,
        max_response_bytes=100_000,
        strict_status=True,
    ) as client:
        # A clean run first, so that the success paths log too.
        result = await client.optimize(make_request("clean"), timeout=5)
        task_id = result.task_id

        for fault in SUBMIT_FAULTS:
            emu.inject(attrs.evolve(fault, endpoint="submit", times=2))
            await expect(client.submit(make_request(f"submit {fault.kind.value}")))
            emu.clear_faults()
        for fault in TASK_FAULTS:
            emu.inject(attrs.evolve(fault, endpoint="task", times=2))
            await expect(client.wait_for_result(task_id, timeout=5))
            emu.clear_faults()

        emu.script_next(TaskOutcome(fail_at_round=2, error={"err_code": -1024, "message": "x"}))
        await expect(client.optimize(make_request("fails"), timeout=5))
        emu.script_next(TaskOutcome(round_seconds=10.0))
        await expect(client.optimize(make_request("too slow"), timeout=0.05))
        await expect(client.wait_for_result("spo-no-such-task", timeout=5))
        for bad_id in ["../secret", "a/b", "a\x00b", "", "x" * 300]:
            await expect(client.wait_for_result(bad_id))

        # Three answers in a row that go backwards.
        emu.script_next(TaskOutcome(round_seconds=(0.001, 0.001, 10.0)))
        slow_id = await client.submit(make_request("regress"))
        await until(
            lambda: emu.tasks[slow_id].rounds_done(emu.now()) >= 2,
            what="the two quick rounds, so that there is a round to take back",
        )

        def regress(_: object) -> None:
            emu.inject(Fault(FaultKind.REGRESS, endpoint="task", task_id=slow_id))

        await expect(client.wait_for_result(slow_id, timeout=5, on_event=regress))
        emu.clear_faults()

    await expect(client.submit(make_request("closed")))
    await expect(client.get_task(task_id))

    async with AsyncSPOClient(api_key=WRONG, base_url=base_url, retry=quick) as wrong:
        await expect(wrong.submit(make_request("wrong key")))
        await expect(wrong.get_task(task_id))
        await expect(wrong.wait_for_result(task_id, timeout=5))
    return errors


async def test_the_api_key_never_leaks(
    emu: Emulator, records: Collector, tmp_path: Path, unused_tcp_port: int
) -> None:
    """After every error path, no exception, log record, repr or written file holds a key."""
    errors = await drive_every_error_path(emu, emu.base_url)

    async with AsyncSPOClient(
        api_key=SECRET, base_url=f"http://127.0.0.1:{unused_tcp_port}", retry=RetryPolicy.never()
    ) as client:
        with pytest.raises(TransportError) as refused:
            await client.submit(make_request())
        errors.append(refused.value)
        reprs = [repr(client), str(client), repr(client._core.transport)]
    for options in (
        {"base_url": "ftp://api.302.ai"},
        {"base_url": "http://api.302.ai"},
        {"base_url": "https://user:pw@api.302.ai"},
        {"lang": "de"},
        {"request_timeout": -1},
    ):
        with pytest.raises(ConfigurationError) as bad:
            AsyncSPOClient(api_key=SECRET, **options)
        errors.append(bad.value)

    kinds = {type(e).__name__ for e in errors}
    assert len(errors) >= 60
    assert {
        "AuthenticationError",
        "ClientClosedError",
        "ConfigurationError",
        "TransportError",
        "InsufficientBalanceError",
        "NotFoundError",
        "ProtocolError",
        "RateLimitError",
        "RequestValidationError",
        "SubmitOutcomeUnknownError",
        "TaskFailedError",
        "TransientError",
        "WaitTimeoutError",
    } <= kinds, kinds
    assert any(isinstance(e, AuthenticationError) for e in errors)
    assert any(isinstance(e, TaskFailedError) for e in errors)
    assert any(isinstance(e, ProtocolError) for e in errors)
    assert any(isinstance(e, WaitTimeoutError) for e in errors)

    found: list[tuple[str, str]] = []
    for error in errors:
        found += [(repr(error), needle) for t in exception_texts(error) for needle in leaks(t)]
    found += [(text, needle) for text in records.texts for needle in leaks(text)]
    found += [(text, needle) for text in reprs for needle in leaks(text)]
    written = files_under(tmp_path)
    assert written, "the log file is missing"
    for path in written:
        data = path.read_bytes()
        found += [(str(path), n) for n in NEEDLES if n.encode() in data]
    assert found == []
    assert len(records.texts) > 100  # the paths above did log


async def test_a_batch_journal_never_holds_the_key(
    emu: Emulator, records: Collector, tmp_path: Path
) -> None:
    """The files a batch writes (its journal and lock) hold no trace of the key."""
    emu.inject(
        Fault(FaultKind.DROP_AFTER, endpoint="submit", times=1),
        Fault(FaultKind.ERROR_ENVELOPE, err_code=-10004, status=402, endpoint="submit", times=1),
        Fault(FaultKind.SERVER_ERROR_HTML, endpoint="task", probability=0.3),
    )
    emu.script_next(TaskOutcome(), TaskOutcome(), TaskOutcome(fail_at_round=2))
    async with AsyncSPOClient(
        api_key=SECRET,
        base_url=emu.base_url,
        retry=RetryPolicy.no_wait(),
        schedule=FixedSchedule(interval=0.002),
    ) as client:
        outcomes = await client.optimize_all(
            [make_request(f"batch {i}") for i in range(8)],
            journal=tmp_path / "batch.journal",
            timeout=10,
        )
    assert len(outcomes) == 8
    written = files_under(tmp_path)
    assert any(p.name.startswith("batch.journal") for p in written)
    for path in written:
        data = path.read_bytes()
        assert not [n for n in NEEDLES if n.encode() in data], path
    for outcome in outcomes:
        assert not leaks(repr(outcome))
    assert not [t for t in records.texts if leaks(t)]


def test_a_key_pasted_into_the_base_url_is_not_echoed() -> None:
    """A base URL refused for its query string is not repeated, key and all, in the error."""
    with pytest.raises(ConfigurationError) as info:
        AsyncSPOClient(api_key=SECRET, base_url=f"https://api.302.ai/?api_key={SECRET}")
    assert not leaks("".join(exception_texts(info.value)))


# -- task ids ----------------------------------------------------------------------------

BAD_TASK_IDS = {
    "empty": "",
    "slash": "spo-1/../../submit",
    "dot-dot": "..",
    "dot": ".",
    "backslash": "spo\\1",
    "query": "spo-1?x=1",
    "fragment": "spo-1#x",
    "NUL": "spo\x00",
    "newline": "spo-1\r\nX-Injected: 1",
    "tab": "spo\t1",
    "DEL": "spo\x7f",
    "surrounding spaces": " spo-1 ",
    "too long": "x" * 257,
}


@pytest.mark.parametrize("task_id", BAD_TASK_IDS.values(), ids=list(BAD_TASK_IDS))
async def test_bad_task_ids_are_refused_before_any_request(emu: Emulator, task_id: str) -> None:
    """A task id that could escape its URL path raises RequestValidationError; nothing is sent."""
    async with AsyncSPOClient(api_key=SECRET, base_url=emu.base_url) as client:
        with pytest.raises(RequestValidationError) as waiting:
            await client.wait_for_result(task_id)
        with pytest.raises(RequestValidationError):
            await client.get_task(task_id)
    assert waiting.value.field == "task_id"
    assert emu.request_log == []
    assert not emu.task_gets


@pytest.mark.parametrize("task_id", ["spo id+%20", "задача-1", "a;b,c=d", "~tilde"])
async def test_unusual_task_ids_are_percent_encoded(emu: Emulator, task_id: str) -> None:
    """A legal but unusual task id travels percent-encoded and arrives intact."""
    async with AsyncSPOClient(api_key=SECRET, base_url=emu.base_url) as client:
        with pytest.raises(SPOError):  # the emulator does not know it
            await client.get_task(task_id)
    assert dict(emu.task_gets) == {task_id: 1}
    (record,) = emu.request_log
    assert record.path.startswith("/302/prompt/spo/tasks/")
    assert record.status == 404


def test_non_string_task_id_is_refused() -> None:
    """A task id that is not a string is a RequestValidationError, not a TypeError later."""
    from spo_async._sansio import quote_task_id

    with pytest.raises(RequestValidationError):
        quote_task_id(12345)  # type: ignore[arg-type]


# -- plain HTTP and TLS -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://api.302.ai", "http://10.0.0.5:8080", "http://example.com/proxy"]
)
def test_plain_http_to_a_remote_host_is_refused(url: str) -> None:
    """http:// to anything but loopback is refused: the key would travel in clear text."""
    with pytest.raises(ConfigurationError, match="allow_insecure_http"):
        AsyncSPOClient(api_key=SECRET, base_url=url)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8302", "http://localhost:8302", "http://[::1]:8302", "http://127.5.0.1"],
)
async def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    """Loopback (the emulator, a local proxy) may use plain http://."""
    async with AsyncSPOClient(api_key=SECRET, base_url=url) as client:
        assert client.base_url == url


async def test_allow_insecure_http_opts_in() -> None:
    """allow_insecure_http=True accepts a remote plain-http base URL."""
    async with AsyncSPOClient(
        api_key=SECRET, base_url="http://api.302.ai", allow_insecure_http=True
    ) as client:
        assert client.base_url == "http://api.302.ai"


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate, and a client context trusting it."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(  # noqa: S603
        [  # noqa: S607
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


@pytest.fixture
async def https_server(
    self_signed: tuple[ssl.SSLContext, ssl.SSLContext],
) -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response(
            {
                "status": "success",
                "best_prompt": "p",
                "best_round": 1,
                "round_data_list": [{"round": 1, "prompt": "p", "success": True, "sample": []}],
            }
        )

    app = web.Application()
    app.router.add_get("/302/prompt/spo/tasks/{task_id}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self_signed[0])
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"https://{host}:{port}", seen
    await runner.cleanup()


async def test_tls_certificates_are_verified_by_default(
    https_server: tuple[str, list[str]], self_signed: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """An untrusted certificate is refused before the request (and its key) is sent."""
    base_url, seen = https_server
    async with AsyncSPOClient(api_key=SECRET, base_url=base_url) as client:
        with pytest.raises(TransportError) as info:
            await client.get_task("spo-1")
    assert "certificate" in str(info.value).lower()
    assert not leaks("".join(exception_texts(info.value)))
    assert seen == []

    trusting = AiohttpTransport(verify_ssl=self_signed[1])
    async with AsyncSPOClient(api_key=SECRET, base_url=base_url, transport=trusting) as client:
        result = await client.get_task("spo-1")
    assert result.succeeded
    assert seen == ["/302/prompt/spo/tasks/spo-1"]
