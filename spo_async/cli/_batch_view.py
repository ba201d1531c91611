"""What a batch looks like: its output lines, its progress, and its closing summary.

:func:`outcome_record` is the stable shape of one ``OUTPUT.jsonl`` line. :class:`Tally`
counts outcomes and works out throughput and ETA (rows an earlier run finished, read
from the journal, count as done but not towards the throughput). :class:`BatchView`
shows it all: a rich progress bar on a terminal, one plain line per row on stderr
otherwise.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Self

from rich.console import Group
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
)
from rich.table import Table
from rich.text import Text

from spo_async import Errored, Failed, Outcome, OutcomeUnknown, Succeeded

from ._render import format_elapsed
from ._runtime import Output

__all__ = ["STATUSES", "BatchView", "Tally", "outcome_record"]

#: The ``status`` of an output line, in the order the summary lists them.
STATUSES: Final = ("succeeded", "failed", "errored", "unknown")
_SHOWN_PROBLEMS: Final = 20


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
        return {"type": "TaskFailed", "message": str(outcome.result.error or "the task failed")}
    if isinstance(outcome, Errored | OutcomeUnknown):
        error = outcome.error
        name = getattr(error, "type_name", None) or type(error).__name__
        return {"type": name, "message": getattr(error, "message", None) or str(error)}
    return None


def outcome_record(outcome: Outcome, line: int) -> dict[str, Any]:
    """One output line: ``key``, ``line``, ``status``, ``task_id``, ``result``, ``error``."""
    task_id = getattr(outcome, "task_id", None)
    result = getattr(outcome, "result", None)
    return {
        "key": outcome.key,
        "line": line,
        "status": _status(outcome),
        "task_id": task_id,
        "best_prompt": result.best_prompt if result is not None else None,
        "result": result.to_dict() if result is not None else None,
        "error": _error(outcome),
        "from_journal": outcome.from_journal,
    }


class Tally:
    """Counts of a batch's outcomes, and its pace."""

    def __init__(
        self, total: int, concurrency: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.total = total
        self.concurrency = concurrency
        self.by_status: collections.Counter[str] = collections.Counter()
        self.fresh = 0
        self.problems: list[dict[str, Any]] = []
        self._clock = clock
        self.started = clock()

    def add(self, record: dict[str, Any]) -> None:
        """Count one output line."""
        self.by_status[record["status"]] += 1
        if not record["from_journal"]:
            self.fresh += 1
        if record["status"] != "succeeded":
            self.problems.append(record)

    @property
    def done(self) -> int:
        """Rows with an outcome."""
        return sum(self.by_status.values())

    @property
    def running(self) -> int:
        """Rows being worked on: every worker holds one until none is left."""
        return min(self.concurrency, self.total - self.done)

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
        left = (self.total - self.done) / per_second
        return f"{per_second * 60:.1f} tasks/min, ETA {format_elapsed(left)}"

    def summary(self) -> dict[str, Any]:
        """The counts, for ``--json``."""
        return {
            "total": self.total,
            **{status: self.by_status[status] for status in STATUSES},
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
        stats = (
            f"{t.by_status['succeeded']} ok · {t.done - t.by_status['succeeded']} failed · "
            f"{t.running} running · {t.pace()}"
        )
        self._progress.update(self._task, completed=t.done, stats=stats)

    def settled(self, record: dict[str, Any]) -> None:
        """One row got its outcome."""
        self.tally.add(record)
        self.refresh()
        if self._progress is None:
            where = "journal" if record["from_journal"] else record["task_id"] or "no task"
            error = record["error"]
            reason = f": {error['message']}" if error else ""
            self.output.note(
                f"[{self.tally.done}/{self.tally.total}] {record['key']}: "
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
    for status in STATUSES:
        counts.add_row(status, str(tally.by_status[status]))
    counts.add_row("time", format_elapsed(tally.elapsed))
    if not tally.problems:
        return Group(heading, counts)
    problems = Table(title="rows that did not succeed", title_justify="left")
    for column in ("key", "line", "status", "task id", "error"):
        problems.add_column(column, overflow="fold")
    for record in tally.problems[:_SHOWN_PROBLEMS]:
        error = record["error"] or {}
        problems.add_row(
            Text(str(record["key"])),
            str(record["line"]),
            record["status"],
            record["task_id"] or "-",
            Text(f"{error.get('type', '')}: {error.get('message', '')}"),
        )
    more = len(tally.problems) - _SHOWN_PROBLEMS
    parts: list[Any] = [heading, counts, problems]
    if more > 0:
        parts.append(Text(f"... and {more} more in {output_path}"))
    return Group(*parts)
