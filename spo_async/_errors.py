"""One exception tree for everything that can go wrong, rooted at :class:`SPOError`.

Catch :class:`SPOError` to catch everything the SDK raises on purpose; catch a
narrower class to act on one meaning. Every error carries what a caller needs to
decide what to do next: the HTTP status, the service's ``err_code`` and messages,
``retry_after``, the task id and the last snapshot seen.

::

    SPOError
    ├── ConfigurationError            bad settings or options, before any network call (ValueError)
    ├── RequestValidationError        bad input, raised before any network call (ValueError)
    ├── ClientClosedError             the client was closed, or its event loop was (RuntimeError)
    ├── TransportError                the HTTP exchange itself failed (request_sent says if it left)
    │   └── RequestTimeoutError       one HTTP request took too long (TimeoutError)
    ├── ProtocolError                 an answer that breaks the contract (HTML, bad JSON, too large)
    ├── APIError                      the service answered with an error envelope or status
    │   ├── AuthenticationError       -10001, -10002, -10005, HTTP 401/403
    │   ├── InsufficientBalanceError  -10004, HTTP 402
    │   ├── QuotaExceededError        -10006, -10007, -10012, -10018
    │   ├── NotFoundError             -10010, HTTP 404
    │   ├── InvalidRequestError       -10008, -10009, -10011, other HTTP 4xx
    │   ├── RateLimitError            HTTP 429 (carries retry_after)
    │   └── TransientError            -10003, -1024, HTTP 408 and 5xx: worth retrying
    ├── SubmitOutcomeUnknownError     a submit may or may not have created (and billed) a task
    ├── TaskFailedError               the task ended in ``fail`` (carries the final TaskResult)
    ├── WaitTimeoutError              the overall deadline passed (TimeoutError)
    └── JournalError                  a batch journal cannot be used (foreign, locked, damaged)

Errors never carry the API key: requests are described by method and path only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import OptimizationRequest, TaskResult

__all__ = [
    "APIError",
    "AuthenticationError",
    "ClientClosedError",
    "ConfigurationError",
    "InsufficientBalanceError",
    "InvalidRequestError",
    "JournalError",
    "NotFoundError",
    "ProtocolError",
    "QuotaExceededError",
    "RateLimitError",
    "RecordedError",
    "RequestTimeoutError",
    "RequestValidationError",
    "SPOError",
    "SubmitOutcomeUnknownError",
    "TaskFailedError",
    "TransientError",
    "TransportError",
    "WaitTimeoutError",
    "contradicting_task",
    "response_too_large",
]

#: How much of an unparseable body an error keeps, so a 10 MB HTML page
#: does not end up in a log line.
BODY_SNIPPET_LIMIT = 2048


def body_snippet(body: bytes, limit: int = BODY_SNIPPET_LIMIT) -> str:
    """Decode the start of ``body`` for display, never failing on bad bytes."""
    text = body[:limit].decode("utf-8", errors="replace")
    if len(body) > limit:
        text += f"... [{len(body) - limit} more bytes]"
    return text


class SPOError(Exception):
    """Base class of every error the SDK raises on purpose.

    ``task_id`` is set on any error that escapes a wait for a known task (for
    example a :class:`TransientError` after the retries ran out), so that a
    submitted task's id is never lost with the error.
    """

    task_id: str | None = None

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle by state, not by calling ``__init__`` again (process pools, caches).

        ``Exception`` pickles as ``cls(*args)``, which fails for every subclass whose
        ``__init__`` takes something else than its message. Here any subclass,
        present or future, is rebuilt without ``__init__``, with its ``args`` and
        every attribute (notes and ``task_id`` included) as they were. Like every
        exception, it travels without its traceback, ``__cause__`` and ``__context__``.
        """
        return (type(self)._from_pickle, (self.args, dict(vars(self))))

    @classmethod
    def _from_pickle(cls, args: tuple[object, ...], state: dict[str, object]) -> SPOError:
        error = cls.__new__(cls)
        error.args = args
        vars(error).update(state)
        return error


