"""``spo-async batch INPUT.jsonl -o OUTPUT.jsonl``: many prompts, resumable with a journal.

The whole input is checked before anything is sent. Rows run through
:func:`spo_async._batch.iter_outcomes`; each outcome becomes one output line as it
arrives (completion order), and a rerun with the same ``--journal`` rewrites the output
in full: finished rows come back from the journal, running tasks are polled, and
nothing is submitted twice.

Ctrl-C. The first one stops submitting: rows not yet sent stay unsent, submits already
on their way are let finish so that their task ids reach the journal, then the waits
are cancelled, the journal is closed, and the command that resumes is printed (exit
130). A second Ctrl-C quits at once, as a crash would; the journal survives that too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

from spo_async import AsyncSPOClient, AuthenticationError, OptimizationRequest, SPOError
from spo_async._batch import Errored, Outcome, iter_outcomes
from spo_async._events import (
    Event,
    TaskErrored,
    TaskFailed,
    TaskOutcomeUnknown,
    TaskSubmitted,
    TaskSucceeded,
    TaskTimedOut,
)
from spo_async._journal import JournalMismatchError

from ._batch_view import BatchView, Tally, outcome_record, summary_table
from ._commands import RunState, overrides, print_json, program
from ._exit import AUTH, FAILED, INTERRUPTED, OK, InputError
from ._runtime import Output, open_client
from ._settings import BatchRow, load_batch

__all__ = ["batch"]

_SHOWN_IDS = 10
_FINAL_EVENTS = (TaskSucceeded, TaskFailed, TaskTimedOut, TaskErrored, TaskOutcomeUnknown)


class _StoppedError(SPOError):
    """Raised instead of submitting once the batch is stopping; no task is created."""

    def __init__(self) -> None:
        super().__init__("not submitted: the batch was interrupted")


class _StoppableClient(AsyncSPOClient):
    """A client that refuses new submits once told to stop, and says when none is in flight."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stopping = False
        #: Task ids this run's submits returned, in order: the tasks that may still run.
        self.submitted: dict[str, None] = {}
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def submit(self, request: OptimizationRequest, **options: Any) -> str:
        """Submit as usual, unless the batch is stopping."""
        if self.stopping:
            raise _StoppedError
        self._in_flight += 1
        self._idle.clear()
        try:
            task_id = await super().submit(request, **options)
            self.submitted[task_id] = None
            return task_id
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def submits_settled(self) -> None:
        """Return once no submit is on its way."""
        await self._idle.wait()


class _Sink:
    """The output file, opened (and truncated) only when the first outcome arrives.

    A run refused before any outcome (a journal of another batch, a bad key) leaves the
    output of an earlier run as it was.
    """

    def __init__(self, path: Path) -> None:
        if path.is_dir():
            raise InputError(f"{path}: is a directory, not a file")
        if not path.parent.is_dir():
            raise InputError(f"{path}: no such directory: {path.parent}")
        self.path = path
        self._file: IO[str] | None = None

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            try:
                self._file = self.path.open("w", encoding="utf-8")
            except OSError as exc:
                raise InputError(f"{self.path}: cannot write: {exc.strerror or exc}") from None
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _Run:
    """One run of the batch command: its rows, output file, view and what it saw."""

    def __init__(self, rows: list[BatchRow], sink: _Sink, view: BatchView) -> None:
        self.lines = {row.key: row.line for row in rows}
        self.sink = sink
        self.view = view
        self.running: dict[str, str] = {}
        self.settled_ids: set[str] = set()
        self.auth_failed = False

    def on_event(self, event: Event) -> None:
        if isinstance(event, TaskSubmitted):
            self.running[str(event.key)] = event.task_id
        elif isinstance(event, _FINAL_EVENTS):
            self.running.pop(str(event.key), None)

    def settle(self, outcome: Outcome) -> None:
        if isinstance(outcome, Errored) and isinstance(outcome.error, _StoppedError):
            return  # never sent: the next run submits it
        self.running.pop(str(outcome.key), None)
        task_id = getattr(outcome, "task_id", None)
        if task_id is not None:
            self.settled_ids.add(task_id)
        record = outcome_record(outcome, self.lines[str(outcome.key)])
        self.sink.write(record)
        if isinstance(outcome, Errored) and isinstance(outcome.error, AuthenticationError):
            self.auth_failed = True
        self.view.settled(record)


