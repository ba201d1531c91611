"""What changed between two prompts, word by word, marked the way git's word-diff does.

Rounds of an optimization often differ by a few words in a long prompt, so the start of
each prompt looks the same round after round; these functions show the change instead.
Changes are marked ``[-removed-]{+added+}`` as well as coloured, so they read the same
without colour. Every piece of text goes through :func:`~._safe.printable`: prompts come
from the service.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Final

from rich.text import Text

from spo_async import Round

from ._safe import printable

__all__ = ["best_before", "change_summary", "one_line", "segments", "word_diff"]

_TOKENS: Final = re.compile(r"\s+|\w+|[^\w\s]")
_WORDS: Final = re.compile(r"\w+|[^\w\s]+")
#: Words of unchanged text kept around the first change in a summary.
_CONTEXT_WORDS: Final = 3
_STYLE: Final = {"-": "red strike", "+": "bold green"}
_MARKS: Final = {"-": ("[-", "-]"), "+": ("{+", "+}")}


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` on one line (runs of white space as one space), printable, cut to ``limit``."""
    flat = printable(" ".join(text.split()))
    if limit is not None and len(flat) > limit:
        return flat[: limit - 1] + "…"
    return flat


def segments(before: str, after: str) -> list[list[str]]:
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
    for kind, piece in segments(before, after):
        shown = printable(piece, multiline=True)
        if kind == "=":
            text.append(shown)
        else:
            opening, closing = _MARKS[kind]
            text.append(opening + shown + closing, style=_STYLE[kind])
    return text


def _words(text: str) -> int:
    return len(_WORDS.findall(text))


def _flat(text: str) -> str:
    """``text`` on one line, its runs of white space (newlines included) as one space."""
    return printable(re.sub(r"\s+", " ", text))


def _edge(text: str, *, last: bool) -> tuple[str, bool]:
    """The first (or last) few words of ``text`` with their spacing, and whether it is cut."""
    tokens = _TOKENS.findall(text)
    if last:
        tokens.reverse()
    kept: list[str] = []
    words = 0
    for token in tokens:
        if token[0].isalnum() or token[0] == "_":
            if words == _CONTEXT_WORDS:
                break
            words += 1
        kept.append(token)
    cut = len(kept) < len(tokens)
    if last:
        kept.reverse()
    return "".join(kept), cut


def change_summary(before: str, after: str, limit: int = 70) -> Text:
    """How ``after`` differs from ``before`` on one line: word counts, then the first change.

    For example ``+4 -1 words: …reply [-briefly-]{+in two warm sentences+} and…``.
    """
    pieces = segments(before, after)
    added = sum(_words(t) for kind, t in pieces if kind == "+")
    removed = sum(_words(t) for kind, t in pieces if kind == "-")
    if not added and not removed:
        return Text("no change" if before == after else "white space only", style="dim")
    text = Text(f"+{added} -{removed} words: ", style="dim")
    first = next(i for i, (kind, _) in enumerate(pieces) if kind != "=")
    if first:
        lead, cut = _edge(pieces[first - 1][1], last=True)
        text.append(("…" if cut else "") + _flat(lead).lstrip())
    for kind, piece in pieces[first:]:
        if len(text) >= limit:
            break
        if kind == "=":
            tail, cut = _edge(piece, last=False)
            text.append(_flat(tail).rstrip() + ("…" if cut else ""))
            break
        opening, closing = _MARKS[kind]
        text.append(opening + _flat(piece) + closing, style=_STYLE[kind])
    if len(text) > limit:
        text.truncate(limit - 1)
        text.append("…")
    return text


def best_before(rounds: Sequence[Round], number: int) -> Round | None:
    """The best round before round ``number``: the latest successful one."""
    best = None
    for r in rounds:
        if r.number >= number:
            break
        if r.success or r.number == 1:
            best = r
    return best
