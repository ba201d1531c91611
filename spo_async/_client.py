"""``AsyncSPOClient``: submit optimizations, read them, wait for them.

The client is glue: the sans-I/O core builds and reads messages, the transport
moves them, the polling layer decides when to look again. What lives here is
configuration (key, base URL, policies), the lifecycle (lazy session,
``aclose``), and the rules that protect a user's money: every argument is
checked before anything is sent, a submit is never retried when it may have
created a task, and a task id is never lost.

A client is a *core* (the connection pool, the limiter, the shared waits, what
it knows of the tasks it submitted) and *options* (deadlines, retry policy,
schedule). :meth:`AsyncSPOClient.with_options` makes a view with other options
on the same core, so per-call policy never needs a keyword on every method.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
import warnings
from collections.abc import Awaitable, Callable, Hashable
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self

import attrs

from ._checks import check_count, check_flag, check_poll_mode, check_seconds
from ._core import (
    UNSET,
    Core,
    Options,
    SubmitAttempt,
    SubmitGate,
    TaskFacts,
    Unset,
    check_request,
    pool_size,
    request_timeout_option,
    retry_option,
    schedule_option,
)
from ._errors import (
    ConfigurationError,
    SPOError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
)
from ._limiter import RequestLimiter
from ._models import OptimizationRequest, TaskResult
from ._polling import (
    DEFAULT_WAIT_TIMEOUT,
    LoopObserver,
    Observer,
    by_deadline,
    current_attempt,
    poll_until_done,
    retry_call,
)
from ._redact import request_secrets, scrub_exception
from ._retry import RetryPolicy, is_submit_retryable, is_submit_unknown
from ._sansio import (
    PARSE_IN_THREAD_ABOVE,
    HTTPRequest,
    HTTPResponse,
    build_submit_request,
    build_task_request,
    error_from_response,
    parse_retry_after,
    parse_submit_response,
    parse_task_response,
    quote_task_id,
    redact_response,
)
from ._schedules import PollMode, PollModeLike, PollSchedule, ScheduleLike
from ._settings import DEFAULT_CONCURRENCY, resolve_api_key, resolve_base_url
from ._sharing import Waiter
from ._stream import OnEvent, Watching
from ._transport import DEFAULT_MAX_RESPONSE_BYTES, AiohttpTransport, Transport

if TYPE_CHECKING:
    import aiohttp

    # The batch layer (and SQLite, for its journal) and the event stream are imported
    # on first use only, to keep ``import spo_async`` cheap.
    from ._batch import Batch, BatchInput, KeyFunction
    from ._events import Outcome

__all__ = ["UNSET", "AsyncSPOClient", "SubmitGate", "Unset"]

log = logging.getLogger("spo_async")


class _TaskPoll:
    """One wait's poll loop as the shared waits run it, and the GET it repeats.

    An object rather than a closure: every wait makes one, and a closure over the
    same values is a cell for each, all living as long as the wait.
    """

    __slots__ = ("client", "facts", "http", "rounds", "task_id", "timeout")

    def __init__(
        self,
        client: AsyncSPOClient,
        task_id: str,
        *,
        rounds: int | None,
        facts: TaskFacts | None,
        http: HTTPRequest,
        timeout: float | None,
    ) -> None:
        self.client = client
        self.task_id = task_id
        self.rounds = rounds
        self.facts = facts
        self.http = http
        self.timeout = timeout

    def fetch(self) -> Awaitable[TaskResult]:
        return self.client._fetch(self.task_id, self.rounds, self.http)

    def __call__(
        self,
        leader_deadline: float | None,
        fan_out: LoopObserver,
        mode: Callable[[], PollMode],
        takeover: bool,
    ) -> Awaitable[TaskResult]:
        core, options, facts = self.client._core, self.client._options, self.facts
        fetch: Callable[[], Awaitable[TaskResult]] = self.fetch
        if core.claims is not None:  # a shared store: its claims decide who makes the GET
            fetch = core.claims.fetcher(self.task_id, fetch, hold=options.request_timeout)
        return poll_until_done(
            fetch,
            task_id=self.task_id,
            schedule=options.schedule,
            policy=options.retry,
            deadline=leader_deadline,
            timeout=self.timeout,
            sleep=core.sleep,
            clock=core.clock,
            mode=mode,
            max_rounds=self.rounds,
            model=facts.model if facts is not None else None,
            submitted_at=facts.submitted_at if facts is not None else None,
            observer=fan_out,
            look_at_once=takeover,
        )


class AsyncSPOClient:
    """An asyncio client for 302.AI's SPO prompt optimization service.

    Use it as an async context manager, or call :meth:`aclose` when done::

        async with AsyncSPOClient() as client:      # key from AI302_API_KEY
            result = await client.optimize(request)

    The API key comes from ``api_key``, else the first of ``AI302_API_KEY``,
    ``302AI_API_KEY``, ``AI302_KEY``, ``NEXT_PUBLIC_302_API_KEY`` that is set.
    The base URL comes from ``base_url``, else ``AI302_BASE_URL``, else
    ``https://api.302.ai``; plain ``http://`` is refused for any host but this
    machine unless ``allow_insecure_http`` is true.

    One client holds one connection pool (at most ``max_connections``
    connections, which is also the most requests in flight), created on the
    first request, and belongs to the event loop that first uses it.
    ``request_timeout`` bounds each HTTP request; ``timeout`` is the default
    overall deadline of a wait (15 minutes). ``retry`` says how passing
    failures are retried, ``schedule`` when a running task is looked at again
    (by default an :class:`~spo_async.polling.AdaptiveSchedule` that learns
    round times per model), ``limiter`` how fast the whole client may send (by
    default a rate found from the service's 429s, starting slowly as TCP does).
    ``lang`` asks the service for messages in ``"en"``, ``"cn"`` or ``"jp"``;
    ``strict_status`` makes an unknown task status a
    :class:`~spo_async.ProtocolError` instead of ``TaskStatus.UNKNOWN``.

    ``session`` lets you bring your own :class:`aiohttp.ClientSession` (the
    client then never closes it); ``transport`` replaces the HTTP stack
    altogether (see :mod:`spo_async.transport`). ``clock`` and ``sleep``
    replace :func:`time.monotonic` and :func:`asyncio.sleep` for every wait the
    client makes, so tests can run waits at zero delay.

    Every argument of every method is checked before anything is sent: a
    mistake raises :class:`~spo_async.ConfigurationError` (an option) or
    :class:`~spo_async.RequestValidationError` (what would be sent).
    """

    _core: Core
    _options: Options
    _owner: bool

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        request_timeout: float = 30.0,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        retry: RetryPolicy | None = None,
        schedule: ScheduleLike | None = None,
        limiter: RequestLimiter | None = None,
        lang: Literal["en", "cn", "jp"] | None = None,
        strict_status: bool = False,
        allow_insecure_http: bool = False,
        session: aiohttp.ClientSession | None = None,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._owner = False  # until construction succeeds; keeps __del__ quiet on errors
        key = resolve_api_key(api_key, os.environ)
        base = resolve_base_url(
            base_url,
            os.environ,
            allow_insecure_http=check_flag("allow_insecure_http", allow_insecure_http),
        )
        if lang is not None and lang not in {"en", "cn", "jp"}:
            raise ConfigurationError(f"lang must be 'en', 'cn', 'jp' or None, got {lang!r}")
        if session is not None and transport is not None:
            raise ConfigurationError("pass either session or transport, not both")
        if limiter is not None and not isinstance(limiter, RequestLimiter):
            raise ConfigurationError(
                f"limiter must be a RequestLimiter, got {type(limiter).__name__}"
            )
        for name, function in (("clock", clock), ("sleep", sleep)):
            if not callable(function):
                raise ConfigurationError(f"{name} must be callable, got {type(function).__name__}")
        check_count("max_connections", max_connections)
        check_count("max_response_bytes", max_response_bytes)
        if schedule is None:
            # Imported here: the adaptive schedule is the largest module of the SDK, and
            # ``import spo_async`` should not pay for it before a client needs it.
            from ._adaptive import AdaptiveSchedule  # noqa: PLC0415

            schedule = AdaptiveSchedule()
        options = Options(
            timeout=check_seconds("timeout", timeout),
            request_timeout=request_timeout_option(request_timeout),
            retry=retry_option(retry if retry is not None else RetryPolicy()),
            schedule=schedule_option(schedule),
            strict_status=check_flag("strict_status", strict_status),
        )
        if transport is None:
            transport = AiohttpTransport._for_client(
                session=session,
                max_connections=max_connections,
                max_response_bytes=max_response_bytes,
            )
        elif not isinstance(transport, Transport):
            raise ConfigurationError(
                f"transport must implement send() and aclose(), got {type(transport).__name__}"
            )
        limiter = limiter if limiter is not None else RequestLimiter()
        limiter._bind(clock, sleep, key)  # every wait on the client's clock, the limiter's too
        self._core = Core(
            api_key=key,
            base_url=base,
            lang=lang,
            transport=transport,
            limiter=limiter,
            clock=clock,
            sleep=sleep,
            max_connections=pool_size(max_connections, session),
        )
        self._options = options
        self._owner = True

    def with_options(
        self,
        *,
        timeout: float | Unset | None = UNSET,
        request_timeout: float | Unset = UNSET,
        retry: RetryPolicy | Unset = UNSET,
        schedule: ScheduleLike | Unset = UNSET,
        strict_status: bool | Unset = UNSET,
    ) -> AsyncSPOClient:
        """A view of this client with other options, sharing its pool, limiter and waits.

        The view is cheap (no new connections) and is meant to be made per use::

            patient = client.with_options(timeout=3600, retry=RetryPolicy(attempts=10))
            result = await patient.wait_for_result(task_id)

        Options not given keep this client's values. Waits for the same task
        through views with different policies poll separately, each with its own;
        waits with the same policy share one poll loop. Closing a view closes the
        client it was made from (they share the pool).
        """
        changes: dict[str, object] = {}
        if timeout is not UNSET:
            changes["timeout"] = check_seconds("timeout", timeout)
        if request_timeout is not UNSET:
            changes["request_timeout"] = request_timeout_option(request_timeout)
        if retry is not UNSET:
            changes["retry"] = retry_option(retry)
        if schedule is not UNSET:
            changes["schedule"] = schedule_option(schedule)
        if strict_status is not UNSET:
            changes["strict_status"] = check_flag("strict_status", strict_status)
        view = object.__new__(AsyncSPOClient)
        view._core = self._core
        view._options = attrs.evolve(self._options, **changes)  # type: ignore[arg-type]
        view._owner = False
        return view

    def __repr__(self) -> str:
        state = "closed" if self._core.closed else "open"
        kind = "" if self._owner else " (view)"
        return f"<AsyncSPOClient{kind} base_url={self._core.base_url!r} api_key=<redacted> {state}>"

    # -- read-only settings ------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The service's address, checked and without a trailing slash."""
        return self._core.base_url

    @property
    def limiter(self) -> RequestLimiter:
        """The request budget every view of this client shares."""
        return self._core.limiter

    @property
    def timeout(self) -> float | None:
        """The default overall deadline of a wait, in seconds (``None``: none)."""
        return self._options.timeout

    @property
    def retry(self) -> RetryPolicy:
        """How passing failures are retried."""
        return self._options.retry

    @property
    def schedule(self) -> PollSchedule:
        """When a running task is looked at again."""
        return self._options.schedule

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._core.check_usable()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called (on this client or any of its views)."""
        return self._core.closed

    async def aclose(self) -> None:
        """Close the connection pool. Calling it again does nothing."""
        core = self._core
        if core.closed:
            return
        core.closed = True
        try:
            await core.transport.aclose()
        finally:
            await core.limiter._release()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_owner", False) and not self._core.closed and self._core.warns_unclosed:
            self._core.closed = True
            _warn(
                f"unclosed {self!r}: use 'async with' or call 'await client.aclose()'",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )

    # -- one HTTP exchange -------------------------------------------------------------------

    async def _send(
        self, request: HTTPRequest, *, task_id: str | None, attempt: SubmitAttempt | None = None
    ) -> HTTPResponse:
        """Send one request, logging one DEBUG line for the attempt whatever its outcome.

        It waits for a connection slot, then for the limiter, and only then hands the
        request to the transport; ``attempt`` (a submit's) hears that moment, and
        hears whether the service refused it.
        """
        core = self._core
        core.check_usable()
        started = core.clock()
        number = current_attempt()
        outcome: int | str = "CancelledError"
        slots = core.slots
        try:
            # The pool's slot by hand rather than with ``async with``: this runs for every
            # request, and the context manager's coroutines cost more than the rest of it.
            await slots.acquire()
            try:
                async with core.limiter.slot():
                    if attempt is not None:
                        attempt.leaving()
                    response = await core.transport.send(
                        request, timeout=self._options.request_timeout
                    )
            finally:
                slots.release()
            # Nothing the service says may carry the key further: redact before parsing.
            response = redact_response(response, request, core.redactor)
            outcome = response.status
            if response.status == 429:
                core.limiter.on_rate_limited(self._pause_for(response))
            else:
                core.limiter.on_success()
            if attempt is not None and not 200 <= response.status < 300:
                error = error_from_response(response, now=time.time())
                if not is_submit_unknown(error):
                    attempt.refused()
        except SPOError as exc:
            outcome = type(exc).__name__
            scrub_exception(exc, request_secrets(request.headers))
            raise
        finally:
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s %s -> %s after %.3f s (attempt %d, task %s)",
                    request.method,
                    request.path,
                    outcome,
                    core.clock() - started,
                    number,
                    task_id or "-",
                    extra={"task_id": task_id, "attempt": number},
                )
        return response

    def _pause_for(self, response: HTTPResponse) -> float | None:
        """How long a 429 should pause every request of this client.

        The ``Retry-After`` the service asked for, as long as the retry policy
        would honour it: a longer one fails the call with :class:`RateLimitError`
        instead, and ``RetryPolicy.no_wait()`` pauses nothing.
        """
        policy = self._options.retry
        if not policy.respect_retry_after:
            return None
        asked = parse_retry_after(response.headers.get("retry-after"), now=time.time())
        if asked is None or asked > policy.max_retry_after:
            return None
        return asked

    # -- submit ------------------------------------------------------------------------------

    async def submit(self, request: OptimizationRequest) -> str:
        """Start an optimization and return its task id at once.

        The submit is retried only when the service certainly created no task
        (the connection was never made, HTTP 429, or the service's own
        transient error envelope). When a failure leaves it open whether a task
        was created, :class:`~spo_async.SubmitOutcomeUnknownError` is raised,
        carrying the request, and nothing is resubmitted: a blind retry could
        bill twice.
        """
        self._core.check_usable()
        return await self._submit(check_request(request), deadline=None, timeout=None)

    async def _submit(
        self,
        request: OptimizationRequest,
        *,
        deadline: float | None,
        timeout: float | None,
        observer: Observer | None = None,
        gate: SubmitGate | None = None,
    ) -> str:
        """:meth:`submit`, bounded by ``deadline`` (on the client's clock) when given.

        A deadline that cuts off a POST that had left is an outcome unknown; one
        that passes before it left is a :class:`~spo_async.WaitTimeoutError`
        without a task.
        """
        core = self._core
        http = build_submit_request(core.base_url, core.api_key, request, lang=core.lang)

        async def once() -> str:
            attempt = SubmitAttempt(gate, http=http, timeout=timeout)
            sending = self._send(http, task_id=None, attempt=attempt)
            response = await (
                sending
                if deadline is None
                else by_deadline(sending, deadline, core.clock, attempt.expired)
            )
            return parse_submit_response(response, now=time.time())

        try:
            task_id = await retry_call(
                once,
                operation="POST submit",
                policy=self._options.retry,
                retryable=is_submit_retryable,
                sleep=core.sleep,
                clock=core.clock,
                deadline=deadline,
                observer=observer,
            )
        except SPOError as exc:
            if is_submit_unknown(exc):
                unknown = SubmitOutcomeUnknownError(request, exc)
                unknown.task_id = exc.task_id  # set when the id came but cannot be used
                raise unknown from exc
            raise
        core.remember(task_id, request)
        log.info("submitted task %s (%d rounds of %s)", task_id, request.max_rounds, request.model)
        return task_id

    # -- read --------------------------------------------------------------------------------

    def _facts(self, task_id: str, max_rounds: int | None) -> tuple[int | None, TaskFacts | None]:
        facts = self._core.known.get(task_id)
        if max_rounds is None and facts is not None:
            max_rounds = facts.max_rounds
        return max_rounds, facts

    async def _fetch(
        self, task_id: str, max_rounds: int | None, http: HTTPRequest | None = None
    ) -> TaskResult:
        """One GET of the task; a wait passes the request it built once for all its looks."""
        core = self._core
        if http is None:
            http = build_task_request(core.base_url, core.api_key, task_id, lang=core.lang)
        response = await self._send(http, task_id=task_id)
        strict, now = self._options.strict_status, time.time()
        if len(response.body) > PARSE_IN_THREAD_ABOVE:
            # A large answer costs tens to hundreds of milliseconds to read: in a worker
            # thread, the loop runs other tasks between its steps (bench/loop_stall.py).
            return await asyncio.to_thread(
                functools.partial(
                    parse_task_response,
                    response,
                    task_id,
                    max_rounds=max_rounds,
                    strict_status=strict,
                    now=now,
                )
            )
        return parse_task_response(
            response, task_id, max_rounds=max_rounds, strict_status=strict, now=now
        )

    async def get_task(self, task_id: str, *, max_rounds: int | None = None) -> TaskResult:
        """Read the task's current snapshot with exactly one GET (no retry, no waiting).

        ``max_rounds`` fills :attr:`TaskResult.max_rounds` for a task this client
        did not submit (the service does not report it).
        """
        self._core.check_usable()
        quote_task_id(task_id)
        rounds = check_count("max_rounds", max_rounds, allow_none=True)
        return await self._fetch(task_id, self._facts(task_id, rounds)[0])

    # -- wait --------------------------------------------------------------------------------

    def _deadline(self, timeout: float | Unset | None) -> tuple[float | None, float | None]:
        """The call's timeout (checked, or the client's) and its deadline on the clock."""
        seconds = self._options.timeout if timeout is UNSET else check_seconds("timeout", timeout)
        return seconds, (None if seconds is None else self._core.clock() + seconds)

    async def wait_for_result(
        self,
        task_id: str,
        *,
        timeout: float | Unset | None = UNSET,
        on_event: OnEvent = None,
        max_rounds: int | None = None,
        raise_on_failure: bool = True,
        poll_mode: PollModeLike | None = None,
    ) -> TaskResult:
        """Poll the task until it finishes and return its final snapshot.

        ``timeout`` is the overall deadline in seconds (``None`` waits forever;
        by default the client's, 15 minutes); when it passes,
        :class:`~spo_async.WaitTimeoutError` carries the last snapshot, and the
        task keeps running (and billing) on the service. ``on_event`` (a
        callback, sync or async, or an :class:`~spo_async.EventStream`)
        receives the task's progress events, then its outcome; a callback is
        called from a task of its own, so a slow one never delays the polling,
        and it is given until the deadline to catch up. Passing failures of a
        poll are retried per the client's ``retry``; a task that ends in
        ``fail`` raises :class:`~spo_async.TaskFailedError` unless
        ``raise_on_failure`` is false. Any error that escapes carries ``task_id``.

        ``max_rounds`` gives the number of rounds of a task this client did not
        submit. ``poll_mode`` says what the looks are for: every round as it lands
        (``"progress"``, the default with ``on_event``) or only the end
        (``"completion"``, the default without; an ``on_event`` still gets each
        round, when a look sees it, and a failure mid-way is seen at the look
        planned for the end). Waits of one task in one client share one loop, which
        looks for every round while any of them asks for it. Cancelling the caller
        stops only its own polling, at once.
        """
        core = self._core
        core.check_usable()
        quote_task_id(task_id)
        seconds, deadline = self._deadline(timeout)
        rounds = check_count("max_rounds", max_rounds, allow_none=True)
        check_flag("raise_on_failure", raise_on_failure)
        mode = check_poll_mode(poll_mode)
        async with Watching(on_event, deadline=deadline, clock=core.clock) as watching:
            reporter = watching.reporter(total=self._facts(task_id, rounds)[0])
            try:
                result = await self._wait(
                    task_id,
                    timeout=seconds,
                    deadline=deadline,
                    observer=reporter,
                    max_rounds=rounds,
                    raise_on_failure=raise_on_failure,
                    poll_mode=mode,
                )
            except BaseException as exc:
                watching.ended(task_id=task_id, error=exc)
                raise
            watching.ended(task_id=task_id, result=result)
            return result

    def _poll_key(self, task_id: str, max_rounds: int | None) -> Hashable:
        """What decides whether two waits may share one poll loop: the task and the policy."""
        options = self._options
        return (
            task_id,
            max_rounds,
            id(options.schedule),
            options.retry,
            options.request_timeout,
            options.strict_status,
        )

    async def _wait(
        self,
        task_id: str,
        *,
        timeout: float | None,
        deadline: float | None,
        observer: Observer | None,
        max_rounds: int | None,
        raise_on_failure: bool,
        poll_mode: PollMode | None,
    ) -> TaskResult:
        """The shared poll loop behind every wait, with this view's policy.

        ``poll_mode`` ``None`` looks at every round when there is an ``observer`` to tell.
        """
        core = self._core
        rounds, facts = self._facts(task_id, max_rounds)
        http = build_task_request(core.base_url, core.api_key, task_id, lang=core.lang)
        run = _TaskPoll(self, task_id, rounds=rounds, facts=facts, http=http, timeout=timeout)
        if poll_mode is None:
            poll_mode = PollMode.COMPLETION if observer is None else PollMode.PROGRESS
        waiter = Waiter(
            timeout=timeout,
            deadline=deadline,
            observer=observer,
            progress=poll_mode is PollMode.PROGRESS,
        )
        try:
            result = await core.shared.wait(
                self._poll_key(task_id, rounds), task_id, waiter, run, clock=core.clock
            )
        except SPOError as exc:
            if exc.task_id is None:
                exc.task_id = task_id
                exc.add_note(f"task_id: {task_id} (the task may still be running)")
            raise
        if result.failed and raise_on_failure:
            raise TaskFailedError(task_id, result)
        return result

    # -- both --------------------------------------------------------------------------------

    async def optimize(
        self,
        request: OptimizationRequest,
        *,
        timeout: float | Unset | None = UNSET,
        on_event: OnEvent = None,
        raise_on_failure: bool = True,
        poll_mode: PollModeLike | None = None,
    ) -> TaskResult:
        """Submit ``request`` and wait for its result, all within ``timeout`` seconds.

        ``timeout`` bounds the whole call, the submit included (by default the
        client's, 15 minutes). A deadline that falls while the submit is in
        flight raises :class:`~spo_async.SubmitOutcomeUnknownError`: a task may
        exist. Once the task exists, ``on_event`` receives
        :class:`~spo_async.TaskSubmitted` with its id before anything else is
        awaited, and every error that escapes carries ``task_id``; if the
        caller is cancelled (its own ``asyncio.timeout``, a cancelled task), the
        ``CancelledError`` carries a note with the task id, and the id is logged
        at INFO. The other options are :meth:`wait_for_result`'s.
        """
        core = self._core
        core.check_usable()
        request = check_request(request)
        seconds, deadline = self._deadline(timeout)
        check_flag("raise_on_failure", raise_on_failure)
        mode = check_poll_mode(poll_mode)
        async with Watching(on_event, deadline=deadline, clock=core.clock) as watching:
            reporter = watching.reporter(total=request.max_rounds)
            task_id: str | None = None
            sending = SubmitAttempt(None)  # whether a POST may be out, if this call is cancelled
            try:
                task_id = await self._submit(
                    request, deadline=deadline, timeout=seconds, observer=reporter, gate=sending
                )
                watching.submitted(task_id)
                result = await self._wait(
                    task_id,
                    timeout=seconds,
                    deadline=deadline,
                    observer=reporter,
                    max_rounds=request.max_rounds,
                    raise_on_failure=raise_on_failure,
                    poll_mode=mode,
                )
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):
                    if task_id is not None:
                        note = f"task {task_id} was submitted and keeps running on the service"
                    elif sending.left:
                        note = "cancelled while the submit was in flight: a task may exist"
                    else:
                        note = "cancelled before the submit left: no task was created"
                    exc.add_note(f"spo-async: {note}")
                watching.ended(task_id=task_id, request=request, error=exc)
                raise
            watching.ended(task_id=task_id, request=request, result=result)
            return result

    # -- many tasks --------------------------------------------------------------------------

    def optimize_many(
        self,
        requests: BatchInput,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        keys: KeyFunction | None = None,
        journal: str | os.PathLike[str] | None = None,
        resubmit_unknown: bool = False,
        timeout: float | Unset | None = UNSET,
        on_event: OnEvent = None,
        poll_mode: PollModeLike | None = None,
    ) -> Batch:
        """Optimize many requests at once; a :class:`~spo_async.Batch` yields each outcome.

        ``requests`` are requests, ``(key, request)`` pairs or a mapping of key to
        request; ``keys`` derives a key from each request instead. At most
        ``concurrency`` tasks are in flight. Outcomes come in completion order
        and carry their item's key, index and request; one failing item never
        stops the others. ``journal`` names a SQLite file that makes the batch
        resumable after a crash without paying twice; items whose submit may have
        created a task are reported as :class:`~spo_async.OutcomeUnknown` and
        resubmitted only with ``resubmit_unknown``; a ``postgresql://`` URI instead
        shares the batch with every process that runs it on that database
        (``spo-async[postgres]``). ``timeout`` is each task's
        wait deadline (by default the client's); ``on_event`` gets every task's
        events and :class:`~spo_async.BatchProgress`. ``poll_mode`` is
        :meth:`wait_for_result`'s, for every task; by default each round is looked
        for when ``on_event`` or a journal is there to be told of it, and
        ``PollMode.COMPLETION`` saves those looks when only the outcomes matter.

        Everything, the whole input included, is checked here, before anything
        is sent. Nothing starts until the batch is iterated or entered::

            async with client.optimize_many(requests, journal="run.db") as batch:
                async for outcome in batch:
                    ...

        Leaving the ``async with`` (or ``await batch.aclose()``) stops new submits
        at once; a consumer that stops pulling lets at most ``concurrency`` more
        tasks be submitted.
        """
        self._core.check_usable()
        from ._batch import Batch, BatchOptions  # noqa: PLC0415 - keeps sqlite3 out of the import

        options = BatchOptions.checked(
            self,
            concurrency=concurrency,
            keys=keys,
            journal=journal,
            resubmit_unknown=resubmit_unknown,
            timeout=timeout,
            on_event=on_event,
            poll_mode=poll_mode,
        )
        return Batch._prepare(self, requests, options, keys)

    async def optimize_all(
        self,
        requests: BatchInput,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        keys: KeyFunction | None = None,
        journal: str | os.PathLike[str] | None = None,
        resubmit_unknown: bool = False,
        timeout: float | Unset | None = UNSET,
        on_event: OnEvent = None,
        poll_mode: PollModeLike | None = None,
    ) -> list[Outcome]:
        """Optimize many requests and return every :class:`~spo_async.Outcome` in input order.

        The options are those of :meth:`optimize_many`.
        """
        batch = self.optimize_many(
            requests,
            concurrency=concurrency,
            keys=keys,
            journal=journal,
            resubmit_unknown=resubmit_unknown,
            timeout=timeout,
            on_event=on_event,
            poll_mode=poll_mode,
        )
        async with batch:
            outcomes: list[Outcome] = [outcome async for outcome in batch]
        outcomes.sort(key=lambda o: o.index if o.index is not None else -1)
        return outcomes
