"""Many tasks at once: bounded concurrency, per-item outcomes, a journal to resume from.

:meth:`AsyncSPOClient.optimize_many` returns a :class:`Batch`: an async iterator
of one :class:`~spo_async.Outcome` per item, in completion order, and an async
context manager that stops the batch when left. Each outcome is a value, never
a raised exception: one failing task does not stop the batch, and every item
comes back exactly once.

Work is done by ``concurrency`` worker tasks, each taking the next item,
submitting it and waiting for its task. An item starts only when fewer than
``concurrency`` started items wait to be consumed: a consumer that stops pulling
stops the batch from submitting after at most ``concurrency`` more tasks
(backpressure), and leaving the ``async with`` stops new submits at once.

Keys. Each item has a key: the caller's own (``(key, request)`` pairs, a
mapping, or a ``keys`` function), or a derived one, ``"<index>-<fingerprint>"``
(the item's position and the first 12 hex digits of its request's sha256),
stable across runs as long as the input keeps its order. The input is read in
full when the batch is made, so that a bad row or a duplicate key is refused
before anything is sent, and a journal written for a different batch is
refused before the first request.

Journal. With ``journal=path`` every step is recorded (see
:mod:`spo_async._journal`) and running the same batch again resumes it:
finished items come back from the journal without a request (``from_journal``
is true), items with a task id are polled, items never sent are submitted, and
items whose submit may have reached the service are reported as
:class:`~spo_async.OutcomeUnknown` and not resubmitted, unless
``resubmit_unknown=True``.

Shared journal. With ``journal="postgresql://..."`` (see
:mod:`spo_async._journal_pg`) any number of processes run the same batch
together: instead of a queue of its own items, each worker claims the next item
from the database, under a lease. A batch yields the outcomes recorded before it
joined (as a file journal restores them), then those of the items *this* process
settles (not those other processes settle meanwhile), and it ends when no item
of the whole batch is left open, so that a surviving process takes over the
tasks of a dead one.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final, Self, TypeAlias

import attrs

from ._checks import check_callable, check_count, check_flag, check_poll_mode, check_seconds
from ._errors import ConfigurationError, RequestValidationError, SPOError, SubmitOutcomeUnknownError
from ._events import (
    AnyOutcome,
    BatchKey,
    BatchProgress,
    Errored,
    Event,
    Failed,
    OutcomeUnknown,
    Reporter,
    Succeeded,
    TaskSubmitted,
    outcome_of,
)
from ._journal import ItemState, Journal, JournalEntry, JournalError, request_fingerprint
from ._journal_pg import (
    MAX_IDLE_WAIT,
    Claimed,
    PgJournal,
    _LeaseLostError,
    is_postgres_uri,
    require_psycopg,
)
from ._models import OptimizationRequest, TaskResult
from ._polling import Retry
from ._schedules import PollMode
from ._stream import EventStream, as_stream

if TYPE_CHECKING:
    from ._client import AsyncSPOClient
    from ._events import EventCallback

__all__ = ["Batch", "BatchInput", "BatchOptions", "KeyFunction", "prepare_items"]

log = logging.getLogger("spo_async")

#: Seconds between two :class:`BatchProgress` events (the first and last always go out).
PROGRESS_INTERVAL: Final = 0.5
#: Characters of the request fingerprint in a derived key.
_KEY_DIGITS: Final = 12

#: What a batch accepts: requests (keys derived), ``(key, request)`` pairs, or a
#: mapping of key to request. Keys are strings or ints.
BatchInput: TypeAlias = (
    Iterable[OptimizationRequest | tuple[BatchKey, OptimizationRequest]]
    | Mapping[str, OptimizationRequest]
    | Mapping[int, OptimizationRequest]
    | Mapping[BatchKey, OptimizationRequest]
)
KeyFunction: TypeAlias = Callable[[OptimizationRequest], BatchKey]


@attrs.frozen
class _Item:
    """One request of a batch, under its key, with its position and fingerprint."""

    index: int
    key: BatchKey
    request: OptimizationRequest
    fingerprint: str

    def outcome(
        self,
        *,
        task_id: str | None = None,
        result: TaskResult | None = None,
        error: BaseException | None = None,
    ) -> AnyOutcome:
        """The outcome of this item: from its final snapshot, or from the error that ended it."""
        return outcome_of(
            key=self.key,
            index=self.index,
            request=self.request,
            task_id=task_id,
            result=result,
            error=error,
        )


def _check_key(key: object, where: str) -> BatchKey:
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise RequestValidationError(where, f"a key must be a str or an int, got {key!r}")
    return key


def prepare_items(requests: BatchInput, keys: KeyFunction | None = None) -> list[_Item]:
    """Read the whole input into items, refusing bad rows and duplicate keys."""
    given: object = requests
    if isinstance(given, str | bytes) or not isinstance(given, Iterable | Mapping):
        raise RequestValidationError(
            "requests", f"expected requests, pairs or a mapping, got {type(requests).__name__}"
        )
    source: Iterable[object] = requests.items() if isinstance(requests, Mapping) else requests
    items: list[_Item] = []
    seen: dict[BatchKey, int] = {}
    for index, entry in enumerate(source):
        where = f"requests[{index}]"
        key: object
        if isinstance(entry, OptimizationRequest):
            key, request = None, entry
        elif isinstance(entry, tuple) and len(entry) == 2:
            key, request = entry
        else:
            raise RequestValidationError(
                where,
                "expected an OptimizationRequest or a (key, request) pair, "
                f"got {type(entry).__name__}",
            )
        if not isinstance(request, OptimizationRequest):
            raise RequestValidationError(
                where, f"expected an OptimizationRequest, got {type(request).__name__}"
            )
        fingerprint = request_fingerprint(request)
        if key is None:
            if keys is not None:
                try:
                    key = keys(request)
                except Exception as exc:
                    raise RequestValidationError(
                        where, f"the keys function raised {type(exc).__name__}: {exc}"
                    ) from exc
            else:
                key = f"{index}-{fingerprint[:_KEY_DIGITS]}"
        checked = _check_key(key, where)
        if checked in seen:
            raise RequestValidationError(
                where, f"duplicate key {checked!r} (first used by requests[{seen[checked]}])"
            )
        seen[checked] = index
        items.append(_Item(index, checked, request, fingerprint))
    return items


def _restored(item: _Item, entry: JournalEntry, resubmit_unknown: bool) -> AnyOutcome | None:
    """The outcome an earlier run settled for this item, or ``None`` if it needs work."""
    if entry.state is ItemState.FINISHED and entry.result is not None:
        outcome = item.outcome(task_id=entry.result.task_id, result=entry.result)
    elif entry.state in (ItemState.SUBMITTING, ItemState.UNKNOWN) and not resubmit_unknown:
        cause: BaseException = entry.error or SPOError(
            "an earlier run stopped after sending the submit and before its answer arrived"
        )
        outcome = item.outcome(error=SubmitOutcomeUnknownError(item.request, cause))
    else:
        return None
    return attrs.evolve(outcome, from_journal=True)


@attrs.frozen(kw_only=True)
class BatchOptions:
    """A batch's options, checked: one value instead of the same keywords everywhere."""

    concurrency: int
    journal: str | os.PathLike[str] | None
    resubmit_unknown: bool
    #: Each task's wait deadline (``None``: none), already resolved from the client's.
    timeout: float | None
    on_event: EventCallback | EventStream | None = attrs.field(eq=False)
    #: What each task's looks are for (``None``: every round when someone is told).
    poll_mode: PollMode | None = None

    @classmethod
    def checked(
        cls,
        client: AsyncSPOClient,
        *,
        concurrency: object,
        keys: object,
        journal: object,
        resubmit_unknown: object,
        timeout: object,
        on_event: object,
        poll_mode: object,
    ) -> BatchOptions:
        """Check every option as given to ``optimize_many``; refuse with ConfigurationError."""
        from ._client import UNSET  # noqa: PLC0415 - the client imports this module lazily
        from ._stream import check_on_event  # noqa: PLC0415

        bound = check_count("concurrency", concurrency)
        assert bound is not None  # noqa: S101 - allow_none is false
        check_callable("keys", keys)
        if journal is not None and not isinstance(journal, str | os.PathLike):
            raise ConfigurationError(
                "journal must be a path (str or os.PathLike), a postgresql:// URI or None, "
                f"got {type(journal).__name__}"
            )
        if isinstance(journal, str) and "://" in journal and not is_postgres_uri(journal):
            raise ConfigurationError(
                "journal must be a file path or a postgresql:// URI; "
                f"{journal.partition('://')[0]}:// is not a journal"
            )
        if is_postgres_uri(journal):
            require_psycopg()
            if resubmit_unknown is True:
                raise ConfigurationError(
                    "resubmit_unknown=True cannot be used with a shared (postgresql://) journal: "
                    "another worker may be about to learn the task id"
                )
        check_on_event(on_event)
        return cls(
            concurrency=bound,
            journal=journal,
            resubmit_unknown=check_flag("resubmit_unknown", resubmit_unknown),
            timeout=client.timeout if timeout is UNSET else check_seconds("timeout", timeout),
            on_event=on_event,  # type: ignore[arg-type]
            poll_mode=check_poll_mode(poll_mode),
        )