class ConfigurationError(SPOError, ValueError):
    """A setting or option cannot work: no API key, a malformed base URL, ``timeout=-5``, ...

    Raised before any network call, by the client's constructor, by
    :meth:`~spo_async.AsyncSPOClient.with_options` and by every method for its own options.
    """


class RequestValidationError(SPOError, ValueError):
    """An input was rejected before any network call.

    ``field`` names the offending field (dotted for nested ones, such as
    ``qa[0].question``) so that a form or a batch row can point at it.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class ClientClosedError(SPOError, RuntimeError):
    """The client was used after :meth:`AsyncSPOClient.aclose`."""


class TransportError(SPOError):
    """The HTTP exchange failed before a complete answer arrived.

    ``method`` and ``path`` say which call failed. ``request_sent`` tells whether
    the request may have reached the service: false when no connection could be
    made, true when it broke or timed out after the request went out. It decides
    whether a submit can be retried without risking a second, billed task.
    """

    def __init__(
        self, message: str, *, method: str = "", path: str = "", request_sent: bool = True
    ) -> None:
        self.method = method
        self.path = path
        #: Whether the request may have reached the service.
        self.request_sent = request_sent
        super().__init__(message)


class RequestTimeoutError(TransportError, TimeoutError):
    """One HTTP request ran past its per-request timeout (``request_timeout``).

    This is not the overall deadline of a wait (see :class:`WaitTimeoutError`).
    ``request_sent`` is false only when the timeout hit while connecting.
    """


class ProtocolError(SPOError):
    """The service answered with something the contract does not allow.

    Examples: an HTML page from a gateway with status 200, truncated JSON, a
    field of the wrong type, a submit answer without ``task_id``, an answer
    larger than the client's ``max_response_bytes``, or a task whose reported
    state went backwards several answers in a row. ``body`` keeps a snippet of
    the raw answer for debugging. ``retryable`` says whether reading again may
    help: false for an answer too large to read and for a task that keeps
    contradicting itself, true for the rest (a half-written answer is read
    whole a moment later).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: bytes = b"",
        retryable: bool = True,
    ) -> None:
        self.status = status
        self.body = body_snippet(body)
        self.retryable = retryable
        super().__init__(message)


def response_too_large(*, limit: int, status: int | None = None) -> ProtocolError:
    """The error for an answer over ``limit`` bytes, which was not read whole."""
    return ProtocolError(
        f"response body exceeds the {limit}-byte limit", status=status, retryable=False
    )


def contradicting_task(task_id: str, problem: str) -> ProtocolError:
    """The error for a task whose answers kept contradicting what was seen before."""
    error = ProtocolError(f"task {task_id}: {problem}", retryable=False)
    error.task_id = task_id
    return error


class APIError(SPOError):
    """The service answered with an error.

    ``err_code`` is the service's own code from the error envelope (``None`` when
    the answer had no envelope), ``status`` the HTTP status. ``message`` is the
    English text; ``messages`` holds every localized text by language
    (``"en"``, ``"cn"``, ``"jp"``); ``body`` a snippet of the raw answer.
    """

    #: Whether repeating the same read later may succeed.
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int,
        err_code: int | None = None,
        error_type: str | None = None,
        messages: Mapping[str, str] | None = None,
        body: bytes = b"",
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.err_code = err_code
        self.error_type = error_type
        self.messages: Mapping[str, str] = dict(messages or {})
        self.message = message
        self.body = body_snippet(body)
        self.retry_after = retry_after
        code = f" err_code={err_code}" if err_code is not None else ""
        super().__init__(f"HTTP {status}{code}: {message}")

    def localized(self, lang: str) -> str:
        """The message in ``lang`` (``"en"``, ``"cn"`` or ``"jp"``), falling back to English."""
        return self.messages.get(lang) or self.message


class AuthenticationError(APIError):
    """The API key is missing, invalid, expired or not allowed this tool.

    err_code -10001 and -10005 (the key), -10002 (the tool is disabled or
    deleted for this account), HTTP 401 and 403.
    """


class InsufficientBalanceError(APIError):
    """The account's balance cannot pay for the task (-10004, HTTP 402)."""


class QuotaExceededError(APIError):
    """A total, daily, hourly or monthly quota is used up (-10006/7/12/18)."""


