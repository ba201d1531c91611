"""``spo-async batch INPUT.jsonl -o OUTPUT.jsonl``: many prompts, resumable with a journal.

The whole input and every file are checked before anything is sent (see
:mod:`._batch_files`). Rows run through :meth:`spo_async.AsyncSPOClient.optimize_many`;
each outcome becomes one output line as it arrives (completion order), and a rerun
with the same ``--journal`` rewrites the output in full: finished rows come back from
the journal, running tasks are polled, and nothing is submitted twice.

Stopping. Ctrl-C, an output file that cannot be written (a full disk) and a journal
that cannot record a task all close the batch (:meth:`spo_async.Batch.aclose`): rows
not yet sent stay unsent, submits already on their way are let finish so that their
task ids reach the journal, then the waits are cancelled and the journal is closed.
Every task that exists without a written outcome is then printed (all of them when
there is no journal to find them in), so that a billed task is never lost, with the
command that resumes. A second Ctrl-C quits at once, as a crash would, after printing
the ids of the tasks still running; the journal survives that too.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import shlex
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from spo_async import Batch, BatchProgress, Event, JournalError, Outcome

from ._batch_files import OutputError, Sink, check_paths
from ._batch_view import BatchView, Tally, outcome_record, row_code, summary_table
from ._commands import overrides, poll_mode, timeout_option
from ._exit import ERROR, INTERRUPTED, batch_exit_code, exit_code_for
from ._report import RunState, describe, error_object, print_json, program, say, show_command
from ._runtime import Output, open_client
from ._safe import is_database, short_id, shown_argument, without_password
from ._settings import BatchRow, load_batch

__all__ = ["batch"]

#: Ids listed in a message when a journal holds them all anyway.
_SHOWN_IDS: Final = 10


def _batch_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of ``optimize_many`` the user gave; the others keep the library's defaults."""
    options = timeout_option(args)
    if args.concurrency is not None:
        options["concurrency"] = args.concurrency
    if args.journal is not None:
        options["journal"] = args.journal
    return options


def _tasks(count: int) -> str:
    return f"{count} task" if count == 1 else f"{count} tasks"


def _languages(rows: list[BatchRow]) -> str:
    counts = collections.Counter(row.request.language for row in rows)
    shown = ", ".join(f"{language} {count}" for language, count in counts.most_common())
    detected = sum(row.detected for row in rows)
    how = f"; {detected} detected from the text (--language sets one)" if detected else ""
    return f"languages: {shown}{how}"


class _Run:
    """One run of the batch command: its rows, its output, what it saw, and how it ends."""

    def __init__(self, args: argparse.Namespace, output: Output, argv: list[str]) -> None:
        self.args = args
        self.output = output
        self.argv = argv
        self.lines: dict[str, int] = {}
        self.tally = Tally(0)
        self.sink = Sink(Path(args.output))
        self.view = BatchView(output, self.tally)
        self.work: Batch | None = None
        #: Whether a request may have been sent (after that, a journal error is not usage).
        self.started = False
        self.codes: list[int] = []
        #: Finished tasks whose outcome line could not be written.
        self.unwritten: list[str] = []
        #: A task the journal could not record (``JournalError.task_id``).
        self.unrecorded: str | None = None

    def load(self, rows: list[BatchRow]) -> None:
        """Take the rows to run."""
        self.lines = {row.key: row.line for row in rows}
        self.tally = self.view.tally = Tally(len(rows))

    def on_event(self, event: Event) -> None:
        if isinstance(event, BatchProgress):
            self.tally.progress = event
            self.view.refresh()

    def settle(self, outcome: Outcome) -> None:
        assert self.work is not None  # noqa: S101 - set before the first outcome
        record = outcome_record(outcome, self.lines[str(outcome.key)])
        try:
            self.sink.write(record)
        except OutputError:
            if outcome.task_id is not None:
                self.unwritten.append(outcome.task_id)
            raise
        self.codes.append(row_code(outcome))
        self.tally.progress = self.work.progress
        self.view.settled(record)

    def unfinished(self) -> list[str]:
        """Tasks that exist (and may be running) without an outcome."""
        ids = list(self.work.unfinished_task_ids) if self.work is not None else []
        if self.unrecorded is not None and self.unrecorded not in ids:
            ids.insert(0, self.unrecorded)
        return ids

    @property
    def journal_shown(self) -> str | None:
        """``--journal`` as it may be printed: a database URI without its password."""
        journal: str | None = self.args.journal
        return without_password(journal) if journal and is_database(journal) else journal

    def resume(self) -> str | None:
        """The command that resumes the batch: this one again, when it has a journal."""
        if self.args.journal is None or self.args.emulator:
            return None
        # Every URI is shown without its password (PGPASSWORD or ~/.pgpass supply it),
        # whether its own argument or after an option's '='.
        argv = [shown_argument(a) for a in self.argv]
        return f"{program()} {shlex.join(argv)}"

    def _list(self, ids: list[str], what: str) -> None:
        """Say ``ids``: all of them, unless the journal keeps them and there are many."""
        if not ids:
            return
        shown = ids if self.args.journal is None else ids[:_SHOWN_IDS]
        left = len(ids) - len(shown)
        more = f" (and {left} more, in the journal)" if left else ""
        say(f"{_tasks(len(ids))} {what}{more}:")
        for task_id in shown:
            say(f"  {short_id(task_id)}")

    def list_unfinished(self) -> list[str]:
        """Say which tasks exist without an outcome; return them."""
        unfinished = self.unfinished()
        where = (
            "in the in-process emulator, which stopped with us"
            if self.args.emulator
            else "still running on the service"
        )
        self._list(unfinished, where)
        return unfinished

    def end(self, state: RunState, exc: BaseException) -> int:
        """End the batch after ``exc``: say what exists and how to resume; the exit code."""
        if self.work is not None:
            self.tally.progress = self.work.progress
        code = exit_code_for(exc)
        if isinstance(exc, JournalError) and self.started:
            code = ERROR  # the journal could not be written (a full disk): not a usage error
            self.unrecorded = exc.task_id
        done = self.tally.written
        if isinstance(exc, KeyboardInterrupt):
            written = f", written to {self.args.output}" if done else ""
            say(f"interrupted: {done} of {self.tally.total} rows done{written}")
        else:
            say(f"error: {describe(exc, state)}")
        unfinished = self.list_unfinished()
        self._list(self.unwritten, "finished, with no outcome line written")
        resume = self._explain(unfinished, code)
        if state.json:
            print_json(
                {
                    **self.tally.summary(),
                    "output": self.args.output,
                    "journal": self.journal_shown,
                    "error": error_object(exc),
                    "unfinished_task_ids": unfinished,
                    "unwritten_task_ids": self.unwritten,
                    "resume": resume,
                    "exit_code": code,
                }
            )
        return code

    def _explain(self, unfinished: list[str], code: int) -> str | None:
        """Say how to carry on; the command that resumes, if there is one."""
        if code not in (ERROR, INTERRUPTED):
            return None
        if not self.started:
            if code == INTERRUPTED:
                say("interrupted before anything was sent: run the same command again")
            return None
        if self.args.emulator:
            say("a rerun starts over: the in-process emulator's tasks ended with it")
            return None
        resume = self.resume()
        if resume is None:
            if unfinished or self.unwritten:
                say("no --journal was given: running again submits every row again")
            return None
        if self.unrecorded is not None:
            say(
                f"the journal could not record task {short_id(self.unrecorded)}: a rerun with "
                "it reports that row as unknown instead of paying for it twice"
            )
        say(f"the journal {self.journal_shown} keeps every other step; resume with:")
        show_command(resume)
        return resume

    def summary(self, state: RunState) -> int:
        """End a batch that ran to its end: the summary, and the most serious row's code."""
        code = batch_exit_code(self.codes)
        if state.json:
            print_json(
                {
                    **self.tally.summary(),
                    "output": self.args.output,
                    "journal": self.journal_shown,
                    "error": None,
                    "unfinished_task_ids": [],
                    "unwritten_task_ids": [],
                    "resume": None,
                    "exit_code": code,
                }
            )
        else:
            self.output.out.print(summary_table(self.tally, self.args.output))
        return code