class _Gate:
    """One worker's submit: lets the batch stop it unless its POST is out (a SubmitGate)."""

    __slots__ = ("_batch", "_worker", "out")

    def __init__(self, batch: Batch, worker: asyncio.Task[None]) -> None:
        self._batch = batch
        self._worker = worker
        self.out = False

    def leaving(self) -> None:
        if self._batch._stopping:
            raise _StoppedError
        self.out = True

    def refused(self) -> None:
        self.out = False
        if self._batch._stopping:
            self._worker.cancel()  # no task came of it: stop now, not after the backoff


class _StoppedError(SPOError):
    """Internal: the batch stopped before this submit left; nothing was sent."""


#: What a worker returns for an item another worker took over (its lease lapsed).
_DROPPED: Final = object()
#: Put in the results when the last worker of a shared batch has left.
_DONE: Final = object()

_AnyJournal: TypeAlias = Journal | PgJournal


class _State(enum.Enum):
    READY = "ready"
    RUNNING = "running"
    CLOSED = "closed"


class _ItemObserver:
    """What one item's wait reports to: its events, and its journal row."""

    __slots__ = ("_journal", "_key", "_reporter")

    def __init__(
        self, key: BatchKey, journal: _AnyJournal | None, reporter: Reporter | None
    ) -> None:
        self._key = key
        self._journal = journal
        self._reporter = reporter

    def snapshot(self, result: TaskResult) -> None:
        if self._journal is not None:
            # Queued, not awaited; a journal that failed says so at the next awaited write.
            with contextlib.suppress(JournalError):
                self._journal.status(self._key, result)
        if self._reporter is not None:
            self._reporter.snapshot(result)

    def retrying(self, retry: Retry) -> None:
        if self._reporter is not None:
            self._reporter.retrying(retry)


