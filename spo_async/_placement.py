"""Where in a window to look next, in progress mode: the adaptive schedule's placement.

Why a module of its own. :class:`~spo_async.polling.AdaptiveSchedule` works out a
*window* for the next boundary of a task (``spo_async._adaptive``); where inside it
the next look goes is a separate question with its own reasoning, answered here by
two pure functions: stepping through the window while a model is new, and, once a
model's tasks have finished, the trade a dynamic program over the task's pace finds
best (``bench/placement.py`` solves it and prints the rule beside it).
"""

from __future__ import annotations

import math

#: In progress mode, the shortest gap between looks inside a window, in steps (a window
#: nearly used up is looked at once more at its end, not ever closer to it).
_MIN_GAP = 0.5
#: In progress mode, how far into a window narrower than a step the look goes.
_NARROW = 0.7
#: In progress mode on a known model, a look goes ``a * (worth / spread) ** (1/3)`` of the
#: way into its window (see ``_known_look``): ``a`` for round 1 and for the later rounds,
#: and a look worth this many times ``progress_lag`` of a round of delay.
_INTO_FIRST, _INTO_LATER, _LOOK_WORTH = 0.78, 0.56, 1.6
#: ... keeping this many steps apart, and going to the window's end rather than leave less
#: of it unseen than this part of the way the look went.
_KNOWN_GAP, _SLIVER = 0.1, 0.25
#: In completion mode, how much shorter each gap between looks inside the end's window is
#: than the one before it, in steps (see ``_completion_look``).
_CLOSER = 0.3


def _progress_look(
    now: float,
    window: tuple[float, float],
    step: float,
    following: tuple[float, float] | None,
    *,
    to_end: bool = True,
) -> float:
    """Where in the target's window to look next, in progress mode.

    A window wider than two steps, or followed by a next round's still wider than
    two steps (``following``; ``None`` after the last round), is split: the look
    halves it. A narrow one is looked at most of the way in. Looks inside a window
    keep ``_MIN_GAP`` step apart: a window nearly used up is looked at at its end,
    not ever closer to it (after which the task is late, and looks back off). Only
    once (``to_end``): a look at the end that misses shows a slower task, which
    moves the end a little later, and a look at each new end would come ever closer.
    """
    start, end = window
    width = max(end - start, 0.0)
    if width > 2 * step or (
        following is not None and following[1] - max(following[0], now) > 2 * step
    ):
        at = start + min(width / 2, step)
    elif width <= step:
        # Most of a narrow window, not all: the few it misses cost a second look,
        # the many it sees are seen sooner (what a search over the pace finds best).
        at = start + _NARROW * width
    else:
        at = start + step
    return max(at, min(now + _MIN_GAP * step, end) if to_end else now + _MIN_GAP * step)


def _completion_look(width: float, step: float) -> float:
    """How far into the end's window (``width`` wide) to look next, in completion mode.

    The end is about equally likely anywhere in its window, so every look that misses
    makes the rest of the window likelier per second: equal steps spend looks early,
    where the end seldom is, and look too rarely late. For a fixed price of a look in
    delay, the best gaps shrink by a constant amount from each look to the next (the
    classic checking schedule for a failure time spread evenly): ``n`` gaps, the first
    ``width / n + c * (n - 1) / 2``, each ``c`` shorter than the last, ``n`` as many as
    keep every gap positive, ``c`` being ``_CLOSER`` of a step. Planned again after each
    miss, the rule gives the same gaps (but that what is left of a window, once no wider
    than a step, is looked at once, at its end). A window without an end (no pace bounds
    it yet, or one too wide for the arithmetic) is looked at a step in. Over a window a
    round wide and the default step (a tenth of a round), that is 3.2 looks against 3.5
    at equal steps for the same mean delay, 0.08 round.
    """
    if width <= step:
        return max(width, 0.0)
    closer = _CLOSER * step
    reach = 8 * width / closer if closer > 0 else math.inf
    if not math.isfinite(reach):
        return step
    gaps = max(int((1 + math.sqrt(1 + reach)) / 2), 1)
    while gaps > 1 and gaps * (gaps - 1) * closer >= 2 * width:
        gaps -= 1
    return width / gaps + closer * (gaps - 1) / 2


def _known_look(
    now: float, window: tuple[float, float], spread: float, *, first: bool, worth: float, gap: float
) -> float:
    """Where to look for the next round of a task whose pace range the model bounds.

    A look that comes before the boundary costs a look and narrows the task's
    pace (``spread``: its range's width, in rounds) for this round and every
    later one; one that comes after it costs the delay it let pass. A dynamic
    program over the pace range (``bench/placement.py``, a look worth ``worth``
    rounds of delay) puts the best look about ``(worth / spread) ** (1/3)`` of the
    way in: at the end of a window that the pace pins, near its middle when the
    pace is loose (every later round gains from a miss). Round 1 is looked at a
    little later than the program says: its share of a round is known less well
    than the program assumes, and the bench sees fewer looks that way.
    """
    start, end = window
    x = 1.0
    if spread > 0:
        x = min((_INTO_FIRST if first else _INTO_LATER) * (worth / spread) ** (1 / 3), 1.0)
    at = max(start + x * max(end - start, 0.0), min(now + gap, end))
    if start <= now and end - at < _SLIVER * (at - now):
        # Inside the window (the last look missed it): its end, not a look just short of
        # it and then another, ever closer, at a task running late.
        return end
    return at
