"""What a client and all its views share, and the options each view applies.

An :class:`~spo_async.AsyncSPOClient` is a *core* (the connection pool, the
limiter, the clock, the shared waits, what it knows of the tasks it submitted)
and *options* (deadlines, retry policy, schedule). ``with_options`` makes a view
with other options on the same core. The checks of the options live here too,
so that the constructor and ``with_options`` refuse the same mistakes the same way.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

import attrs

from ._checks import check_seconds
from ._errors import (
    ClientClosedError,
    ConfigurationError,
    RequestValidationError,
    SPOError,
    TransportError,
    WaitTimeoutError,
)
from ._limiter import RequestLimiter
from ._models import OptimizationRequest
from ._redact import Redactor, redactor_for
from ._retry import RetryPolicy
from ._sansio import HTTPRequest
from ._schedules import PollSchedule, as_schedule
from ._sharing import SharedPolls
from ._transport import Transport

__all__ = [
    "UNSET",
    "Core",
    "Options",
    "SubmitAttempt",
    "SubmitGate",
    "TaskFacts",
    "Unset",
    "check_request",
    "pool_size",
    "request_timeout_option",
    "retry_option",
    "schedule_option",
]

#: How many submitted tasks the client remembers (for ``max_rounds`` and ``model``).
_REMEMBERED_TASKS: Final = 100_000


class Unset(enum.Enum):
    """The type of :data:`UNSET`: "not given here, use the client's setting"."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


#: A per-call option left to the client's (or the view's) setting.
UNSET: Final = Unset.UNSET


@attrs.frozen(kw_only=True)
class Options:
    """The policy a client (or a view of it) applies to each call."""

    #: The default overall deadline of a wait, in seconds (``None``: none).
    timeout: float | None
    request_timeout: float
    retry: RetryPolicy
    schedule: PollSchedule = attrs.field(eq=False)
    strict_status: bool


class SubmitGate(Protocol):
    """Hooks around each attempt of one submit, for a caller that must stop cleanly.

    :meth:`leaving` runs just before the POST is handed to the transport (after
    the connection pool and the limiter let it through) and may raise to keep it
    home; :meth:`refused` runs when the service answered that attempt with a
    refusal, so no task came of it. Between the two, the POST may have reached
    the service. The batch uses them to stop without cutting a submit in flight.
    """

    def leaving(self) -> None:
        """The POST leaves now; raise to keep it from leaving."""

    def refused(self) -> None:
        """The service refused the attempt: it created no task."""


class SubmitAttempt:
    """One submit attempt: whether its POST left, passed on to the caller's gate.

    ``http`` and ``timeout`` (the request and the call's timeout) say what
    :meth:`expired` reports when the call's deadline cuts the attempt off.
    """

    __slots__ = ("gate", "http", "left", "timeout")

    def __init__(
        self,
        gate: SubmitGate | None,
        *,
        http: HTTPRequest | None = None,
        timeout: float | None = None,
    ) -> None:
        self.gate = gate
        self.http = http
        self.timeout = timeout
        self.left = False

    def expired(self) -> SPOError:
        """The error for the call's deadline passing during this attempt.

        Once the POST has left, a task may exist: a :class:`TransportError` (an
        outcome unknown); before, a :class:`WaitTimeoutError` without a task.
        """
        http = self.http
        if self.left and http is not None:
            return TransportError(
                f"{http.method} {http.path}: the call's deadline passed while the "
                "submit was in flight",
                method=http.method,
                path=http.path,
            )
        return WaitTimeoutError(None, self.timeout or 0.0, None)

    def leaving(self) -> None:
        if self.gate is not None:
            self.gate.leaving()
        self.left = True

    def refused(self) -> None:
        self.left = False
        if self.gate is not None:
            self.gate.refused()


class TaskFacts:
    """What the client knows of a task it submitted itself."""

    __slots__ = ("max_rounds", "model", "submitted_at")

    def __init__(self, max_rounds: int, model: str, submitted_at: float) -> None:
        self.max_rounds = max_rounds
        self.model = model
        #: When the submit returned, on the client's clock.
        self.submitted_at = submitted_at


class Core:
    """What a client and all its views share: one pool, one limiter, one clock, shared waits."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        lang: str | None,
        transport: Transport,
        limiter: RequestLimiter,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        max_connections: int,
    ) -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.lang = lang
        self.transport = transport
        self.limiter = limiter
        self.clock = clock
        self.sleep = sleep
        self.shared = SharedPolls()
        #: With a shared budget, the store's claims: one process polls a task at a time.
        self.claims = limiter._poll_claims(clock, sleep)
        self.known: collections.OrderedDict[str, TaskFacts] = collections.OrderedDict()
        self.closed = False
        #: Whether the client warns when it is dropped unclosed: not inside an SPOClient,
        #: which warns itself (and which the collector may finalize after it).
        self.warns_unclosed = True
        self.loop: asyncio.AbstractEventLoop | None = None
        #: The client's one cap on requests in flight. A request queues here, before
        #: its timeout starts and before it is counted as sent: waiting for a free
        #: connection must never look like a request that may have reached the service.
        self.slots = asyncio.Semaphore(max_connections)
        #: What takes the key out of every answer, built once: the key never changes.
        self.redactor: Redactor | None = redactor_for((api_key,))

    def check_usable(self) -> None:
        """Refuse use after ``aclose`` and use from a second event loop, with typed errors."""
        if self.closed:
            raise ClientClosedError("this AsyncSPOClient is closed; create a new one")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return  # not in a coroutine: nothing is sent from here
        if self.loop is None:
            self.loop = running
        elif self.loop is not running:
            if self.loop.is_closed():
                self.closed = True  # its pool died with its loop
                raise ClientClosedError(
                    "this AsyncSPOClient was used on an event loop that is now closed "
                    "(each asyncio.run() makes a new loop): create the client inside the loop "
                    "that uses it"
                )
            raise ConfigurationError(
                "this AsyncSPOClient belongs to another event loop: create one client per loop"
            )

    def remember(self, task_id: str, request: OptimizationRequest) -> None:
        self.known[task_id] = TaskFacts(request.max_rounds, request.model, self.clock())
        if len(self.known) > _REMEMBERED_TASKS:
            self.known.popitem(last=False)


def schedule_option(schedule: object) -> PollSchedule:
    try:
        return as_schedule(schedule)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigurationError(str(exc)) from None


def retry_option(retry: object) -> RetryPolicy:
    if not isinstance(retry, RetryPolicy):
        raise ConfigurationError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
    return retry


def request_timeout_option(value: object) -> float:
    seconds = check_seconds("request_timeout", value, allow_none=False)
    assert seconds is not None  # noqa: S101 - allow_none=False
    if seconds <= 0:
        raise ConfigurationError(f"request_timeout must be > 0, got {value!r}")
    return seconds


def pool_size(max_connections: int, session: object) -> int:
    """The requests a client lets into flight: its own cap, or a smaller one of a session's."""
    connector = getattr(session, "connector", None)  # an aiohttp session's, if one was lent
    limit = getattr(connector, "limit", 0) if connector is not None else 0
    return min(max_connections, limit) if limit else max_connections


def check_request(request: object) -> OptimizationRequest:
    if not isinstance(request, OptimizationRequest):
        raise RequestValidationError(
            "request", f"expected an OptimizationRequest, got {type(request).__name__}"
        )
    return request