class NotFoundError(APIError):
    """The resource, usually the task id, does not exist (-10010, HTTP 404)."""


class InvalidRequestError(APIError):
    """The service will not run the request as it stands.

    err_code -10011 (invalid), -10008 (no channel serves it: seen for an unknown
    model id, with HTTP 503), -10009 (an unsupported function), and any other
    HTTP 4xx. ``err_code`` tells them apart.
    """


class RateLimitError(APIError):
    """The service asked us to slow down (HTTP 429).

    ``retry_after`` is the wait the service asked for, in seconds, when it said.
    Raised to the caller when retries are used up or the wait asked for is longer
    than the retry policy allows.
    """

    retryable = True


class TransientError(APIError):
    """A passing failure on the service's side (-10003, -1024, HTTP 408, 5xx)."""

    retryable = True


class JournalError(SPOError):
    """The journal cannot be used: not a journal, too new, in use, damaged or unwritable.

    ``path`` names the file and ``reason`` says what went wrong (the message
    without the path). When a write fails the file is left as it was before
    that write. ``task_id`` is set when the failed write was the id of a task
    that exists on the service: that task is paid for and must not be lost.

    ``different_batch`` is true when the journal was written for another batch;
    then ``changed`` keys have a different request than the journal recorded,
    ``missing`` keys are in the journal but not in this batch, and ``added`` are
    in this batch but not in the journal. Use a new journal file for a new batch.
    """

    #: Whether the journal was written for a different batch.
    different_batch: bool = False

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        task_id: str | None = None,
    ) -> None:
        self.path = None if path is None else os.fspath(path)
        self.reason = message
        self.task_id = task_id
        self.changed: list[str | int] = []
        self.missing: list[str | int] = []
        self.added: list[str | int] = []
        super().__init__(f"{message} (journal: {self.path})" if self.path else message)


class RecordedError(SPOError):
    """An error an earlier run recorded in a batch journal: its type's name and message.

    Not raised on its own: it is the cause of an outcome the journal restores.
    """

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.message = message
        super().__init__(f"{type_name}: {message} (recorded by an earlier run)")


class SubmitOutcomeUnknownError(SPOError):
    """A submit failed in a way that leaves open whether the service created the task.

    The request may have reached the service, in which case a task exists and
    is billed, but its id never arrived. The SDK does not resubmit on its own,
    since that could create and bill a second task. ``request`` is what was
    sent; ``__cause__`` is the underlying failure.
    """

    def __init__(self, request: OptimizationRequest, cause: BaseException) -> None:
        self.request = request
        self.cause = cause
        super().__init__(
            "the submit may have reached the service, so a task may exist and may be "
            f"billed, but its id was not received ({type(cause).__name__}: {cause}); "
            "it was not resubmitted automatically"
        )


class TaskFailedError(SPOError):
    """The task ended in ``fail``. ``result`` is its final snapshot, error included."""

    def __init__(self, task_id: str, result: TaskResult) -> None:
        self.task_id = task_id
        self.result = result
        detail = f": {result.error}" if result.error is not None else ""
        super().__init__(f"task {task_id} failed{detail}")


class WaitTimeoutError(SPOError, TimeoutError):
    """The overall deadline of a wait (or of a whole ``optimize``) passed first.

    When ``task_id`` is set, the task keeps running on the service (and keeps
    being billed): wait for it again with that id. ``last_result`` is the last
    snapshot seen, or ``None`` when no poll succeeded. ``task_id`` is ``None``
    only when the deadline passed before a submit had left this machine, so no
    task was created.
    """

    def __init__(self, task_id: str | None, timeout: float, last_result: TaskResult | None) -> None:
        self.task_id = task_id
        self.timeout = timeout
        self.last_result = last_result
        if task_id is None:
            message = (
                f"nothing was submitted within {timeout:g} s: the request never left, "
                "so no task was created"
            )
        else:
            status = last_result.raw_status if last_result is not None else "never seen"
            message = (
                f"task {task_id} did not finish within {timeout:g} s (last status: {status}); "
                "it keeps running on the service"
            )
        super().__init__(message)
