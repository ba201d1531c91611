"""The error tree: every class's place in it, and what each error carries and says.

Only the public classes are named here: the narrower transport, protocol and API
classes are being merged into their bases (``TransportError`` with
``request_sent``, ``ProtocolError``, ``AuthenticationError``,
``InvalidRequestError``), so what they carry is checked through the base class.
"""

from __future__ import annotations

import socket

import pytest
from spo_async import (
    APIError,
    AsyncSPOClient,
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    FailureReason,
    InsufficientBalanceError,
    InvalidRequestError,
    JournalError,
    NotFoundError,
    OptimizationRequest,
    ProtocolError,
    QAPair,
    QuotaExceededError,
    RateLimitError,
    RequestTimeoutError,
    RequestValidationError,
    RetryPolicy,
    SPOError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
    TaskResult,
    TaskStatus,
    TransientError,
    TransportError,
    WaitTimeoutError,
)
from spo_async._errors import BODY_SNIPPET_LIMIT, body_snippet
from spo_async.testing import Emulator, Fault, FaultKind

from .conftest import ClientFactory, make_request

#: Each class and its parent in the tree drawn in ``_errors.py``'s docstring.
TREE: list[tuple[type[BaseException], type[BaseException]]] = [
    (ConfigurationError, SPOError),
    (ConfigurationError, ValueError),
    (RequestValidationError, SPOError),
    (RequestValidationError, ValueError),
    (ClientClosedError, SPOError),
    (ClientClosedError, RuntimeError),
    (TransportError, SPOError),
    (RequestTimeoutError, TransportError),
    (RequestTimeoutError, TimeoutError),
    (ProtocolError, SPOError),
    (APIError, SPOError),
    (AuthenticationError, APIError),
    (InsufficientBalanceError, APIError),
    (QuotaExceededError, APIError),
    (NotFoundError, APIError),
    (InvalidRequestError, APIError),
    (RateLimitError, APIError),
    (TransientError, APIError),
    (SubmitOutcomeUnknownError, SPOError),
    (TaskFailedError, SPOError),
    (WaitTimeoutError, SPOError),
    (WaitTimeoutError, TimeoutError),
    (JournalError, SPOError),
]


@pytest.mark.parametrize(
    ("cls", "parent"), TREE, ids=[f"{c.__name__}<{p.__name__}" for c, p in TREE]
)
def test_each_error_sits_where_the_tree_says(
    cls: type[BaseException], parent: type[BaseException]
) -> None:
    """Catching the parent catches the class."""
    assert issubclass(cls, parent)


def test_only_rate_limit_and_transient_api_errors_are_retryable() -> None:
    """``retryable`` is true exactly for the passing API failures."""
    api_errors = [APIError] + [c for c, p in TREE if p is APIError and issubclass(c, APIError)]
    assert len(api_errors) == 8
    retryable = {cls for cls in api_errors if cls("m", status=500).retryable}
    assert retryable == {RateLimitError, TransientError}


TRANSPORT_SENT: list[tuple[TransportError, bool]] = [
    (TransportError("reset"), True),
    (RequestTimeoutError("slow"), True),
    (RequestTimeoutError("slow", request_sent=False), False),
]


@pytest.mark.parametrize(
    ("error", "sent"), TRANSPORT_SENT, ids=["transport", "timeout", "connect-timeout"]
)
def test_transport_errors_say_whether_the_request_may_have_left(
    error: TransportError, sent: bool
) -> None:
    """A transport error assumes the request may have left, unless it is known it never did."""
    assert error.request_sent is sent


async def test_a_refused_connection_is_a_transport_error_that_never_left() -> None:
    """Connection refused proves nothing was sent: its TransportError has ``request_sent=False``."""
    with socket.socket() as sock:  # bound, never listening: connecting to it is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        async with AsyncSPOClient(
            api_key="sk-test", base_url=f"http://127.0.0.1:{port}", retry=RetryPolicy.never()
        ) as client:
            with pytest.raises(TransportError) as info:
                await client.get_task("t-1")
    assert info.value.request_sent is False
    assert (info.value.method, info.value.path) == ("GET", "/302/prompt/spo/tasks/t-1")


async def test_a_connection_lost_after_sending_is_a_transport_error_that_may_have_left(
    emu: Emulator, client: AsyncSPOClient
) -> None:
    """A connection that breaks after the request went out says ``request_sent=True``."""
    emu.inject(Fault(FaultKind.DROP_BEFORE, endpoint="task", times=1))
    with pytest.raises(TransportError) as info:
        await client.get_task("t-1")
    assert info.value.request_sent is True


