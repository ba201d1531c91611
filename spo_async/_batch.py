"""Many tasks at once: bounded concurrency, per-task outcomes, and a journal to resume from.

:func:`iter_outcomes` runs a batch and yields one :class:`Outcome` per item as
items finish (completion order); :func:`gather_outcomes` returns them all in
input order. Each outcome is a value, never a raised exception: one failing
task does not cancel the batch, and every item comes back exactly once as
:class:`Succeeded`, :class:`Failed` (the task ended in ``fail``),
:class:`Errored` (the submit or the wait failed; ``task_id`` says whether a
task exists) or :class:`OutcomeUnknown` (a submit may have created a task whose
id was lost).

Work is done by a fixed pool of ``concurrency`` worker tasks, each taking the
next item, submitting it and waiting for its task: a 10,000-item batch has at
most ``concurrency`` tasks running on the service, and as many asyncio tasks.
The client's limiter, shared with everything else the client does, sets the
pace of the HTTP requests themselves.

Keys. Each item has a key: the caller's own (``(key, request)`` pairs, a
mapping, or a ``keys`` function), or a derived one, ``"<index>-<fingerprint>"``
(the item's position in the input and the first 12 hex digits of its request's
sha256), stable across runs as long as the input keeps its order. Keys are
strings or ints. The input is read in full before anything is sent, so that a
duplicate key, or a journal written for a different batch, is refused before a
single request (and a single cent) goes out.

Journal. With ``journal=path`` every step is recorded (see
:mod:`spo_async._journal`) and running the same batch again resumes it:
finished items come back from the journal without a request (``from_journal``
is true), items with a task id are polled, items never sent are submitted, and
items whose submit may have reached the service are reported as
:class:`OutcomeUnknown` and not resubmitted, unless ``resubmit_unknown=True``.

Stopping. Leaving the ``async for`` early, or cancelling it, cancels every
worker and closes the journal; use ``contextlib.aclosing(iter_outcomes(...))``
so that this happens at once rather than when the generator is collected. The
tasks already submitted keep running (and billing) on the service; their ids
are in the journal, and the next run picks them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final, TypeAlias

import attrs

from ._errors import RequestValidationError, SPOError, SubmitOutcomeUnknownError
from ._events import (
    BatchKey,
    BatchProgress,
    Event,
    EventCallback,
    TaskSubmitted,
    final_event,
    hooks_for,
)
from ._journal import ItemState, Journal, JournalEntry, JournalError, request_fingerprint
from ._models import OptimizationRequest, TaskResult
from ._polling import DEFAULT_WAIT_TIMEOUT
from ._settings import DEFAULT_CONCURRENCY
from ._stream import EventStream, as_stream

if TYPE_CHECKING:
    from ._client import AsyncSPOClient
    from ._retry import RetryPolicy
    from ._schedules import ScheduleLike

__all__ = [
    "DEFAULT_CONCURRENCY",
    "BatchInput",
    "BatchItem",
    "Errored",
    "Failed",
    "Outcome",
    "OutcomeUnknown",
    "Succeeded",
    "gather_outcomes",
    "iter_outcomes",
]

#: Seconds between two :class:`BatchProgress` events (the first and last always go out).
PROGRESS_INTERVAL: Final = 0.5
#: Characters of the request fingerprint in a derived key.
_KEY_DIGITS: Final = 12


@attrs.frozen
class BatchItem:
    """One request of a batch, under the key its outcome and journal entry carry."""

    key: BatchKey
    request: OptimizationRequest


@attrs.frozen(kw_only=True)
class Outcome:
    """What became of one batch item. ``index`` is its position in the input.

    ``from_journal`` is true when the outcome was read from the journal of an
    earlier run, without any request.
    """

    key: BatchKey
    index: int
    request: OptimizationRequest = attrs.field(repr=False)
    from_journal: bool = False

    @property
    def ok(self) -> bool:
        """Whether the item has a successful result."""
        return False


@attrs.frozen(kw_only=True)
class Succeeded(Outcome):
    """The task finished with a result."""

    task_id: str
    result: TaskResult = attrs.field(repr=False)

    @property
    def ok(self) -> bool:
        """Always true."""
        return True


@attrs.frozen(kw_only=True)
class Failed(Outcome):
    """The task ended in ``fail``; ``result.error`` holds the service's reason."""

    task_id: str
    result: TaskResult = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class Errored(Outcome):
    """The submit or the wait ended with ``error``.

    ``task_id`` is ``None`` when no task was created (the item can simply be
    run again), and set when a task exists: it may still be running, and a run
    with the same journal polls it instead of submitting again.
    """

    task_id: str | None
    error: BaseException = attrs.field(eq=False)


