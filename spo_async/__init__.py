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

The public surface is :data:`__all__`, plus three modules for the few who need
them: :mod:`spo_async.polling` (when to look again), :mod:`spo_async.transport`
(the HTTP seam) and :mod:`spo_async.testing` (an emulator of the service).
Every other module is private.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._errors import (
    APIError,
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    InsufficientBalanceError,
    InvalidRequestError,
    JournalError,
    NotFoundError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    RequestTimeoutError,
    RequestValidationError,
    SPOError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
    TransientError,
    TransportError,
    WaitTimeoutError,
)
from ._limiter import RequestLimiter
from ._logging import configure_from_env as _configure_logging_from_env
from ._models import FailureReason, OptimizationRequest, QAPair, Round, Sample, TaskResult
from ._retry import RetryPolicy
from ._state import TaskStatus
from ._version import __version__

if _TYPE_CHECKING:
    from ._batch import Batch
    from ._client import AsyncSPOClient
    from ._events import (
        BatchProgress,
        Errored,
        Event,
        Failed,
        Outcome,
        OutcomeUnknown,
        RoundCompleted,
        Succeeded,
        TaskQueued,
        TaskRetrying,
        TaskSubmitted,
    )
    from ._stream import EventStream
    from ._sync import SPOClient

#: Names loaded on first use, so that ``import spo_async`` does not pay for the client
#: (aiohttp), the batch layer (SQLite), the events or the sync client before it needs them.
_LAZY = {
    "AsyncSPOClient": "._client",
    "Batch": "._batch",
    "BatchProgress": "._events",
    "Errored": "._events",
    "Event": "._events",
    "EventStream": "._stream",
    "Failed": "._events",
    "Outcome": "._events",
    "OutcomeUnknown": "._events",
    "RoundCompleted": "._events",
    "SPOClient": "._sync",
    "Succeeded": "._events",
    "TaskQueued": "._events",
    "TaskRetrying": "._events",
    "TaskSubmitted": "._events",
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
    "AsyncSPOClient",
    "AuthenticationError",
    "Batch",
    "BatchProgress",
    "ClientClosedError",
    "ConfigurationError",
    "Errored",
    "Event",
    "EventStream",
    "Failed",
    "FailureReason",
    "InsufficientBalanceError",
    "InvalidRequestError",
    "JournalError",
    "NotFoundError",
    "OptimizationRequest",
    "Outcome",
    "OutcomeUnknown",
    "ProtocolError",
    "QAPair",
    "QuotaExceededError",
    "RateLimitError",
    "RequestLimiter",
    "RequestTimeoutError",
    "RequestValidationError",
    "RetryPolicy",
    "Round",
    "RoundCompleted",
    "SPOClient",
    "SPOError",
    "Sample",
    "SubmitOutcomeUnknownError",
    "Succeeded",
    "TaskFailedError",
    "TaskQueued",
    "TaskResult",
    "TaskRetrying",
    "TaskStatus",
    "TaskSubmitted",
    "TransientError",
    "TransportError",
    "WaitTimeoutError",
    "__version__",
]

_configure_logging_from_env()