def test_transport_error_names_the_call_not_the_url() -> None:
    """A transport error keeps method and path (never the full URL with its host)."""
    error = TransportError("refused", method="POST", path="/302/prompt/spo/submit")
    assert (error.method, error.path, str(error)) == ("POST", "/302/prompt/spo/submit", "refused")


OVER = BODY_SNIPPET_LIMIT + 5
SNIPPETS: list[tuple[str, bytes, str]] = [
    ("empty", b"", ""),
    ("short", b"<html>", "<html>"),
    ("bad-utf8", b"a\xffb", "a\ufffdb"),
    ("at-limit", b"x" * BODY_SNIPPET_LIMIT, "x" * BODY_SNIPPET_LIMIT),
    (
        "over-limit",
        b"x" * (BODY_SNIPPET_LIMIT + 5),
        "x" * BODY_SNIPPET_LIMIT + "... [5 more bytes]",
    ),
]


@pytest.mark.parametrize(("body", "text"), [s[1:] for s in SNIPPETS], ids=[s[0] for s in SNIPPETS])
def test_body_snippet_keeps_the_start_and_never_fails(body: bytes, text: str) -> None:
    """Bodies are decoded leniently and cut at BODY_SNIPPET_LIMIT bytes."""
    assert body_snippet(body) == text


async def test_an_answer_over_the_size_limit_is_a_protocol_error_naming_the_limit(
    emu: Emulator, make_client: ClientFactory
) -> None:
    """An answer too large to read is a ProtocolError that names the limit and keeps no body."""
    client = make_client(max_response_bytes=1024)
    task_id = await client.submit(make_request())
    emu.inject(Fault(FaultKind.HUGE_FIELD, endpoint="task", size=64 * 1024))
    with pytest.raises(ProtocolError) as info:
        await client.get_task(task_id)
    assert (info.value.status, info.value.body) == (200, "")
    assert "1024-byte limit" in str(info.value)


def _result(status: TaskStatus, error: FailureReason | None = None) -> TaskResult:
    return TaskResult(task_id="t-1", status=status, raw_status=str(status), error=error)


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (FailureReason(message="boom", err_code=-1), "task t-1 failed: err_code -1: boom"),
        (None, "task t-1 failed"),
    ],
    ids=["with-error", "without-error"],
)
def test_task_failed_error_carries_the_final_result(error: FailureReason | None, text: str) -> None:
    """TaskFailedError holds the task id and final snapshot; its text shows the service's error."""
    result = _result(TaskStatus.FAIL, error)
    failed = TaskFailedError("t-1", result)
    assert (failed.task_id, failed.result) == ("t-1", result)
    assert str(failed) == text


@pytest.mark.parametrize(
    ("last", "status"),
    [(_result(TaskStatus.PROCESSING), "processing"), (None, "never seen")],
    ids=["seen", "never-seen"],
)
def test_wait_timeout_error_says_the_task_keeps_running(
    last: TaskResult | None, status: str
) -> None:
    """WaitTimeoutError holds the id, the timeout and the last snapshot, and warns of billing."""
    error = WaitTimeoutError("t-1", 90.0, last)
    assert (error.task_id, error.timeout, error.last_result) == ("t-1", 90.0, last)
    assert f"last status: {status}" in str(error)
    assert "within 90 s" in str(error)
    assert "keeps running" in str(error)


def test_wait_timeout_error_without_a_task_says_nothing_was_created() -> None:
    """A deadline that passed before the submit left has no task id, and says no task exists."""
    error = WaitTimeoutError(None, 5.0, None)
    assert (error.task_id, error.timeout, error.last_result) == (None, 5.0, None)
    assert "within 5 s" in str(error)
    assert "no task was created" in str(error)


def test_submit_outcome_unknown_error_keeps_the_request_and_the_cause() -> None:
    """The request and the underlying failure travel with the error; nothing was resubmitted."""
    request = OptimizationRequest(prompt="p", qa=[QAPair("q", "a")], model="m")
    cause = TransportError("reset by peer")
    error = SubmitOutcomeUnknownError(request, cause)
    assert (error.request, error.cause) == (request, cause)
    assert "TransportError: reset by peer" in str(error)
    assert "may be billed" in str(error)
    assert "not resubmitted" in str(error)
    assert error.task_id is None
