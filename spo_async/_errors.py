"""One exception tree for everything that can go wrong, rooted at :class:`SPOError`.

Catch :class:`SPOError` to catch everything the SDK raises on purpose; catch a
narrower class to act on one meaning. Every error carries what a caller needs to
decide what to do next: the HTTP status, the service's ``err_code`` and messages,
``retry_after``, the task id and the last snapshot seen.

::

    SPOError
    ├── ConfigurationError            bad settings or options, before any network call (ValueError)
    ├── RequestValidationError        bad input, raised before any network call (ValueError)
    ├── ClientClosedError             the client was used after aclose() (RuntimeError)
    ├── TransportError                the HTTP exchange itself failed
    │   ├── ConnectError              no connection was made: the request never left
    │   ├── RequestTimeoutError       one HTTP request took too long (TimeoutError)
    │   └── ConnectionLostError       the connection broke after the request went out
    ├── ProtocolError                 an answer that breaks the contract (HTML, bad JSON, ...)
    │   ├── ResponseTooLargeError     an answer over the configured size limit
    │   └── TaskStateError            a task's reported state went backwards or contradicts itself
    ├── APIError                      the service answered with an error envelope or status
    │   ├── AuthenticationError       -10001, -10005, HTTP 401/403
    │   ├── ToolDisabledError         -10002
    │   ├── InsufficientBalanceError  -10004, HTTP 402
    │   ├── QuotaExceededError        -10006, -10007, -10012, -10018
    │   ├── NoAvailableChannelError   -10008 (seen for an unknown model)
    │   ├── UnsupportedError          -10009
    │   ├── NotFoundError             -10010, HTTP 404
    │   ├── InvalidRequestError       -10011, other HTTP 4xx
    │   ├── RateLimitError            HTTP 429 (carries retry_after)
    │   └── TransientError            -10003, -1024, HTTP 408 and 5xx: worth retrying
    ├── SubmitOutcomeUnknownError     a submit may or may not have created (and billed) a task
    ├── TaskFailedError               the task ended in ``fail`` (carries the final TaskResult)
    ├── WaitTimeoutError              the overall wait deadline passed (TimeoutError)
    ├── JournalError                  a batch journal cannot be used (foreign, locked, disk full)
    │   └── JournalMismatchError      the journal was written for a different batch
    └── RecordedError                 an error an earlier run recorded in a batch journal

Errors never carry the API key: requests are described by method and path only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import OptimizationRequest, TaskResult

__all__ = [
    "APIError",
    "AuthenticationError",
    "ClientClosedError",
    "ConfigurationError",
    "ConnectError",
    "ConnectionLostError",
    "InsufficientBalanceError",
    "InvalidRequestError",
    "NoAvailableChannelError",
    "NotFoundError",
    "ProtocolError",
    "QuotaExceededError",
    "RateLimitError",
    "RequestTimeoutError",
    "RequestValidationError",
    "ResponseTooLargeError",
    "SPOError",
    "SubmitOutcomeUnknownError",
    "TaskFailedError",
    "TaskStateError",
    "ToolDisabledError",
    "TransientError",
    "TransportError",
    "UnsupportedError",
    "WaitTimeoutError",
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
    the request may have reached the service: it decides whether a submit can be
    retried without risking a second, billed task.
    """

    #: Whether the request may have reached the service.
    request_sent: bool = True

    def __init__(self, message: str, *, method: str = "", path: str = "") -> None:
        self.method = method
        self.path = path
        super().__init__(message)


class ConnectError(TransportError):
    """No connection could be made, so the request never left this machine."""

    request_sent = False


class RequestTimeoutError(TransportError, TimeoutError):
    """One HTTP request ran past its per-request timeout.

    This is not the overall wait deadline (see :class:`WaitTimeoutError`).
    ``request_sent`` is false only when the timeout hit while connecting.
    """

    def __init__(
        self, message: str, *, method: str = "", path: str = "", request_sent: bool = True
    ) -> None:
        super().__init__(message, method=method, path=path)
        self.request_sent = request_sent


class ConnectionLostError(TransportError):
    """The connection broke after the request was sent, before the whole answer arrived."""


class ProtocolError(SPOError):
    """The service answered with something the contract does not allow.

    Examples: an HTML page from a gateway with status 200, truncated JSON, a
    field of the wrong type, a submit answer without ``task_id``. ``body`` keeps
    a snippet of the raw answer for debugging.
    """

    def __init__(self, message: str, *, status: int | None = None, body: bytes = b"") -> None:
        self.status = status
        self.body = body_snippet(body)
        super().__init__(message)


class ResponseTooLargeError(ProtocolError):
    """An answer was larger than the client's ``max_response_bytes``; it was not read whole."""

    def __init__(self, *, limit: int, status: int | None = None) -> None:
        self.limit = limit
        super().__init__(f"response body exceeds the {limit}-byte limit", status=status)


class TaskStateError(ProtocolError):
    """A task's reported state moved backwards or contradicts itself.

    For example a task that was ``success`` is later reported as ``processing``,
    or rounds disappear. ``previous`` and ``current`` are the two snapshots.
    """

    def __init__(
        self, message: str, *, task_id: str, previous: TaskResult, current: TaskResult
    ) -> None:
        self.task_id = task_id
        self.previous = previous
        self.current = current
        super().__init__(f"task {task_id}: {message}")


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
    """The API key is missing, invalid or expired (-10001, -10005, HTTP 401/403)."""


class ToolDisabledError(APIError):
    """The tool was disabled or deleted on the 302.AI side (-10002)."""


class InsufficientBalanceError(APIError):
    """The account's balance cannot pay for the task (-10004, HTTP 402)."""


class QuotaExceededError(APIError):
    """A total, daily, hourly or monthly quota is used up (-10006/7/12/18)."""


class NoAvailableChannelError(APIError):
    """No channel serves the request now; seen for an unknown model id (-10008)."""


class UnsupportedError(APIError):
    """The service does not support this API function (-10009)."""


class NotFoundError(APIError):
    """The resource, usually the task id, does not exist (-10010, HTTP 404)."""


class InvalidRequestError(APIError):
    """The service rejected the request as invalid (-10011, other HTTP 4xx)."""


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
