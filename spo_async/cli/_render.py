"""What one task looks like on screen: the live view, the plain progress lines, the report.

Everything here builds rich renderables from :class:`~spo_async.TaskResult` snapshots
and prints nothing itself. Text from the service (prompts, answers, ids, errors) always
goes into :class:`rich.text.Text`, never through markup (prompts are full of
``[brackets]``), and through :func:`~._safe.printable` first, so that no control
sequence it holds reaches the terminal.

Consecutive rounds usually differ by a few words, so rounds are shown by what changed
against the best prompt before them (:func:`~._diff.change_summary`), and the best
prompt is printed in full once, last, where it can be copied from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from spo_async import Round, TaskResult, TaskStatus

from ._diff import best_before, change_summary, one_line
from ._safe import printable, short_id

__all__ = [
    "LiveView",
    "final_report",
    "format_elapsed",
    "round_line",
    "snapshot_report",
    "verdict",
]

_STATUS_STYLE: Final = {
    TaskStatus.QUEUE: "yellow",
    TaskStatus.PROCESSING: "cyan",
    TaskStatus.SUCCESS: "bold green",
    TaskStatus.FAIL: "bold red",
    TaskStatus.UNKNOWN: "magenta",
}
_LIVE_ROUNDS: Final = 8
_LIVE_PROMPT_LINES: Final = 12
_CHANGE_WIDTH: Final = 70
_PROMPT_WIDTH: Final = 34


def format_elapsed(seconds: float) -> str:
    """``"4.2 s"`` under a minute, ``"3 min 05 s"`` after."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def verdict(round_: Round, *, marks: bool = True) -> Text:
    """How a round fared: the original prompt, a new best, or not better."""
    if round_.number == 1:
        return Text("original", style="dim")
    if round_.success:
        return Text("✓ better" if marks else "better", style="green")
    return Text("✗ not better" if marks else "not better", style="red")


def change(rounds: tuple[Round, ...], round_: Round, width: int = _CHANGE_WIDTH) -> Text:
    """What round ``round_``'s prompt changed against the best prompt before it."""
    if not round_.prompt:
        return Text("(empty: the optimizer returned no prompt)", style="dim")
    base = best_before(rounds, round_.number)
    if base is None:
        lead = f"{len(round_.prompt)} chars: "
        return Text(lead + one_line(round_.prompt, max(width - len(lead), 10)))
    return change_summary(base.prompt, round_.prompt, width)


def round_line(rounds: tuple[Round, ...], round_: Round, total: int | None) -> str:
    """One plain line for a finished round, for logs and non-terminal progress."""
    of = f"/{total}" if total else ""
    fared = verdict(round_, marks=False).plain
    return f"round {round_.number}{of}: {fared}: {change(rounds, round_).plain}"


def short_prompt(prompt: str, width: int = _PROMPT_WIDTH) -> Text:
    """A prompt's first line, cut to ``width``, and its length."""
    if not prompt:
        return Text("(empty)", style="dim")
    first = prompt.strip().splitlines()[0] if prompt.strip() else ""
    text = Text(one_line(first, width))
    text.append(f" ({len(prompt)} chars)", style="dim")
    return text


def header(result: TaskResult | None, task_id: str, elapsed: float | None, note: str = "") -> Text:
    """``task <id>  <status>  round k/n  <elapsed>``, and a note such as the language."""
    line = Text(f"task {short_id(result.task_id if result else task_id)}  ")
    if result is not None:
        line.append(printable(result.raw_status), style=_STATUS_STYLE[result.status])
        total = result.max_rounds or (len(result.rounds) if result.is_terminal else None)
        line.append(f"  round {len(result.completed_rounds)}/{total or '?'}")
    if note:
        line.append(f"  {note}", style="dim")
    if elapsed is not None:
        line.append(f"  {format_elapsed(elapsed)}")
    return line