@attrs.frozen(kw_only=True)
class OutcomeUnknown(Outcome):
    """A submit may have created (and billed) a task, but its id never arrived.

    It was not resubmitted, since that could pay twice; look for the task in
    your 302.AI account, or run again with ``resubmit_unknown=True``.
    """

    error: BaseException = attrs.field(eq=False)


#: What a batch accepts: requests (keys derived), ``(key, request)`` pairs or
#: :class:`BatchItem` s, or a mapping of key to request.
BatchInput: TypeAlias = (
    Iterable[OptimizationRequest | BatchItem | tuple[BatchKey, OptimizationRequest]]
    | Mapping[str, OptimizationRequest]
    | Mapping[int, OptimizationRequest]
    | Mapping[BatchKey, OptimizationRequest]
)
KeyFunction: TypeAlias = Callable[[OptimizationRequest], BatchKey]


def _check_key(key: object, where: str) -> BatchKey:
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise RequestValidationError(where, f"a key must be a str or an int, got {key!r}")
    return key


def prepare_items(
    requests: BatchInput, keys: KeyFunction | None = None
) -> list[tuple[BatchItem, str]]:
    """Read the whole input into items with their request fingerprints, refusing duplicates."""
    source: Iterable[object] = requests.items() if isinstance(requests, Mapping) else requests
    items: list[tuple[BatchItem, str]] = []
    seen: dict[BatchKey, int] = {}
    for index, entry in enumerate(source):
        where = f"requests[{index}]"
        key: object
        if isinstance(entry, BatchItem):
            key, request = entry.key, entry.request
        elif isinstance(entry, OptimizationRequest):
            key, request = None, entry
        elif isinstance(entry, tuple) and len(entry) == 2:
            key, request = entry
        else:
            raise RequestValidationError(
                where,
                "expected an OptimizationRequest, a (key, request) pair or a BatchItem, "
                f"got {type(entry).__name__}",
            )
        if not isinstance(request, OptimizationRequest):
            raise RequestValidationError(
                where, f"expected an OptimizationRequest, got {type(request).__name__}"
            )
        fingerprint = request_fingerprint(request)
        if key is None:
            key = keys(request) if keys is not None else f"{index}-{fingerprint[:_KEY_DIGITS]}"
        checked = _check_key(key, where)
        if checked in seen:
            raise RequestValidationError(
                where, f"duplicate key {checked!r} (first used by requests[{seen[checked]}])"
            )
        seen[checked] = index
        items.append((BatchItem(checked, request), fingerprint))
    return items


class _Counters:
    """A batch's progress counters, and when they were last reported."""

    def __init__(self, total: int, client: object) -> None:
        self.total = total
        self.running = 0
        self.done = 0
        self.failed = 0
        self.last_report = -float("inf")
        self._limiter = getattr(client, "limiter", None)

    def snapshot(self) -> BatchProgress:
        rate = getattr(self._limiter, "requests_per_second", None)
        return BatchProgress(
            total=self.total,
            pending=self.total - self.running - self.done,
            running=self.running,
            done=self.done,
            failed=self.failed,
            requests_per_second=rate if isinstance(rate, int | float) else None,
        )


@attrs.frozen
class _Fatal:
    """A worker met an error that ends the whole batch (the journal cannot be written)."""

    error: BaseException


def _restored(
    index: int, item: BatchItem, entry: JournalEntry, resubmit_unknown: bool
) -> Outcome | None:
    """The outcome an earlier run settled for this item, or ``None`` if it needs work."""
    if entry.state is ItemState.FINISHED and entry.result is not None:
        result = entry.result
        cls = Succeeded if result.succeeded else Failed
        return cls(
            key=item.key,
            index=index,
            request=item.request,
            from_journal=True,
            task_id=result.task_id,
            result=result,
        )
    if entry.state in (ItemState.SUBMITTING, ItemState.UNKNOWN) and not resubmit_unknown:
        cause: BaseException = entry.error or SPOError(
            "an earlier run stopped after sending the submit and before its answer arrived"
        )
        return OutcomeUnknown(
            key=item.key,
            index=index,
            request=item.request,
            from_journal=True,
            error=SubmitOutcomeUnknownError(item.request, cause),
        )
    return None


