"""The batch's progress bar on a terminal, its pace, and the summary of what went wrong."""

from __future__ import annotations

import io

from rich.console import Console
from spo_async import (
    BatchProgress,
    Errored,
    OutcomeUnknown,
    SubmitOutcomeUnknownError,
    TransientError,
)
from spo_async.cli._batch_view import BatchView, Tally, outcome_record, summary_table
from spo_async.cli._runtime import Output

from .conftest import make_request


def terminal() -> tuple[Output, io.StringIO]:
    """An Output whose stdout is a (fake) terminal, so the live bar is drawn."""
    screen = io.StringIO()
    out = Console(file=screen, force_terminal=True, width=120)
    err = Console(file=io.StringIO(), force_terminal=False)
    return Output(out=out, err=err, animate=True, json=False, quiet=False), screen


def test_the_bar_counts_outcomes_as_the_library_does_and_keeps_notes_above_it() -> None:
    """On a terminal the bar shows the library's counters; a note is printed above it."""
    now = [0.0]
    tally = Tally(3, clock=lambda: now[0])
    output, screen = terminal()
    request = make_request()
    error = TransientError("gateway down", status=502)
    with BatchView(output, tally) as view:
        tally.progress = BatchProgress(total=3, pending=0, running=1, succeeded=0, errored=1)
        now[0] = 30.0
        view.settled(outcome_record(Errored(key="a", index=0, request=request, error=error), 1))
        view.note("the journal is at j.db")
    shown = screen.getvalue()
    assert "0 ok · 0 failed · 1 errored · 0 unknown · 1 running" in shown
    assert "2.0 tasks/min" in shown
    assert "spo-async: the journal is at j.db" in shown
    assert tally.problems[0]["error"]["type"] == "TransientError"


def test_the_summary_lists_rows_that_did_not_succeed_and_rows_never_run() -> None:
    """The closing table names each failed row's error, and how many rows never started."""
    tally = Tally(25)
    request = make_request()
    unknown = SubmitOutcomeUnknownError(request, TransientError("\x1b[2Jboom", status=502))
    for line in range(1, 23):
        tally.add(
            outcome_record(
                OutcomeUnknown(key=f"k{line}", index=line, request=request, error=unknown), line
            )
        )
    tally.progress = BatchProgress(total=25, pending=3, running=0, unknown=22)
    console = Console(file=io.StringIO(), width=200)
    console.print(summary_table(tally, "out.jsonl"))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "not run" in text
    assert "rows that did not succeed" in text
    assert "... and 2 more in out.jsonl" in text
    assert "\x1b[2J" not in text  # the service's escape sequence is shown, not obeyed
    assert tally.summary()["not_run"] == 3
    assert Tally(5).pace() == "ETA --"  # nothing finished in this run: no pace to tell
