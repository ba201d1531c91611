"""The error tree: every class's place in it, and what each error carries and says."""

from __future__ import annotations

import pytest
from spo_async import (
    APIError,
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    ConnectError,
    ConnectionLostError,
    InsufficientBalanceError,
    InvalidRequestError,
    NoAvailableChannelError,
    NotFoundError,
    OptimizationRequest,
    ProtocolError,
    QAPair,
    QuotaExceededError,
    RateLimitError,
    RequestTimeoutError,
    RequestValidationError,
    ResponseTooLargeError,
    SPOError,
    SubmitOutcomeUnknownError,
    TaskError,
    TaskFailedError,
    TaskResult,
    TaskStateError,
    TaskStatus,
    ToolDisabledError,
    TransientError,
    TransportError,
    UnsupportedError,
    WaitTimeoutError,
)
from spo_async._errors import BODY_SNIPPET_LIMIT, body_snippet

#: Each class and its parent in the tree drawn in ``_errors.py``'s docstring.
TREE: list[tuple[type[BaseException], type[BaseException]]] = [
    (ConfigurationError, SPOError),
    (RequestValidationError, SPOError),
    (RequestValidationError, ValueError),
    (ClientClosedError, SPOError),
    (ClientClosedError, RuntimeError),
    (TransportError, SPOError),
    (ConnectError, TransportError),
    (RequestTimeoutError, TransportError),
    (RequestTimeoutError, TimeoutError),
    (ConnectionLostError, TransportError),
    (ProtocolError, SPOError),
    (ResponseTooLargeError, ProtocolError),
    (TaskStateError, ProtocolError),
    (APIError, SPOError),
    (AuthenticationError, APIError),
    (ToolDisabledError, APIError),
    (InsufficientBalanceError, APIError),
    (QuotaExceededError, APIError),
    (NoAvailableChannelError, APIError),
    (UnsupportedError, APIError),
    (NotFoundError, APIError),
    (InvalidRequestError, APIError),
    (RateLimitError, APIError),
    (TransientError, APIError),
    (SubmitOutcomeUnknownError, SPOError),
    (TaskFailedError, SPOError),
    (WaitTimeoutError, SPOError),
    (WaitTimeoutError, TimeoutError),
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
    assert len(api_errors) == 11
    retryable = {cls for cls in api_errors if cls("m", status=500).retryable}
    assert retryable == {RateLimitError, TransientError}


TRANSPORT_SENT: list[tuple[TransportError, bool]] = [
    (ConnectError("refused"), False),
    (RequestTimeoutError("slow"), True),
    (RequestTimeoutError("slow", request_sent=False), False),
    (ConnectionLostError("reset"), True),
]


@pytest.mark.parametrize(
    ("error", "sent"), TRANSPORT_SENT, ids=["connect", "timeout", "connect-timeout", "lost"]
)
def test_transport_errors_say_whether_the_request_may_have_left(
    error: TransportError, sent: bool
) -> None:
    """Only a refused connection or a timeout while connecting proves nothing was sent."""
    assert error.request_sent is sent


def test_transport_error_names_the_call_not_the_url() -> None:
    """A transport error keeps method and path (never the full URL with its host)."""
    error = ConnectError("refused", method="POST", path="/302/prompt/spo/submit")
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


def test_response_too_large_error_names_the_limit() -> None:
    """ResponseTooLargeError carries the limit and the status, not the body."""
    error = ResponseTooLargeError(limit=1024, status=200)
    assert (error.limit, error.status, error.body) == (1024, 200, "")
    assert "1024-byte limit" in str(error)


def _result(status: TaskStatus, error: TaskError | None = None) -> TaskResult:
    return TaskResult(task_id="t-1", status=status, raw_status=str(status), error=error)


def test_task_state_error_keeps_both_snapshots() -> None:
    """TaskStateError says which task went wrong and keeps the two snapshots."""
    before, after = _result(TaskStatus.SUCCESS), _result(TaskStatus.PROCESSING)
    error = TaskStateError("went back", task_id="t-1", previous=before, current=after)
    assert (error.task_id, error.previous, error.current) == ("t-1", before, after)
    assert str(error) == "task t-1: went back"


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (TaskError(message="boom", err_code=-1), "task t-1 failed: err_code -1: boom"),
        (None, "task t-1 failed"),
    ],
    ids=["with-error", "without-error"],
)
def test_task_failed_error_carries_the_final_result(error: TaskError | None, text: str) -> None:
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


def test_submit_outcome_unknown_error_keeps_the_request_and_the_cause() -> None:
    """The request and the underlying failure travel with the error; nothing was resubmitted."""
    request = OptimizationRequest(prompt="p", qa=[QAPair("q", "a")], model="m")
    cause = ConnectionLostError("reset by peer")
    error = SubmitOutcomeUnknownError(request, cause)
    assert (error.request, error.cause) == (request, cause)
    assert "ConnectionLostError: reset by peer" in str(error)
    assert "may be billed" in str(error)
    assert "not resubmitted" in str(error)
    assert error.task_id is None
