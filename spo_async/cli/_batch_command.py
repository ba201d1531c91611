"""``spo-async batch INPUT.jsonl -o OUTPUT.jsonl``: many prompts, resumable with a journal.

The whole input is checked before anything is sent. Rows run through
:meth:`spo_async.AsyncSPOClient.optimize_many`; each outcome becomes one output line as
it arrives (completion order), and a rerun with the same ``--journal`` rewrites the
output in full: finished rows come back from the journal, running tasks are polled, and
nothing is submitted twice.

Ctrl-C. The first one closes the batch (:meth:`spo_async.Batch.aclose`): rows not yet
sent stay unsent, submits already on their way are let finish so that their task ids
reach the journal, then the waits are cancelled, the journal is closed, and the tasks
left running (``Batch.unfinished_task_ids``) and the command that resumes are printed
(exit 130). A second Ctrl-C quits at once, as a crash would; the journal survives that
too.
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
from typing import IO, Any

from spo_async import AuthenticationError, Batch, Errored, JournalError, Outcome

from ._batch_view import BatchView, Tally, outcome_record, summary_table
from ._commands import RunState, overrides, print_json, program, timeout_option
from ._exit import AUTH, FAILED, INTERRUPTED, OK, InputError
from ._parser import library_default
from ._runtime import Output, open_client
from ._settings import BatchRow, load_batch

__all__ = ["batch"]

_SHOWN_IDS = 10


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
        self.auth_failed = False

    def settle(self, outcome: Outcome) -> None:
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


def _batch_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of ``optimize_many`` the user gave; the others keep the library's defaults."""
    options = timeout_option(args)
    if args.concurrency is not None:
        options["concurrency"] = args.concurrency
    if args.journal is not None:
        options["journal"] = args.journal
    return options


async def _consume(batch: Batch, run: _Run) -> None:
    async for outcome in batch:
        run.settle(outcome)


async def batch(args: argparse.Namespace, output: Output, state: RunState) -> int:
    """``spo-async batch``: run every row, write its outcome, print a summary."""
    rows = load_batch(Path(args.input), overrides(args), output.warn)
    concurrency = args.concurrency or library_default("concurrency")
    tally = Tally(len(rows), concurrency)
    stop = asyncio.Event()
    interrupted = False
    unfinished: tuple[str, ...] = ()
    with contextlib.ExitStack() as resources:
        sink = _Sink(Path(args.output))
        resources.callback(sink.close)
        view = resources.enter_context(BatchView(output, tally))
        run = _Run(rows, sink, view)
        resources.callback(_install_interrupt(stop, view.note))
        async with open_client(args) as client:
            work = client.optimize_many(
                [(row.key, row.request) for row in rows], **_batch_options(args)
            )
            try:
                async with work:
                    consumer = asyncio.create_task(_consume(work, run))
                    stopper = asyncio.create_task(stop.wait())
                    try:
                        await asyncio.wait({consumer, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        stopper.cancel()
                    if not consumer.done():
                        # Stop submitting; submits on their way finish, so that their
                        # task ids reach the journal; then the waits are cancelled.
                        interrupted = True
                        await work.aclose()
                        consumer.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await consumer
                    else:
                        consumer.result()
            except JournalError as exc:
                raise InputError(str(exc)) from None
            unfinished = work.unfinished_task_ids
    if interrupted:
        _explain_interrupt(args, state, unfinished, tally)
        return INTERRUPTED
    if output.json:
        print_json({**tally.summary(), "output": args.output, "journal": args.journal})
    else:
        output.out.print(summary_table(tally, args.output))
    if tally.by_status["succeeded"] == tally.total:
        return OK
    return AUTH if run.auth_failed else FAILED


def _explain_interrupt(
    args: argparse.Namespace, state: RunState, unfinished: tuple[str, ...], tally: Tally
) -> None:
    def say(message: str) -> None:
        print(f"spo-async: {message}", file=sys.stderr, flush=True)

    written = f", written to {args.output}" if tally.done else ""
    say(f"interrupted: {tally.done} of {tally.total} rows done{written}")
    if unfinished:
        ids = list(unfinished)
        shown = ", ".join(ids[:_SHOWN_IDS]) + (" ..." if len(ids) > _SHOWN_IDS else "")
        say(f"{len(ids)} submitted tasks keep running on the service: {shown}")
    if args.emulator:
        say("the in-process emulator stopped with us: a rerun starts over")
    elif args.journal:
        say(f"the journal {args.journal} is consistent; resume with:")
        print(f"  {program()} {shlex.join(state.argv)}", file=sys.stderr, flush=True)
    else:
        say("no --journal was given: running again submits every row again")
