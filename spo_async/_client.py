"""``AsyncSPOClient``: submit optimizations, read them, wait for them.

The client is glue: the sans-I/O core builds and reads messages, the transport
moves them, the polling layer decides when to look again. What lives here is
configuration (key, base URL, policies), the lifecycle (lazy session,
``aclose``), and the rules that protect a user's money: a submit is never
retried when it may have created a task, and a task id is never lost.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

from ._errors import (
    ClientClosedError,
    ConfigurationError,
    RequestValidationError,
    SPOError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
)
from ._limiter import RequestLimiter
from ._models import OptimizationRequest, TaskResult
from ._polling import (
    DEFAULT_WAIT_TIMEOUT,
    RetryHook,
    SnapshotHook,
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
    parse_retry_after,
    parse_submit_response,
    parse_task_response,
    quote_task_id,
    redact_response,
)
from ._schedules import PollMode, ScheduleLike, as_schedule
from ._settings import DEFAULT_CONCURRENCY, resolve_api_key, resolve_base_url
from ._sharing import SharedPolls
from ._transport import DEFAULT_MAX_RESPONSE_BYTES, AiohttpTransport, Transport

if TYPE_CHECKING:
    import aiohttp

    # The batch layer (and SQLite, for its journal) and the events are imported on
    # first use only, to keep ``import spo_async`` cheap.
    from ._batch import BatchInput, KeyFunction, Outcome
    from ._events import EventCallback
    from ._stream import EventStream

__all__ = ["AsyncSPOClient"]

log = logging.getLogger("spo_async")

#: How many submitted tasks the client remembers (for ``max_rounds`` and ``model``).
_REMEMBERED_TASKS: Final = 100_000


class _TaskFacts:
    """What the client knows of a task it submitted itself."""

    __slots__ = ("max_rounds", "model")

    def __init__(self, max_rounds: int, model: str) -> None:
        self.max_rounds = max_rounds
        self.model = model


class AsyncSPOClient:
    """An asyncio client for 302.AI's SPO prompt optimization service.

    Use it as an async context manager, or call :meth:`aclose` when done::

        async with AsyncSPOClient() as client:      # key from AI302_API_KEY
            result = await client.optimize(request)

    The API key comes from ``api_key``, else the first of
    :data:`API_KEY_ENV_VARS` that is set. The base URL comes from ``base_url``,
    else ``AI302_BASE_URL``, else :data:`DEFAULT_BASE_URL` (``https://api.302.ai``).

    One client holds one connection pool (at most ``max_connections``
    connections), created on the first request. ``request_timeout`` bounds each
    HTTP request; the overall deadline of a wait is separate (``timeout`` of
    :meth:`wait_for_result`). ``retry`` says how passing failures are retried,
    ``schedule`` when a running task is looked at again (by default an
    :class:`AdaptiveSchedule` that learns round times per model across this
    client's tasks and looks just after a round or the end is due), ``limiter`` how many
    requests per second and at once the whole client may send (by default no
    limit, but every HTTP 429 slows all of the client's requests down).

    ``session`` lets you bring your own :class:`aiohttp.ClientSession` (the
    client then never closes it); ``transport`` replaces the HTTP stack
    altogether. ``clock`` and ``sleep`` replace :func:`time.monotonic` and
    :func:`asyncio.sleep`, so tests can run waits at zero delay.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        request_timeout: float = 30.0,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        retry: RetryPolicy | None = None,
        schedule: ScheduleLike | None = None,
        limiter: RequestLimiter | None = None,
        lang: str | None = None,
        strict_status: bool = False,
        allow_insecure_http: bool = False,
        session: aiohttp.ClientSession | None = None,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._closed = True  # until construction succeeds; keeps __del__ quiet on errors
        self._api_key = resolve_api_key(api_key, os.environ)
        self.base_url = resolve_base_url(
            base_url, os.environ, allow_insecure_http=allow_insecure_http
        )
        if not request_timeout > 0:
            raise ConfigurationError(f"request_timeout must be > 0, got {request_timeout!r}")
        if lang is not None and lang not in {"en", "cn", "jp"}:
            raise ConfigurationError(f"lang must be 'en', 'cn' or 'jp', got {lang!r}")
        if session is not None and transport is not None:
            raise ConfigurationError("pass either session or transport, not both")
        self.request_timeout = float(request_timeout)
        self.retry = retry if retry is not None else RetryPolicy()
        if schedule is None:
            # Imported here: the adaptive schedule is the largest module of the SDK, and
            # ``import spo_async`` should not pay for it before a client needs it.
            from ._adaptive import AdaptiveSchedule  # noqa: PLC0415

            schedule = AdaptiveSchedule()
        self.schedule = as_schedule(schedule)
        self.limiter = limiter if limiter is not None else RequestLimiter()
        self.lang = lang
        self.strict_status = strict_status
        try:
            self._transport: Transport = transport or AiohttpTransport(
                session=session,
                max_connections=max_connections,
                max_response_bytes=max_response_bytes,
            )
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self._clock = clock
        self._sleep = sleep
        self._known: collections.OrderedDict[str, _TaskFacts] = collections.OrderedDict()
        self._shared = SharedPolls()
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<AsyncSPOClient base_url={self.base_url!r} api_key=<redacted> {state}>"

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._check_open()
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
        """Whether :meth:`aclose` was called."""
        return self._closed

    async def aclose(self) -> None:
        """Close the connection pool. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        await self._transport.aclose()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            _warn(
                f"unclosed {self!r}: use 'async with' or call 'await client.aclose()'",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("this AsyncSPOClient is closed; create a new one")

    # -- one HTTP exchange -------------------------------------------------------------------

    async def _send(self, request: HTTPRequest, *, task_id: str | None) -> HTTPResponse:
        """Send one request, logging one DEBUG line for the attempt whatever its outcome."""
        self._check_open()
        started = self._clock()
        attempt = current_attempt()
        outcome: int | str = "CancelledError"
        try:
            async with self.limiter.slot():
                response = await self._transport.send(request, timeout=self.request_timeout)
            # Nothing the service says may carry the key further: redact before parsing.
            response = redact_response(response, request)
            outcome = response.status
            if response.status == 429:
                self.limiter.on_rate_limited(self._pause_for(response))
            else:
                self.limiter.on_success()
        except SPOError as exc:
            outcome = type(exc).__name__
            scrub_exception(exc, request_secrets(request.headers))
            raise
        finally:
            log.debug(
                "%s %s -> %s after %.3f s (attempt %d, task %s)",
                request.method,
                request.path,
                outcome,
                self._clock() - started,
                attempt,
                task_id or "-",
                extra={"task_id": task_id, "attempt": attempt},
            )
        return response

    def _pause_for(self, response: HTTPResponse) -> float | None:
        """How long a 429 should pause every request of this client.

        The ``Retry-After`` the service asked for, as long as the client's retry
        policy would honour it: a longer one fails the call with
        :class:`RateLimitError` instead, and ``RetryPolicy.no_wait()`` pauses nothing.
        """
        if not self.retry.respect_retry_after:
            return None
        asked = parse_retry_after(response.headers.get("retry-after"), now=time.time())
        if asked is None or asked > self.retry.max_retry_after:
            return None
        return asked

    # -- the API -----------------------------------------------------------------------------

    async def submit(
        self,
        request: OptimizationRequest,
        *,
        retry: RetryPolicy | None = None,
        on_retry: RetryHook | None = None,
    ) -> str:
        """Start an optimization and return its task id at once.

        The submit is retried only when the service certainly created no task
        (the connection was never made, HTTP 429, or the service's own
        transient error envelope). When a failure leaves it open whether a task
        was created, :class:`SubmitOutcomeUnknownError` is raised, carrying the
        request, and nothing is resubmitted: a blind retry could bill twice.
        """
        self._check_open()
        if not isinstance(request, OptimizationRequest):
            raise RequestValidationError(
                "request", f"expected an OptimizationRequest, got {type(request).__name__}"
            )
        http = build_submit_request(self.base_url, self._api_key, request, lang=self.lang)

        async def once() -> str:
            return parse_submit_response(await self._send(http, task_id=None), now=time.time())

        try:
            task_id = await retry_call(
                once,
                operation="POST submit",
                policy=retry or self.retry,
                retryable=is_submit_retryable,
                sleep=self._sleep,
                clock=self._clock,
                on_retry=on_retry,
            )
        except SPOError as exc:
            if is_submit_unknown(exc):
                unknown = SubmitOutcomeUnknownError(request, exc)
                unknown.task_id = exc.task_id  # set when the id came but cannot be used
                raise unknown from exc
            raise
        self._remember(task_id, request)
        log.info("submitted task %s (%d rounds of %s)", task_id, request.max_rounds, request.model)
        return task_id

    def _remember(self, task_id: str, request: OptimizationRequest) -> None:
        self._known[task_id] = _TaskFacts(request.max_rounds, request.model)
        if len(self._known) > _REMEMBERED_TASKS:
            self._known.popitem(last=False)

    def _task_request(self, task_id: str) -> HTTPRequest:
        return build_task_request(self.base_url, self._api_key, task_id, lang=self.lang)

    async def _fetch(
        self, task_id: str, max_rounds: int | None, http: HTTPRequest | None = None
    ) -> TaskResult:
        """One GET of the task; a wait passes the request it built once for all its polls."""
        response = await self._send(http or self._task_request(task_id), task_id=task_id)
        parse = functools.partial(
            parse_task_response,
            response,
            task_id,
            max_rounds=max_rounds,
            strict_status=self.strict_status,
            now=time.time(),
        )
        if len(response.body) > PARSE_IN_THREAD_ABOVE:
            # A large answer costs tens to hundreds of milliseconds to read: in a worker
            # thread, the loop runs other tasks between its steps (bench/loop_stall.py).
            return await asyncio.to_thread(parse)
        return parse()

    def _max_rounds(self, task_id: str, max_rounds: int | None) -> int | None:
        if max_rounds is not None:
            return max_rounds
        facts = self._known.get(task_id)
        return facts.max_rounds if facts is not None else None

    async def get_task(self, task_id: str, *, max_rounds: int | None = None) -> TaskResult:
        """Read the task's current snapshot with exactly one GET (no retry, no waiting).

        ``max_rounds`` fills :attr:`TaskResult.max_rounds` for a task this client
        did not submit (the service does not report it).
        """
        self._check_open()
        quote_task_id(task_id)
        return await self._fetch(task_id, self._max_rounds(task_id, max_rounds))

    async def wait_for_result(
        self,
        task_id: str,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        on_progress: SnapshotHook | None = None,
        on_event: EventCallback | EventStream | None = None,
        schedule: ScheduleLike | None = None,
        retry: RetryPolicy | None = None,
        on_retry: RetryHook | None = None,
        max_rounds: int | None = None,
        raise_on_failure: bool = True,
    ) -> TaskResult:
        """Poll the task until it finishes and return its final snapshot.

        ``timeout`` is the overall deadline in seconds (``None`` waits forever);
        when it passes, :class:`WaitTimeoutError` carries the last snapshot, and
        the task keeps running (and billing) on the service. ``on_progress``
        (sync or async) receives every snapshot whose status or rounds changed;
        ``on_event`` receives the same story as typed events (queued, round k of
        n, retrying, succeeded, ...), as a callback or an :class:`EventStream`.
        Passing failures of a poll are retried per ``retry``; a task that ends in
        ``fail`` raises :class:`TaskFailedError` unless ``raise_on_failure`` is
        false. Any error that escapes carries ``task_id``.

        Cancelling the caller stops only the local polling, at once.
        """
        self._check_open()
        quote_task_id(task_id)
        if timeout is not None and not timeout >= 0:
            raise RequestValidationError("timeout", f"must be >= 0 or None, got {timeout!r}")
        if on_event is not None:
            from ._events import chain_hooks, final_event, hooks_for  # noqa: PLC0415
            from ._stream import as_stream  # noqa: PLC0415
        stream, owned = as_stream(on_event) if on_event is not None else (None, False)
        if stream is not None:
            progress_events, retry_events = hooks_for(stream.emit)
            on_progress = chain_hooks(on_progress, progress_events)
            on_retry = chain_hooks(on_retry, retry_events)
        try:
            result = await self._wait(
                task_id,
                timeout=timeout,
                on_progress=on_progress,
                schedule=schedule,
                retry=retry,
                on_retry=on_retry,
                max_rounds=max_rounds,
                raise_on_failure=raise_on_failure,
            )
        except BaseException as exc:
            if stream is not None:
                stream.emit(final_event(key=None, task_id=task_id, error=exc))
            raise
        else:
            if stream is not None:
                stream.emit(final_event(key=None, task_id=task_id, result=result))
            return result
        finally:
            if owned and stream is not None:
                await stream.aclose()

    async def _wait(
        self,
        task_id: str,
        *,
        timeout: float | None,
        on_progress: SnapshotHook | None,
        schedule: ScheduleLike | None,
        retry: RetryPolicy | None,
        on_retry: RetryHook | None,
        max_rounds: int | None,
        raise_on_failure: bool,
    ) -> TaskResult:
        """The shared poll loop of :meth:`wait_for_result`, without events."""
        facts = self._known.get(task_id)
        rounds = self._max_rounds(task_id, max_rounds)
        policy = retry or self.retry
        chosen = as_schedule(schedule) if schedule is not None else self.schedule
        http = self._task_request(task_id)

        def run(
            remaining: float | None,
            publish: Callable[[TaskResult], Awaitable[None]],
            mode: Callable[[], PollMode],
            takeover: bool,
        ) -> Awaitable[TaskResult]:
            return poll_until_done(
                lambda: self._fetch(task_id, rounds, http),
                task_id=task_id,
                schedule=chosen,
                policy=policy,
                timeout=remaining,
                sleep=self._sleep,
                clock=self._clock,
                mode=mode,
                max_rounds=rounds,
                model=facts.model if facts is not None else None,
                on_snapshot=publish,
                on_retry=on_retry,
                look_at_once=takeover,
            )

        try:
            result = await self._shared.wait(
                task_id, run, timeout=timeout, clock=self._clock, on_progress=on_progress
            )
        except SPOError as exc:
            if exc.task_id is None:
                exc.task_id = task_id
                exc.add_note(f"task_id: {task_id} (the task may still be running)")
            raise
        if result.failed and raise_on_failure:
            raise TaskFailedError(task_id, result)
        return result

    async def optimize(
        self,
        request: OptimizationRequest,
        *,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        on_progress: SnapshotHook | None = None,
        on_event: EventCallback | EventStream | None = None,
        schedule: ScheduleLike | None = None,
        retry: RetryPolicy | None = None,
        on_retry: RetryHook | None = None,
        raise_on_failure: bool = True,
    ) -> TaskResult:
        """Submit ``request`` and wait for its result: :meth:`submit` then :meth:`wait_for_result`.

        If the wait fails, the error's ``task_id`` says which task to look for later.
        """
        if on_event is not None:
            from ._events import TaskSubmitted, final_event  # noqa: PLC0415
            from ._stream import as_stream  # noqa: PLC0415
        stream, owned = as_stream(on_event) if on_event is not None else (None, False)
        try:
            try:
                task_id = await self.submit(request, retry=retry, on_retry=on_retry)
            except BaseException as exc:
                if stream is not None:
                    stream.emit(final_event(key=None, task_id=None, error=exc))
                raise
            if stream is not None:
                stream.emit(TaskSubmitted(key=None, task_id=task_id))
            return await self.wait_for_result(
                task_id,
                timeout=timeout,
                on_progress=on_progress,
                on_event=stream,
                schedule=schedule,
                retry=retry,
                on_retry=on_retry,
                raise_on_failure=raise_on_failure,
            )
        finally:
            if owned and stream is not None:
                await stream.aclose()

    # -- many tasks --------------------------------------------------------------------------

    def optimize_many(
        self,
        requests: BatchInput,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        keys: KeyFunction | None = None,
        journal: str | os.PathLike[str] | None = None,
        resubmit_unknown: bool = False,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        on_event: EventCallback | EventStream | None = None,
        schedule: ScheduleLike | None = None,
        retry: RetryPolicy | None = None,
    ) -> AsyncIterator[Outcome]:
        """Optimize many requests at once; yield each one's :class:`Outcome` as it finishes.

        ``requests`` are requests, ``(key, request)`` pairs, :class:`BatchItem` objects or a
        mapping of key to request; ``keys`` derives a key from each request
        instead. At most ``concurrency`` tasks are in flight. Outcomes come in
        completion order and carry their item's key, index and request; one
        failing item never stops the others. ``journal`` names a SQLite file that
        makes the batch resumable after a crash without paying twice; items whose
        submit may have created a task are reported as :class:`OutcomeUnknown`
        and resubmitted only with ``resubmit_unknown``. ``timeout`` is each
        task's wait deadline. Wrap the iterator in :func:`contextlib.aclosing`
        to stop early and cleanly.
        """
        self._check_open()
        from ._batch import iter_outcomes  # noqa: PLC0415 - keeps sqlite3 out of the import

        return iter_outcomes(
            self,
            requests,
            concurrency=concurrency,
            keys=keys,
            journal=journal,
            resubmit_unknown=resubmit_unknown,
            timeout=timeout,
            on_event=on_event,
            schedule=schedule,
            retry=retry,
        )

    async def optimize_all(
        self,
        requests: BatchInput,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        keys: KeyFunction | None = None,
        journal: str | os.PathLike[str] | None = None,
        resubmit_unknown: bool = False,
        timeout: float | None = DEFAULT_WAIT_TIMEOUT,
        on_event: EventCallback | EventStream | None = None,
        schedule: ScheduleLike | None = None,
        retry: RetryPolicy | None = None,
    ) -> list[Outcome]:
        """Optimize many requests and return every :class:`Outcome` in input order.

        The options are those of :meth:`optimize_many`.
        """
        self._check_open()
        from ._batch import gather_outcomes  # noqa: PLC0415 - keeps sqlite3 out of the import

        return await gather_outcomes(
            self,
            requests,
            concurrency=concurrency,
            keys=keys,
            journal=journal,
            resubmit_unknown=resubmit_unknown,
            timeout=timeout,
            on_event=on_event,
            schedule=schedule,
            retry=retry,
        )