def _prompt_panel(title: str, prompt: str | None) -> Panel:
    """The prompt framed; a long one is cut, so that the live view fits the screen."""
    if not prompt:
        return Panel(Text("(none yet)", style="dim"), title=title, title_align="left")
    lines = printable(prompt, multiline=True).splitlines()
    body = Text("\n".join(lines[:_LIVE_PROMPT_LINES]))
    if len(lines) > _LIVE_PROMPT_LINES:
        body.append(f"\n… {len(lines) - _LIVE_PROMPT_LINES} more lines", style="dim")
    return Panel(body, title=title, title_align="left", border_style="green")


def _best_title(result: TaskResult, final: bool) -> str:
    best = result.best
    where = f" (round {best.number})" if best is not None else ""
    return ("best prompt" if final else "best prompt so far") + where


def _best_prompt(result: TaskResult) -> str | None:
    if result.best_prompt:
        return result.best_prompt
    best = result.best
    return best.prompt if best is not None else None


class LiveView:
    """The live view of one task; rich redraws it (``__rich__``) a few times a second.

    Feed it snapshots with :meth:`update`; the elapsed time runs on between them.
    ``note`` says what is going on before the first snapshot (``submitting``,
    ``waiting``) and, after it, what the header adds (the language).
    """

    def __init__(self, task_id: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.task_id = task_id
        self.note = "submitting"
        self.language = ""
        self.snapshot: TaskResult | None = None
        self._clock = clock
        self._started = clock()

    def update(self, snapshot: TaskResult) -> None:
        """Show ``snapshot`` from now on."""
        self.snapshot = snapshot
        self.task_id = snapshot.task_id

    @property
    def elapsed(self) -> float:
        """Seconds since the view was created."""
        return self._clock() - self._started

    def __rich__(self) -> Group:
        result = self.snapshot
        note = " · ".join(part for part in (self.note, self.language) if part)
        if result is None:
            return Group(header(None, self.task_id, self.elapsed, note))
        rounds = Table(box=None, show_header=False, padding=(0, 1))
        rounds.add_column("round", justify="right")
        rounds.add_column("verdict", no_wrap=True)
        rounds.add_column("change", overflow="ellipsis", no_wrap=True)
        done = result.completed_rounds
        for r in done[-_LIVE_ROUNDS:]:
            rounds.add_row(str(r.number), verdict(r), change(done, r))
        parts: list[RenderableType] = [header(result, self.task_id, self.elapsed, note)]
        if done:
            parts.append(rounds)
        parts.append(_prompt_panel(_best_title(result, final=False), _best_prompt(result)))
        return Group(*parts)


def snapshot_report(result: TaskResult) -> Group:
    """One snapshot for ``status``: its header, then the rounds and best prompt so far."""
    report = final_report(result, final=result.is_terminal)
    return Group(header(result, result.task_id, None), *report.renderables)


def final_report(result: TaskResult, elapsed: float | None = None, *, final: bool = True) -> Group:
    """A table of the rounds (each prompt shortened, and what it changed), then the best.

    The best prompt comes last, whole and unframed, so it is what is left on screen and
    can be copied as it is.
    """
    table = Table(title="rounds", title_justify="left")
    table.add_column("round", justify="right", min_width=5)
    table.add_column("verdict", no_wrap=True, min_width=12)
    table.add_column("prompt (first line, length)", max_width=_PROMPT_WIDTH)
    table.add_column("change against the best prompt before it", min_width=24, ratio=1)
    for r in result.rounds:
        base = best_before(result.rounds, r.number)
        changed = change(result.rounds, r) if base is not None else Text("-", style="dim")
        table.add_row(str(r.number), verdict(r), short_prompt(r.prompt), changed)
    parts: list[RenderableType] = []
    if result.rounds:
        parts.append(table)
    if result.failed:
        reason = printable(str(result.error or "no reason given"))
        parts.append(Text(f"task {short_id(result.task_id)} failed: {reason}", style="bold red"))
    summary = f"{len(result.rounds)} rounds" if final else f"{len(result.rounds)} rounds so far"
    if elapsed is not None:
        summary += f" in {format_elapsed(elapsed)}"
    parts.append(Rule(f"{_best_title(result, final=final)}, {summary}", align="left"))
    best = _best_prompt(result)
    parts.append(Text(printable(best, multiline=True)) if best else Text("(none)", style="dim"))
    return Group(*parts)
