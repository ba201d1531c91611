"""Where a look should go in its window, once a model is known: the dynamic program.

The default schedule, in progress mode on a model with finished tasks, looks a
fraction ``x`` of the way into the window where the next round should end,

    x = a * (worth / spread) ** (1/3), at most 1,

where ``spread`` is the width of the task's pace range (in rounds), ``worth`` is
what a look costs in rounds of delay (1.6 times ``progress_lag``: 0.24 with the
default), and ``a`` is 0.78 for round 1 and 0.56 for the later rounds
(``spo_async/_placement.py``, ``_known_look``). This script shows where those
numbers come from.

The model: a task of ``n`` rounds, its start known, round 1 a third of a round,
its pace uniform in a range of relative width ``spread`` (0.63 at most: tasks
differ by ±30 %). Round ``k`` ends at ``(k - 2/3) * pace``. A look at a fraction
``x`` into the window sees the round with probability ``x``, at a mean delay of
half the part it let pass, and leaves the pace in the part before the look; one
that misses costs a look and leaves the pace in the part after it. The program
minimises looks plus ``1 / worth`` times the summed delay, over every round.

    python bench/placement.py            # the program's x beside the rule's, n = 4
    python bench/placement.py --rounds 8
"""

from __future__ import annotations

import argparse

from spo_async._placement import _LOOK_WORTH, _known_look

WIDEST = 0.63  # the widest pace range, in rounds
SHARE = 1 / 3  # round 1's share of a round


def solve(rounds: int, worth: float, cells: int = 120, steps: int = 60) -> dict[int, list[float]]:
    """The best fraction into the window for each round and pace width (``cells`` widths)."""
    mu = 1.0 / worth
    widths = [WIDEST * i / cells for i in range(cells + 1)]
    fractions = [(j + 1) / steps for j in range(steps)]

    def at(values: list[float], width: float) -> float:
        where = width / WIDEST * cells
        low = min(int(where), cells - 1)
        part = where - low
        return values[low] * (1 - part) + values[low + 1] * part

    later = [0.0] * (cells + 1)  # the cost of the rounds after the last: none
    policy: dict[int, list[float]] = {}
    for k in range(rounds, 0, -1):
        reach = SHARE + k - 1  # round k ends this many paces after the start
        cost = [later[0] + 1.0] + [0.0] * cells
        best_x = [1.0] * (cells + 1)
        for i in range(1, cells + 1):
            w = widths[i]
            best = None
            for x in fractions:
                seen, missed = x * w, (1 - x) * w
                if missed > widths[i - 1]:
                    continue  # the cost of this round at a width not solved yet
                total = 1.0 + x * (mu * reach * seen / 2 + at(later, seen))
                total += (1 - x) * at(cost, missed)
                if best is None or total < best:
                    best, best_x[i] = total, x
            cost[i] = best if best is not None else cost[i - 1]
        policy[k] = best_x
        later = cost
    return policy


def rule(round_number: int, spread: float, worth: float) -> float:
    """The schedule's own choice, for a window from 0 to 1 entered from before it."""
    return _known_look(-1.0, (0.0, 1.0), spread, first=round_number <= 1, worth=worth, gap=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--progress-lag", type=float, default=0.15)
    args = parser.parse_args()
    worth = _LOOK_WORTH * args.progress_lag
    cells = 120
    policy = solve(args.rounds, worth, cells=cells)
    shown = list(range(cells // 12, cells + 1, cells // 12))
    print(f"x, the fraction into the window: program / rule (worth = {worth:.2f} round)")
    print("spread   " + " ".join(f"{WIDEST * i / cells:9.2f}" for i in shown))
    for k in range(1, args.rounds + 1):
        cells_x = [f"{policy[k][i]:.2f}/{rule(k, WIDEST * i / cells, worth):.2f}" for i in shown]
        print(f"round {k:<3}" + " ".join(f"{c:>9}" for c in cells_x))


if __name__ == "__main__":
    main()
