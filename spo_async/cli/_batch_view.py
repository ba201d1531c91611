"""What a batch looks like: its output lines, its progress, and its closing summary.

:func:`outcome_record` is the stable shape of one ``OUTPUT.jsonl`` line. :class:`Tally`
holds the batch's counters (the library's :class:`~spo_async.BatchProgress`, so that the
progress line, the summary and ``--json`` agree with it) and works out throughput and
ETA (rows an earlier run finished, read from the journal, count as done but not towards
the throughput). :class:`BatchView` shows it all: a rich progress bar on a terminal, one
plain line per row on stderr otherwise.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Self

from rich.console import Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from spo_async import BatchProgress, Errored, Failed, Outcome, OutcomeUnknown, Succeeded

from ._exit import ERROR, FAILED, OK, exit_code_for
from ._render import format_elapsed
from ._runtime import Output
from ._safe import printable, short_id, shorten

__all__ = ["STATUSES", "BatchView", "Tally", "outcome_record", "summary_table"]

#: The ``status`` of an output line, in the order the summary lists them.
STATUSES: Final = ("succeeded", "failed", "errored", "unknown")
_SHOWN_PROBLEMS: Final = 20
_SHOWN_MESSAGE: Final = 200


def _status(outcome: Outcome) -> str:
    if isinstance(outcome, Succeeded):
        return "succeeded"
    if isinstance(outcome, Failed):
        return "failed"
    if isinstance(outcome, OutcomeUnknown):
        return "unknown"
    return "errored"


def _error(outcome: Outcome) -> dict[str, str] | None:
    if isinstance(outcome, Failed):
        reason = outcome.result.error
        return {"type": "TaskFailedError", "message": str(reason or "the task failed")}
    if isinstance(outcome, Errored | OutcomeUnknown):
        error = outcome.error
        # An error an earlier run recorded in the journal keeps its original type's name.
        name = getattr(error, "type_name", None) or type(error).__name__
        return {"type": name, "message": getattr(error, "message", None) or str(error)}
    return None


def row_code(outcome: Outcome) -> int:
    """The exit code this row alone would give."""
    if isinstance(outcome, Succeeded):
        return OK
    if isinstance(outcome, Failed):
        return FAILED
    if isinstance(outcome, Errored):
        return exit_code_for(outcome.error)
    return ERROR


def outcome_record(outcome: Outcome, line: int) -> dict[str, Any]:
    """One output line: ``key``, ``line``, ``status``, ``task_id``, ``result``, ``error``."""
    result = getattr(outcome, "result", None)
    return {
        "key": outcome.key,
        "line": line,
        "status": _status(outcome),
        "task_id": outcome.task_id,
        "best_prompt": result.best_prompt if result is not None else None,
        "result": result.to_dict() if result is not None else None,
        "error": _error(outcome),
        "from_journal": outcome.from_journal,
    }


class Tally:
    """A batch's counters as the library keeps them, and its pace."""

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        #: The batch's counters; the run refreshes them from ``Batch.progress``.
        self.progress = BatchProgress(total=total, pending=total, running=0)
        #: Output lines written, and those of them that came from this run's tasks.
        self.written = 0
        self.fresh = 0
        self.problems: list[dict[str, Any]] = []
        self.languages: collections.Counter[str] = collections.Counter()
        self._clock = clock
        self.started = clock()

    def add(self, record: dict[str, Any]) -> None:
        """Count one output line written."""
        self.written += 1
        if not record["from_journal"]:
            self.fresh += 1
        if record["status"] != "succeeded":
            self.problems.append(record)

    @property
    def elapsed(self) -> float:
        """Seconds since the batch started."""
        return self._clock() - self.started

    def pace(self) -> str:
        """``"12.0 tasks/min, ETA 3 min 05 s"`` once something finished in this run."""
        elapsed = self.elapsed
        if not self.fresh or elapsed <= 0:
            return "ETA --"
        per_second = self.fresh / elapsed
        left = (self.total - self.progress.done) / per_second
        return f"{per_second * 60:.1f} tasks/min, ETA {format_elapsed(left)}"

    def counts(self) -> str:
        """``"3 ok · 1 failed · 0 errored · 0 unknown · 2 running"``."""
        p = self.progress
        return (
            f"{p.succeeded} ok · {p.failed} failed · {p.errored} errored · "
            f"{p.unknown} unknown · {p.running} running"
        )

    def summary(self) -> dict[str, Any]:
        """The counts, for ``--json``: ``not_run`` rows were never started."""
        p = self.progress
        return {
            "total": self.total,
            **{status: getattr(p, status) for status in STATUSES},
            "not_run": self.total - p.done - p.running,
            "seconds": round(self.elapsed, 3),
        }


class BatchView:
    """The batch's progress on screen; use it as a context manager around the run."""

    def __init__(self, output: Output, tally: Tally) -> None:
        self.output = output
        self.tally = tally
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Self:
        if self.output.animate:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("batch"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                console=self.output.out,
                refresh_per_second=8,
            )
            self._progress.start()
            self._task = self._progress.add_task("batch", total=self.tally.total, stats="")
            self.refresh()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self.refresh()
            self._progress.stop()

    def refresh(self) -> None:
        """Redraw the bar from the tally."""
        if self._progress is None or self._task is None:
            return
        t = self.tally
        stats = f"{t.counts()} · {t.pace()}"
        self._progress.update(self._task, completed=t.progress.done, stats=stats)

    def settled(self, record: dict[str, Any]) -> None:
        """One row's outcome was written."""
        self.tally.add(record)
        self.refresh()
        if self._progress is None:
            task_id = record["task_id"]
            where = "journal" if record["from_journal"] else short_id(task_id or "no task")
            error = record["error"]
            reason = f": {shorten(printable(error['message']), _SHOWN_MESSAGE)}" if error else ""
            self.output.note(
                f"[{self.tally.written}/{self.tally.total}] {printable(str(record['key']))}: "
                f"{record['status']} ({where}){reason}"
            )

    def note(self, message: str) -> None:
        """A diagnostic line that stays above the bar."""
        if self._progress is not None:
            self._progress.console.print(Text(f"spo-async: {message}"), style="dim")
        else:
            self.output.note(message)


def summary_table(tally: Tally, output_path: str) -> Group:
    """Counts by status, then the rows that did not succeed (the first few)."""
    heading = Text(f"batch: {tally.total} rows, outcomes in {output_path}", style="bold")
    counts = Table()
    counts.add_column("status")
    counts.add_column("rows", justify="right")
    summary = tally.summary()
    for status in STATUSES:
        counts.add_row(status, str(summary[status]))
    if summary["not_run"]:
        counts.add_row("not run", str(summary["not_run"]))
    counts.add_row("time", format_elapsed(tally.elapsed))
    if not tally.problems:
        return Group(heading, counts)
    problems = Table(title="rows that did not succeed", title_justify="left")
    for column in ("key", "line", "status", "task id", "error"):
        problems.add_column(column, overflow="fold")
    for record in tally.problems[:_SHOWN_PROBLEMS]:
        error = record["error"] or {}
        message = shorten(printable(str(error.get("message", ""))), _SHOWN_MESSAGE)
        problems.add_row(
            Text(printable(str(record["key"]))),
            str(record["line"]),
            record["status"],
            Text(short_id(record["task_id"]) if record["task_id"] else "-"),
            Text(f"{error.get('type', '')}: {message}"),
        )
    more = len(tally.problems) - _SHOWN_PROBLEMS
    parts: list[Any] = [heading, counts, problems]
    if more > 0:
        parts.append(Text(f"... and {more} more in {output_path}"))
    return Group(*parts)