class _Batch:
    """One run of a batch: the shared state of its workers."""

    def __init__(
        self,
        client: AsyncSPOClient,
        *,
        journal: Journal | None,
        emit: Callable[[Event], None] | None,
        timeout: float | None,
        schedule: ScheduleLike | None,
        retry: RetryPolicy | None,
        counters: _Counters,
    ) -> None:
        self.client = client
        self.journal = journal
        self.emit = emit
        self.timeout = timeout
        self.schedule = schedule
        self.retry = retry
        self.counters = counters

    def report(self, *, force: bool = False) -> None:
        emit = self.emit
        if emit is None:
            return
        now = asyncio.get_running_loop().time()
        if force or now - self.counters.last_report >= PROGRESS_INTERVAL:
            self.counters.last_report = now
            emit(self.counters.snapshot())

    def settle(self, outcome: Outcome, event: Event | None) -> Outcome:
        if event is not None and self.emit is not None:
            self.emit(event)
        self.counters.done += 1
        if not outcome.ok:
            self.counters.failed += 1
        return outcome

    async def work(
        self,
        todo: asyncio.Queue[tuple[int, BatchItem, JournalEntry | None]],
        results: asyncio.Queue[Outcome | _Fatal],
    ) -> None:
        """One worker: take items until none are left."""
        while True:
            try:
                index, item, entry = todo.get_nowait()
            except asyncio.QueueEmpty:
                return
            self.counters.running += 1
            self.report()
            try:
                outcome = await self.run(index, item, entry)
            except Exception as exc:  # a JournalError, or a bug: either ends the batch
                results.put_nowait(_Fatal(exc))
                return
            finally:
                self.counters.running -= 1
            results.put_nowait(outcome)
            self.report()

    async def run(self, index: int, item: BatchItem, entry: JournalEntry | None) -> Outcome:
        """Submit (unless a task id is known) and wait for one item; never raises for it."""
        key, request, journal = item.key, item.request, self.journal
        emit = self.emit
        on_events, on_retry = hooks_for(emit, key, request) if emit else (None, None)
        # A recorded task id means a task exists: poll it, never submit again.
        task_id = entry.task_id if entry is not None else None
        if task_id is None:
            if journal is not None:
                try:
                    await journal.intent(key)
                except asyncio.CancelledError:
                    journal.revert_intent(key)
                    raise
            try:
                task_id = await self.client.submit(request, retry=self.retry, on_retry=on_retry)
            except SPOError as exc:
                if isinstance(exc, SubmitOutcomeUnknownError):
                    return await self._unknown(index, item, exc)
                # The client raises anything else only when no task was created.
                if journal is not None:
                    await journal.submit_failed(key, exc)
                outcome = Errored(key=key, index=index, request=request, task_id=None, error=exc)
                return self.settle(outcome, final_event(key=key, task_id=None, error=exc))
            except Exception as exc:
                # Not the client's contract: whether the POST left cannot be told.
                return await self._unknown(index, item, SubmitOutcomeUnknownError(request, exc))
            if journal is not None:
                try:
                    await journal.task_id(key, task_id)
                except JournalError as exc:
                    exc.task_id = task_id
                    exc.add_note(
                        f"item {key!r}: task {task_id} was created but could not be recorded; "
                        "a later run reports it as outcome unknown"
                    )
                    raise
            if emit is not None:
                emit(TaskSubmitted(key=key, task_id=task_id))

        def on_progress(result: TaskResult) -> None:
            if on_events is not None:
                on_events(result)
            if journal is not None:
                journal.status(key, result)

        watching = emit is not None or journal is not None
        try:
            result = await self.client.wait_for_result(
                task_id,
                timeout=self.timeout,
                on_progress=on_progress if watching else None,
                schedule=self.schedule,
                retry=self.retry,
                on_retry=on_retry,
                max_rounds=request.max_rounds,
                raise_on_failure=False,
            )
        except JournalError:
            raise
        except Exception as exc:
            if journal is not None:
                await journal.wait_failed(key, exc)
            errored = Errored(key=key, index=index, request=request, task_id=task_id, error=exc)
            return self.settle(errored, final_event(key=key, task_id=task_id, error=exc))
        if journal is not None:
            await journal.finished(key, result)
        cls = Succeeded if result.succeeded else Failed
        done = cls(key=key, index=index, request=request, task_id=task_id, result=result)
        return self.settle(done, final_event(key=key, task_id=task_id, result=result))

    async def _unknown(
        self, index: int, item: BatchItem, error: SubmitOutcomeUnknownError
    ) -> Outcome:
        if self.journal is not None:
            await self.journal.outcome_unknown(item.key, error)
        outcome = OutcomeUnknown(key=item.key, index=index, request=item.request, error=error)
        return self.settle(outcome, final_event(key=item.key, task_id=None, error=error))