def _install_interrupt(stop: asyncio.Event, say: Callable[[str], None]) -> Callable[[], None]:
    """First Ctrl-C sets ``stop``; the second quits at once. Returns the undo function."""
    loop = asyncio.get_running_loop()

    def on_sigint() -> None:
        if not stop.is_set():
            stop.set()
            say("stopping: no new submits; the journal settles (Ctrl-C again to quit at once)")
            return
        print("spo-async: quitting at once", file=sys.stderr, flush=True)
        os._exit(INTERRUPTED)

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError):  # not on this platform or thread
        return lambda: None

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGINT)

    return undo


async def batch(args: argparse.Namespace, output: Output, state: RunState) -> int:
    """``spo-async batch``: run every row, write its outcome, print a summary."""
    rows = load_batch(Path(args.input), overrides(args), output.warn)
    tally = Tally(len(rows), args.concurrency)
    stop = asyncio.Event()
    interrupted = False
    with contextlib.ExitStack() as resources:
        sink = _Sink(Path(args.output))
        resources.callback(sink.close)
        view = resources.enter_context(BatchView(output, tally))
        run = _Run(rows, sink, view)
        resources.callback(_install_interrupt(stop, view.note))
        async with open_client(args, client_class=_StoppableClient) as opened:
            client = cast(_StoppableClient, opened)
            outcomes = iter_outcomes(
                client,
                [(row.key, row.request) for row in rows],
                concurrency=args.concurrency,
                journal=args.journal,
                timeout=args.timeout,
                on_event=run.on_event,
            )

            async def consume() -> None:
                async with contextlib.aclosing(outcomes):
                    async for outcome in outcomes:
                        run.settle(outcome)

            consumer = asyncio.create_task(consume())
            stopper = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({consumer, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
            if not consumer.done():
                interrupted = True
                client.stopping = True
                await client.submits_settled()
                consumer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await consumer
            else:
                try:
                    consumer.result()
                except JournalMismatchError as exc:
                    raise InputError(str(exc)) from None
    if interrupted:
        # Events reach the view asynchronously, so the ids the submits returned are the
        # surer record of what was started; the events add tasks resumed from a journal.
        unsettled = [t for t in client.submitted if t not in run.settled_ids]
        run.running.update({f"submitted {t}": t for t in unsettled})
        _explain_interrupt(args, state, run, tally)
        return INTERRUPTED
    if output.json:
        print_json({**tally.summary(), "output": args.output, "journal": args.journal})
    else:
        output.out.print(summary_table(tally, args.output))
    if tally.by_status["succeeded"] == tally.total:
        return OK
    return AUTH if run.auth_failed else FAILED


def _explain_interrupt(args: argparse.Namespace, state: RunState, run: _Run, tally: Tally) -> None:
    def say(message: str) -> None:
        print(f"spo-async: {message}", file=sys.stderr, flush=True)

    written = f", written to {args.output}" if tally.done else ""
    say(f"interrupted: {tally.done} of {tally.total} rows done{written}")
    if run.running:
        ids = list(dict.fromkeys(run.running.values()))
        shown = ", ".join(ids[:_SHOWN_IDS]) + (" ..." if len(ids) > _SHOWN_IDS else "")
        say(f"{len(ids)} submitted tasks keep running on the service: {shown}")
    if args.emulator:
        say("the in-process emulator stopped with us: a rerun starts over")
    elif args.journal:
        say(f"the journal {args.journal} is consistent; resume with:")
        print(f"  {program()} {shlex.join(state.argv)}", file=sys.stderr, flush=True)
    else:
        say("no --journal was given: running again submits every row again")