class _Outcomes:
    """What a plain ``async for`` over a batch iterates; dropping it (a ``break``) ends the batch.

    The generator inside closes the batch once the event loop finalizes it, a few
    steps after the ``break``. This wrapper says at once, as it is dropped, that the
    batch's journal is ending, so a rerun on the same file on the next line waits
    for the close instead of being refused as a second run.
    """

    __slots__ = ("_batch", "_outcomes", "_started")

    def __init__(self, batch: Batch) -> None:
        self._batch = batch
        self._outcomes = batch._iterate()
        self._started = False

    def __aiter__(self) -> Self:
        return self

    def __anext__(self) -> Awaitable[AnyOutcome]:
        self._started = True
        return self._outcomes.__anext__()

    async def aclose(self) -> None:
        await self._outcomes.aclose()

    def __del__(self) -> None:
        if self._started:  # an iteration never started has nothing to close
            self._batch._retire_journal()


class Batch:
    """A batch of optimizations: iterate it for outcomes; leave it to stop it.

    Made by :meth:`AsyncSPOClient.optimize_many`, which has checked every
    argument and every row already. Nothing is sent until the batch is entered
    or iterated::

        async with client.optimize_many(requests, journal="run.db") as batch:
            async for outcome in batch:
                print(outcome.key, outcome.ok)

    Leaving the ``async with`` early, or :meth:`aclose`, stops new submits at
    once, lets the submits already on their way finish (so that their task ids
    reach the journal), then stops the waits and closes the journal. The
    tasks already submitted keep running (and billing) on the service:
    :attr:`unfinished_task_ids` lists them, and a run with the same journal
    picks them up. A plain ``async for`` over the batch closes it when the
    loop ends; after a ``break`` outside ``async with``, the batch submits at
    most ``concurrency`` more tasks before waiting for its consumer, and is
    stopped when closed or garbage-collected.

    A batch that cannot go on (its journal cannot be written) raises
    :class:`~spo_async.JournalError` from the iteration, after stopping.
    """

    def __init__(self, client: AsyncSPOClient, items: list[_Item], options: BatchOptions) -> None:
        self._client = client
        self._items = items
        self._options = options
        self._state = _State.READY
        self._journal: _AnyJournal | None = None
        #: A shared journal: workers claim items from it; the batch ends when it has none open.
        self._shared = False
        self._live_workers = 0
        self._watching = False
        #: Set when an item of a shared batch settles here: wakes the worker watching leases.
        self._settled = asyncio.Event()
        self._stream: EventStream | None = None
        self._owns_stream = False
        self._restored: list[AnyOutcome] = []
        self._todo: asyncio.Queue[tuple[_Item, JournalEntry | None]] = asyncio.Queue()
        self._results: asyncio.Queue[AnyOutcome | BaseException | object] = asyncio.Queue()
        #: Backpressure: an item starts only with a permit, and the consumer gives one back
        #: with each outcome it takes, so at most ``concurrency`` items are ever started
        #: and not yet consumed.
        self._permits = asyncio.Semaphore(options.concurrency)
        self._workers: list[asyncio.Task[None]] = []
        #: The submit gate of each worker whose submit is under way.
        self._gates: dict[asyncio.Task[None], _Gate] = {}
        self._stopping = False
        self._closing: asyncio.Future[None] | None = None
        self._left = len(items)
        self._unfinished: dict[str, None] = {}
        self._counts = {"running": 0, Succeeded: 0, Failed: 0, Errored: 0, OutcomeUnknown: 0}
        self._last_report = -float("inf")

    @classmethod
    def _prepare(
        cls, client: AsyncSPOClient, requests: BatchInput, options: BatchOptions, keys: object
    ) -> Batch:
        """Read and check every row; build a batch that has sent nothing."""
        return cls(client, prepare_items(requests, keys), options)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (
            f"<Batch {self._state.value} items={len(self._items)} "
            f"concurrency={self._options.concurrency} left={self._left}>"
        )

    # -- what a caller can read -----------------------------------------------------------

    @property
    def unfinished_task_ids(self) -> tuple[str, ...]:
        """Task ids that exist (submitted by this run or an earlier one) without an outcome yet."""
        return tuple(self._unfinished)

    @property
    def progress(self) -> BatchProgress:
        """The batch's counters now."""
        counts = self._counts
        rate = getattr(self._client.limiter, "requests_per_second", None)
        done = counts[Succeeded] + counts[Failed] + counts[Errored] + counts[OutcomeUnknown]
        return BatchProgress(
            total=len(self._items),
            pending=len(self._items) - counts["running"] - done,
            running=counts["running"],
            succeeded=counts[Succeeded],
            failed=counts[Failed],
            errored=counts[Errored],
            unknown=counts[OutcomeUnknown],
            requests_per_second=rate if isinstance(rate, int | float) else None,
        )

    # -- the protocols ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[AnyOutcome]:
        return _Outcomes(self)

    async def _iterate(self) -> AsyncGenerator[AnyOutcome, None]:
        """The outcomes, closing the batch however the loop ends (``break`` included).

        A generator, so that the event loop closes it, and with it the batch, as soon
        as a ``break`` drops it: workers, journal and event delivery stop then.
        """
        try:
            while True:
                try:
                    outcome = await self.__anext__()
                except StopAsyncIteration:
                    return
                yield outcome
        finally:
            await self.aclose()

    async def __anext__(self) -> AnyOutcome:
        """The next outcome, in completion order (outcomes from the journal first)."""
        if self._state is _State.READY:
            await self._start()
        if self._restored:
            return self._handed(self._settle(self._restored.pop(0)))
        if self._state is _State.CLOSED or (self._left == 0 and not self._shared):
            await self.aclose()
            raise StopAsyncIteration
        try:
            got = await self._results.get()
        except BaseException:
            await self.aclose()
            raise
        if isinstance(got, BaseException):
            await self.aclose()
            raise got
        if got is _DONE:
            await self.aclose()
            raise StopAsyncIteration
        self._left -= 1
        self._permits.release()
        return self._handed(got)  # type: ignore[arg-type]

    def _handed(self, outcome: AnyOutcome) -> AnyOutcome:
        """An outcome the consumer now holds: its task no longer counts as unfinished."""
        if outcome.task_id is not None:
            self._unfinished.pop(outcome.task_id, None)
        return outcome

    async def aclose(self) -> None:
        """Stop: no new submit, submits in flight finish, waits stop, the journal closes.

        Calling it again waits for the first call to finish. Cancelling it skips
        the polite part: every worker is cancelled at once, and a submit cut off
        in flight is logged at WARNING with its item's key (its journal, if any,
        reports it as outcome unknown next time).
        """
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = asyncio.get_running_loop().create_future()
        self._retire_journal()
        started = self._state is _State.RUNNING
        self._state = _State.CLOSED
        self._stopping = True
        try:
            # A worker whose POST is out finishes it (its task id must be recorded);
            # every other one is stopped now: waits, backoffs, queued submits.
            for worker in self._workers:
                gate = self._gates.get(worker)
                if gate is None or not gate.out:
                    worker.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
        finally:
            # Each step runs even if the one before was cancelled (the journal's pool
            # must close), and a second aclose() waiting on the first always returns.
            try:
                for worker in self._workers:
                    worker.cancel()
                try:
                    await asyncio.gather(*self._workers, return_exceptions=True)
                finally:
                    if started:
                        self._report(force=True)
                    try:
                        if self._journal is not None:
                            await self._journal.close()
                    finally:
                        if self._stream is not None and self._owns_stream:
                            finished = self._left == 0 and not self._restored
                            await self._stream._close_within(None if finished else 0.0)
            finally:
                self._closing.set_result(None)

    def _retire_journal(self) -> None:
        """Let a rerun of this process on the journal file wait for this batch to close."""
        if isinstance(self._journal, Journal):
            self._journal.retire()

    def __del__(self) -> None:
        # Dropped without being closed (the consumer is gone): stop the workers so
        # that nothing more is submitted for nobody.
        for worker in getattr(self, "_workers", ()):
            if not worker.done():
                worker.cancel()

    # -- running ---------------------------------------------------------------------------

    async def _start(self) -> None:
        if self._state is not _State.READY:
            if self._state is _State.CLOSED:
                raise ConfigurationError("this batch is closed; make a new one with optimize_many")
            return
        self._state = _State.RUNNING
        try:
            options = self._options
            self._stream, self._owns_stream = as_stream(options.on_event)
            entries: Mapping[BatchKey, JournalEntry] = {}
            if is_postgres_uri(options.journal):
                await self._start_shared(str(options.journal))
                return
            if options.journal is not None:
                self._journal = Journal(options.journal)
                await self._journal.open()
                entries = await self._journal.start_batch(
                    [(item.key, item.fingerprint) for item in self._items]
                )
            for item in self._items:
                entry = entries.get(item.key)
                settled = (
                    _restored(item, entry, options.resubmit_unknown) if entry is not None else None
                )
                if settled is not None:
                    self._restored.append(settled)
                    continue
                if entry is not None and entry.task_id is not None:
                    self._unfinished[entry.task_id] = None
                self._todo.put_nowait((item, entry))
            self._left = self._todo.qsize()
            self._report(force=True)
            self._workers = [
                asyncio.create_task(self._work(), name=f"spo-async batch worker {i}")
                for i in range(min(options.concurrency, self._todo.qsize()))
            ]
        except BaseException:
            await self.aclose()
            raise

    async def _start_shared(self, uri: str) -> None:
        """Join (or create) the batch in the database; workers then claim its items."""
        journal = self._journal = PgJournal(uri, pool_size=min(self._options.concurrency, 8) + 1)
        await journal.open()
        await journal.start_batch([(item.key, item.fingerprint) for item in self._items])
        # What the batch settled before this worker joined comes back first, as from a
        # file journal, so that a rerun still hands over every outcome.
        entries = await journal.entries()
        for item in self._items:
            entry = entries.get(item.key)
            if entry is not None and entry.state in (ItemState.FINISHED, ItemState.UNKNOWN):
                settled = _restored(item, entry, resubmit_unknown=False)
                if settled is not None:
                    self._restored.append(settled)
        self._shared = True
        self._left = 0
        self._report(force=True)
        self._spawn(self._options.concurrency)

    def _spawn(self, count: int) -> None:
        for _ in range(count):
            self._live_workers += 1
            self._workers.append(
                asyncio.create_task(
                    self._work_shared(), name=f"spo-async batch worker {len(self._workers)}"
                )
            )

    async def _work_shared(self) -> None:
        """One worker of a shared batch: claim items until none of the batch is left open.

        When nothing can be claimed but other workers (here or elsewhere) still hold
        items, one worker stays to watch for lapsed leases and the others leave; when
        the watcher claims an item, it brings the workers back.
        """
        journal = self._journal
        assert isinstance(journal, PgJournal)  # noqa: S101
        by_key = {item.key: item for item in self._items}
        # Leaving wakes the watcher (the batch may be over), unless this worker leaves
        # only because another one watches: waking it then would respawn the workers,
        # which would find nothing and leave again, round and round.
        wake = True
        try:
            while not self._stopping:
                await self._permits.acquire()
                try:
                    claim = await journal.claim()
                except BaseException:
                    self._permits.release()
                    raise
                if not isinstance(claim, Claimed):
                    self._permits.release()
                    if claim is None or self._watching:
                        wake = claim is None
                        return
                    self._watching = True
                    self._settled.clear()
                    try:
                        # Real time, not the client's clock: leases run on the database's.
                        # An item settled here wakes the watcher at once (it may have
                        # been the last one open).
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._settled.wait(), min(claim, MAX_IDLE_WAIT))
                    finally:
                        self._watching = False
                    self._spawn(self._options.concurrency - self._live_workers)
                    continue
                entry = claim.entry
                item = by_key[entry.key]
                self._left += 1
                settled = _restored(item, entry, resubmit_unknown=False)
                if settled is not None:  # a dead worker's item, left between intent and id
                    await self._results.put(self._settle(settled))
                    continue
                if entry.task_id is not None:
                    self._unfinished[entry.task_id] = None
                if not await self._run_one(item, entry):
                    return
        except Exception as exc:  # a JournalError, or a bug: either ends the batch
            await self._results.put(exc)
        finally:
            self._live_workers -= 1
            if wake:
                self._settled.set()
            if self._live_workers == 0:
                self._results.put_nowait(_DONE)

    async def _run_one(self, item: _Item, entry: JournalEntry | None) -> bool:
        """Run one held item and hand on its outcome; ``False`` when the batch stops."""
        self._counts["running"] += 1
        self._report()
        try:
            outcome = await self._run(item, entry)
        finally:
            self._counts["running"] -= 1
        self._settled.set()
        if outcome is _DROPPED:
            self._left -= 1
            self._permits.release()
            return True
        if outcome is None:  # stopped between the submit and the wait
            return False
        await self._results.put(self._settle(outcome))  # type: ignore[arg-type]
        return True

    def _emit(self, event: Event) -> None:
        if self._stream is not None:
            self._stream.emit(event)

    def _report(self, *, force: bool = False) -> None:
        if self._stream is None:
            return
        now = self._client._core.clock()
        if force or now - self._last_report >= PROGRESS_INTERVAL:
            self._last_report = now
            self._emit(self.progress)

    def _settle(self, outcome: AnyOutcome) -> AnyOutcome:
        self._counts[type(outcome)] += 1
        self._emit(outcome)
        self._report()
        return outcome

    async def _work(self) -> None:
        """One worker: take items until none are left or the batch stops."""
        while not self._stopping:
            await self._permits.acquire()
            try:
                item, entry = self._todo.get_nowait()
            except asyncio.QueueEmpty:
                self._permits.release()
                return
            try:
                if not await self._run_one(item, entry):
                    return
            except Exception as exc:  # a JournalError, or a bug: either ends the batch
                await self._results.put(exc)
                return

    async def _run(self, item: _Item, entry: JournalEntry | None) -> AnyOutcome | object | None:
        """Submit (unless a task id is known) and wait for one item; never raises for it.

        With a shared journal, an item whose lease this worker lost is dropped
        (``_DROPPED``): the worker that took it over reports it.
        """
        try:
            return await self._run_held(item, entry)
        except _LeaseLostError as exc:
            log.warning("item %r: %s; another worker reports it", item.key, exc)
            return _DROPPED

    async def _run_held(self, item: _Item, entry: JournalEntry | None) -> AnyOutcome | None:
        """:meth:`_run` for an item this worker holds."""
        client, journal, key = self._client, self._journal, item.key
        reporter = (
            Reporter(self._stream.emit, key=key, total=item.request.max_rounds)
            if self._stream is not None
            else None
        )
        # A recorded task id means a task exists: poll it, never submit again.
        task_id = entry.task_id if entry is not None else None
        if task_id is None:
            submitted = await self._submit(item, reporter)
            if not isinstance(submitted, str):
                return submitted  # no task id: the item's outcome, or None when stopping
            task_id = submitted
        # Without anyone to tell, the wait need not look at every round.
        observer = _ItemObserver(key, journal, reporter) if journal or reporter else None
        timeout = self._options.timeout
        try:
            result = await client._wait(
                task_id,
                timeout=timeout,
                deadline=None if timeout is None else client._core.clock() + timeout,
                observer=observer,
                max_rounds=item.request.max_rounds,
                raise_on_failure=False,
                poll_mode=self._options.poll_mode,
            )
        except JournalError:
            raise
        except Exception as exc:
            if journal is not None:
                await journal.wait_failed(key, exc)
            return item.outcome(task_id=task_id, error=exc)
        if journal is not None:
            await journal.finished(key, result)
        return item.outcome(task_id=task_id, result=result)

    async def _submit(  # noqa: PLR0915 - one protocol, step by step
        self, item: _Item, reporter: Reporter | None
    ) -> str | AnyOutcome | None:
        """Submit one item; its task id, or its outcome when no id came, or ``None`` if stopped."""
        journal, key = self._journal, item.key
        me = asyncio.current_task()
        assert me is not None  # noqa: S101 - a worker is a task
        gate = self._gates[me] = _Gate(self, me)
        try:
            if journal is not None:
                try:
                    await journal.intent(key)
                except asyncio.CancelledError:
                    journal.revert_intent(key)
                    raise
            try:
                task_id = await self._client._submit(
                    item.request, deadline=None, timeout=None, observer=reporter, gate=gate
                )
            except _StoppedError:
                if journal is not None:
                    journal.revert_intent(key)
                return None
            except asyncio.CancelledError:
                if gate.out:
                    log.warning(
                        "item %r: its submit was cut off in flight; a task may exist (look in "
                        "your 302.AI account)",
                        key,
                    )
                elif journal is not None:
                    journal.revert_intent(key)
                raise
            except SubmitOutcomeUnknownError as exc:
                if journal is not None:
                    await journal.outcome_unknown(key, exc)
                return item.outcome(error=exc)
            except SPOError as exc:
                # The client raises anything else only when no task was created.
                if journal is not None:
                    await journal.submit_failed(key, exc)
                return item.outcome(error=exc)
            except Exception as exc:
                # Not the client's contract: whether the POST left cannot be told.
                unknown = SubmitOutcomeUnknownError(item.request, exc)
                if journal is not None:
                    await journal.outcome_unknown(key, unknown)
                return item.outcome(error=unknown)
            self._unfinished[task_id] = None
            if journal is not None:
                try:
                    await journal.task_id(key, task_id)
                except _LeaseLostError:
                    # PgJournal.task_id records an id that arrives after a takeover; this
                    # is the row it could not explain (changed by hand, or a bug).
                    log.warning(
                        "task %s (item %r) was created after this worker's lease lapsed and "
                        "could not be recorded: the item's row changed in a way no takeover "
                        "explains",
                        task_id,
                        key,
                        extra={"task_id": task_id},
                    )
                    raise
                except JournalError as exc:
                    exc.task_id = task_id
                    exc.add_note(
                        f"item {key!r}: task {task_id} was created and is running, but could not "
                        "be recorded; a later run reports this item as outcome unknown"
                    )
                    log.error(  # noqa: TRY400 - the error itself is raised by the batch
                        "task %s (item %r) was created but could not be recorded in the journal",
                        task_id,
                        key,
                        extra={"task_id": task_id},
                    )
                    raise
            self._emit(TaskSubmitted(key=key, task_id=task_id))
        finally:
            del self._gates[me]
        if self._stopping:
            return None
        return task_id
