"""What one task looks like on screen: the live view, the final report, word diffs.

Everything here builds rich renderables from :class:`~spo_async.TaskResult` snapshots
and prints nothing itself. Text from the service (prompts, answers) always goes into
:class:`rich.text.Text`, never through markup, since prompts are full of ``[brackets]``.
Diffs are marked ``[-removed-]{+added+}`` (git's word-diff) as well as coloured, so they
read the same without colour.
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Callable, Sequence
from typing import Final

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from spo_async import Round, TaskResult, TaskStatus

__all__ = [
    "LiveView",
    "best_before",
    "final_report",
    "format_elapsed",
    "round_line",
    "snapshot_report",
    "verdict",
    "word_diff",
]

_TOKENS: Final = re.compile(r"\s+|\w+|[^\w\s]")
_STATUS_STYLE: Final = {
    TaskStatus.QUEUE: "yellow",
    TaskStatus.PROCESSING: "cyan",
    TaskStatus.SUCCESS: "bold green",
    TaskStatus.FAIL: "bold red",
    TaskStatus.UNKNOWN: "magenta",
}
_LIVE_ROUNDS: Final = 8
_LIVE_PROMPT_LINES: Final = 12
_ONE_LINE: Final = 70


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


def _one_line(text: str, limit: int = _ONE_LINE) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def round_line(round_: Round, total: int | None) -> str:
    """One plain line for a finished round, for logs and non-terminal progress."""
    of = f"/{total}" if total else ""
    fared = verdict(round_, marks=False).plain
    return f"round {round_.number}{of}: {fared}: {_one_line(round_.prompt)!r}"


def _segments(before: str, after: str) -> list[list[str]]:
    """``[kind, text]`` pieces of the diff, kind ``=``, ``-`` or ``+``, word by word."""
    old, new = _TOKENS.findall(before), _TOKENS.findall(after)
    pieces: list[list[str]] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op == "equal":
            pieces.append(["=", "".join(old[a1:a2])])
            continue
        if a2 > a1:
            pieces.append(["-", "".join(old[a1:a2])])
        if b2 > b1:
            pieces.append(["+", "".join(new[b1:b2])])
    # Slide a lone change past the whitespace it starts with ("Be[- kind-] warm" reads
    # better as "Be [-kind -]warm"), as git's word-diff does.
    for i in range(1, len(pieces) - 1):
        before_, change, after_ = pieces[i - 1], pieces[i], pieces[i + 1]
        if before_[0] != "=" or after_[0] != "=":
            continue
        while change[1] and after_[1] and change[1][0].isspace() and change[1][0] == after_[1][0]:
            before_[1] += change[1][0]
            change[1] = change[1][1:] + change[1][0]
            after_[1] = after_[1][1:]
    return pieces


def word_diff(before: str, after: str) -> Text:
    """``after`` marked against ``before`` word by word: ``[-gone-]`` and ``{+new+}``."""
    text = Text()
    for kind, piece in _segments(before, after):
        if kind == "=":
            text.append(piece)
        elif kind == "-":
            text.append("[-" + piece + "-]", style="red strike")
        else:
            text.append("{+" + piece + "+}", style="bold green")
    return text


def best_before(rounds: Sequence[Round], number: int) -> Round | None:
    """The best round before round ``number``: the latest successful one (spec §6.4)."""
    best = None
    for r in rounds:
        if r.number >= number:
            break
        if r.success or r.number == 1:
            best = r
    return best


def _header(result: TaskResult, elapsed: float | None) -> Text:
    line = Text()
    line.append(f"task {result.task_id}  ")
    line.append(result.raw_status, style=_STATUS_STYLE[result.status])
    total = result.max_rounds or (len(result.rounds) if result.is_terminal else None)
    line.append(f"  round {len(result.completed_rounds)}/{total or '?'}")
    if elapsed is not None:
        line.append(f"  {format_elapsed(elapsed)}")
    return line


def _prompt_panel(title: str, prompt: str | None) -> Panel:
    """The prompt framed; a long one is cut, so that the live view fits the screen."""
    if not prompt:
        return Panel(Text("(none yet)", style="dim"), title=title, title_align="left")
    lines = prompt.splitlines()
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


def _live_group(result: TaskResult | None, task_id: str, elapsed: float, note: str) -> Group:
    if result is None:
        name = f"task {task_id}  " if task_id else ""
        return Group(Text(f"{name}{note}  {format_elapsed(elapsed)}"))
    rounds = Table(box=None, show_header=False, padding=(0, 1))
    rounds.add_column("round", justify="right")
    rounds.add_column("verdict")
    rounds.add_column("prompt", overflow="ellipsis", no_wrap=True)
    done = result.completed_rounds
    for r in done[-_LIVE_ROUNDS:]:
        rounds.add_row(str(r.number), verdict(r), Text(_one_line(r.prompt)))
    parts: list[RenderableType] = [_header(result, elapsed)]
    if done:
        parts.append(rounds)
    parts.append(_prompt_panel(_best_title(result, final=False), _best_prompt(result)))
    return Group(*parts)


class LiveView:
    """The live view of one task; rich redraws it (``__rich__``) a few times a second.

    Feed it snapshots with :meth:`update` (an ``on_progress`` hook); the elapsed time
    runs on between snapshots.
    """

    def __init__(self, task_id: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.task_id = task_id
        self.note = "submitting"
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
        return _live_group(self.snapshot, self.task_id, self.elapsed, self.note)


def snapshot_report(result: TaskResult) -> Group:
    """One snapshot for ``status``: its header, then the rounds and best prompt so far."""
    return Group(_header(result, None), *final_report(result, final=result.is_terminal).renderables)


def final_report(result: TaskResult, elapsed: float | None = None, *, final: bool = True) -> Group:
    """Each round's prompt as a diff against the best before it, then the best prompt.

    The best prompt comes last and unframed, so it is what is left on screen and can be
    copied as it is.
    """
    table = Table(title="rounds", title_justify="left", show_lines=True)
    table.add_column("round", justify="right")
    table.add_column("verdict", no_wrap=True)
    table.add_column("prompt (diff against the best prompt before it)")
    for r in result.rounds:
        base = best_before(result.rounds, r.number)
        if not r.prompt:
            shown = Text("(empty: the optimizer returned no prompt)", style="dim")
        elif base is None:
            shown = Text(r.prompt)
        else:
            shown = word_diff(base.prompt, r.prompt)
        table.add_row(str(r.number), verdict(r), shown)
    parts: list[RenderableType] = []
    if result.rounds:
        parts.append(table)
    if result.failed:
        parts.append(Text(f"task {result.task_id} failed: {result.error}", style="bold red"))
    summary = f"{len(result.rounds)} rounds" if final else f"{len(result.rounds)} rounds so far"
    if elapsed is not None:
        summary += f" in {format_elapsed(elapsed)}"
    parts.append(Rule(f"{_best_title(result, final=final)}, {summary}", align="left"))
    best = _best_prompt(result)
    parts.append(Text(best) if best else Text("(none)", style="dim"))
    return Group(*parts)