async def iter_outcomes(
    client: AsyncSPOClient,
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
) -> AsyncGenerator[Outcome, None]:
    """Run a batch and yield each item's :class:`Outcome` as it finishes.

    ``concurrency`` bounds the tasks in flight. ``keys`` derives each request's
    key (when the input does not give one). ``journal`` is the path of a journal
    file to record into and resume from; ``resubmit_unknown`` resubmits items
    an earlier run left with an unknown outcome (it may pay twice for them).
    ``timeout`` is each task's wait deadline; ``on_event`` a callback (sync or
    async) or an :class:`EventStream` for progress events. ``schedule`` and
    ``retry`` override the client's for this batch.

    Raises :class:`~spo_async.RequestValidationError` for bad input (before any
    request), :class:`JournalError` when the journal cannot be used (before any
    request when it is the wrong file; during the run if a write fails, which
    ends the batch).
    """
    bound: object = concurrency
    if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
        raise RequestValidationError("concurrency", f"must be an int >= 1, got {concurrency!r}")
    if timeout is not None and not timeout >= 0:
        raise RequestValidationError("timeout", f"must be >= 0 or None, got {timeout!r}")
    prepared = prepare_items(requests, keys)
    async with contextlib.AsyncExitStack() as stack:
        stream, owned = as_stream(on_event)
        if stream is not None and owned:
            stack.push_async_callback(stream.aclose)
        book: Journal | None = None
        entries: Mapping[BatchKey, JournalEntry] = {}
        if journal is not None:
            book = Journal(journal)
            await book.open()
            stack.push_async_callback(book.close)
            entries = await book.start_batch([(item.key, fp) for item, fp in prepared])
        counters = _Counters(len(prepared), client)
        batch = _Batch(
            client,
            journal=book,
            emit=stream.emit if stream is not None else None,
            timeout=timeout,
            schedule=schedule,
            retry=retry,
            counters=counters,
        )
        restored: list[Outcome] = []
        todo: asyncio.Queue[tuple[int, BatchItem, JournalEntry | None]] = asyncio.Queue()
        for index, (item, _) in enumerate(prepared):
            entry = entries.get(item.key)
            settled = _restored(index, item, entry, resubmit_unknown) if entry else None
            if settled is None:
                todo.put_nowait((index, item, entry))
            else:
                restored.append(settled)
        results: asyncio.Queue[Outcome | _Fatal] = asyncio.Queue()
        workers = [
            asyncio.create_task(batch.work(todo, results), name=f"spo-async batch worker {i}")
            for i in range(min(concurrency, todo.qsize()))
        ]
        stack.push_async_callback(_stop, workers)
        batch.report(force=True)
        for outcome in restored:
            assert isinstance(outcome, Succeeded | Failed | OutcomeUnknown)  # noqa: S101
            event = (
                final_event(key=outcome.key, task_id=None, error=outcome.error)
                if isinstance(outcome, OutcomeUnknown)
                else final_event(key=outcome.key, task_id=outcome.task_id, result=outcome.result)
            )
            yield batch.settle(outcome, event)
        for _ in range(len(prepared) - len(restored)):
            got = await results.get()
            if isinstance(got, _Fatal):
                raise got.error
            yield got
        batch.report(force=True)


async def _stop(workers: list[asyncio.Task[None]]) -> None:
    """Cancel the workers still running and wait for them: no task is left behind."""
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)


async def gather_outcomes(
    client: AsyncSPOClient,
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
    """Run a batch like :func:`iter_outcomes` and return every outcome in input order."""
    outcomes: list[Outcome] = []
    iterator = iter_outcomes(
        client,
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
    async with contextlib.aclosing(iterator):
        async for outcome in iterator:
            outcomes.append(outcome)
    outcomes.sort(key=lambda o: o.index)
    return outcomes