def _install_interrupt(stop: asyncio.Event, run: _Run) -> Callable[[], None]:
    """First Ctrl-C sets ``stop``; the second quits at once. Returns the undo function."""
    loop = asyncio.get_running_loop()

    def on_sigint() -> None:
        if not stop.is_set():
            stop.set()
            settles = "; the journal settles" if run.args.journal else ""
            run.view.note(f"stopping: no new submits{settles} (Ctrl-C again to quit at once)")
            return
        say("quitting at once")
        run.list_unfinished()
        os._exit(INTERRUPTED)

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError):  # not on this platform or thread
        return lambda: None

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGINT)

    return undo


async def _consume(work: Batch, run: _Run) -> None:
    async for outcome in work:
        run.settle(outcome)


async def _run_until_stopped(work: Batch, run: _Run, stop: asyncio.Event) -> bool:
    """Write outcomes until the batch ends or ``stop`` is set; whether it was stopped.

    The batch is closed on the way out, whatever happened, so that its
    ``unfinished_task_ids`` are final; an error of the consumer (an output file that
    cannot be written, a journal that cannot record a task) is raised after that.
    """
    consumer = asyncio.create_task(_consume(work, run))
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({consumer, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        # Stop submitting; submits on their way finish, so that their task ids reach
        # the journal; then the waits are cancelled.
        await work.aclose()
        if not consumer.done():
            consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
    return consumer.cancelled()


async def batch(args: argparse.Namespace, output: Output, state: RunState) -> int:
    """``spo-async batch``: run every row, write its outcome, print a summary."""
    run = _Run(args, output, state.argv)
    state.ender = run.end
    check_paths(args)
    rows = load_batch(Path(args.input), overrides(args), output.warn)
    run.load(rows)
    output.note(f"batch: {run.tally.total} rows; {_languages(rows)}")
    stop = asyncio.Event()
    with contextlib.ExitStack() as resources:
        resources.callback(run.sink.close)
        resources.enter_context(run.view)
        resources.callback(_install_interrupt(stop, run))
        async with open_client(args, state) as client:
            work = client.optimize_many(
                [(row.key, row.request) for row in rows],
                on_event=run.on_event,
                # The view counts finished tasks, not rounds: look for each task's end.
                poll_mode=poll_mode(args, watched=False),
                **_batch_options(args),
            )
            run.work = work
            try:
                await work.__aenter__()  # opens the journal: a bad or locked one is refused
                run.started = True
                stopped = await _run_until_stopped(work, run, stop)
            finally:
                await work.aclose()
    if stopped:
        return run.end(state, KeyboardInterrupt())
    return run.summary(state)
