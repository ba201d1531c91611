"""spo-async: an asyncio SDK for 302.AI's hosted SPO prompt optimization service.

Submit a prompt with a few question/answer examples, and the service rewrites
it over several rounds; :class:`AsyncSPOClient` submits, polls and returns the
best prompt::

    from spo_async import AsyncSPOClient, OptimizationRequest, QAPair

    async with AsyncSPOClient() as client:            # key from AI302_API_KEY
        result = await client.optimize(OptimizationRequest(
            prompt="Act as the user's girlfriend",
            qa=[QAPair(question="Good morning", answer="[thoughts][reply]")],
            model="claude-3-5-sonnet-20240620",
        ))
        print(result.best_prompt)

The public surface is exactly :data:`__all__`; every other module is private.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._client import AsyncSPOClient
from ._errors import (
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
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    RequestTimeoutError,
    RequestValidationError,
    ResponseTooLargeError,
    SPOError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
    TaskStateError,
    ToolDisabledError,
    TransientError,
    TransportError,
    UnsupportedError,
    WaitTimeoutError,
)
from ._limiter import RequestLimiter
from ._logging import configure_from_env as _configure_logging_from_env
from ._models import (
    MAX_ROUNDS_LIMIT,
    OptimizationRequest,
    Progress,
    QAPair,
    Round,
    Sample,
    TaskError,
    TaskResult,
)
from ._polling import DEFAULT_WAIT_TIMEOUT, RetryNotice
from ._retry import RetryPolicy
from ._sansio import HTTPRequest, HTTPResponse
from ._schedules import (
    ExponentialSchedule,
    FixedSchedule,
    PollMode,
    PollSchedule,
    PollState,
    ScheduleLike,
)
from ._settings import API_KEY_ENV_VARS, DEFAULT_BASE_URL
from ._state import TaskStatus
from ._transport import AiohttpTransport, Transport
from ._version import __version__

if _TYPE_CHECKING:
    from ._adaptive import AdaptiveSchedule
    from ._batch import (
        BatchInput,
        BatchItem,
        Errored,
        Failed,
        Outcome,
        OutcomeUnknown,
        Succeeded,
    )
    from ._events import (
        BatchProgress,
        Event,
        EventCallback,
        RoundCompleted,
        TaskErrored,
        TaskEvent,
        TaskFailed,
        TaskOutcomeUnknown,
        TaskQueued,
        TaskRetrying,
        TaskSubmitted,
        TaskSucceeded,
        TaskTimedOut,
    )
    from ._journal import JournalError, JournalMismatchError, RecordedError
    from ._stream import EventStream

#: Names loaded on first use, so that ``import spo_async`` does not pay for the batch
#: layer, SQLite, the event classes and the adaptive schedule unless a program uses them.
_LAZY = {
    "AdaptiveSchedule": "._adaptive",
    "BatchInput": "._batch",
    "BatchItem": "._batch",
    "Errored": "._batch",
    "Failed": "._batch",
    "Outcome": "._batch",
    "OutcomeUnknown": "._batch",
    "Succeeded": "._batch",
    "BatchProgress": "._events",
    "Event": "._events",
    "EventCallback": "._events",
    "EventStream": "._stream",
    "RoundCompleted": "._events",
    "TaskErrored": "._events",
    "TaskEvent": "._events",
    "TaskFailed": "._events",
    "TaskOutcomeUnknown": "._events",
    "TaskQueued": "._events",
    "TaskRetrying": "._events",
    "TaskSubmitted": "._events",
    "TaskSucceeded": "._events",
    "TaskTimedOut": "._events",
    "JournalError": "._journal",
    "JournalMismatchError": "._journal",
    "RecordedError": "._journal",
}


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "APIError",
    "API_KEY_ENV_VARS",
    "AdaptiveSchedule",
    "AiohttpTransport",
    "AsyncSPOClient",
    "AuthenticationError",
    "BatchInput",
    "BatchItem",
    "BatchProgress",
    "ClientClosedError",
    "ConfigurationError",
    "ConnectError",
    "ConnectionLostError",
    "DEFAULT_BASE_URL",
    "DEFAULT_WAIT_TIMEOUT",
    "Errored",
    "Event",
    "EventCallback",
    "EventStream",
    "ExponentialSchedule",
    "Failed",
    "FixedSchedule",
    "HTTPRequest",
    "HTTPResponse",
    "InsufficientBalanceError",
    "InvalidRequestError",
    "JournalError",
    "JournalMismatchError",
    "MAX_ROUNDS_LIMIT",
    "NoAvailableChannelError",
    "NotFoundError",
    "OptimizationRequest",
    "Outcome",
    "OutcomeUnknown",
    "PollMode",
    "PollSchedule",
    "PollState",
    "Progress",
    "ProtocolError",
    "QAPair",
    "QuotaExceededError",
    "RateLimitError",
    "RecordedError",
    "RequestLimiter",
    "RequestTimeoutError",
    "RequestValidationError",
    "ResponseTooLargeError",
    "RetryNotice",
    "RetryPolicy",
    "Round",
    "RoundCompleted",
    "SPOError",
    "Sample",
    "ScheduleLike",
    "SubmitOutcomeUnknownError",
    "Succeeded",
    "TaskError",
    "TaskErrored",
    "TaskEvent",
    "TaskFailed",
    "TaskFailedError",
    "TaskOutcomeUnknown",
    "TaskQueued",
    "TaskResult",
    "TaskRetrying",
    "TaskStateError",
    "TaskStatus",
    "TaskSubmitted",
    "TaskSucceeded",
    "TaskTimedOut",
    "ToolDisabledError",
    "TransientError",
    "Transport",
    "TransportError",
    "UnsupportedError",
    "WaitTimeoutError",
    "__version__",
]

_configure_logging_from_env()
