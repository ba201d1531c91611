"""The simple round-aware rule the default schedule is measured against.

Look at the time the last round was seen plus the median round length (times the
rounds still to come, in completion mode), then step by a fixed fraction of a
round until something new shows. Round lengths are learnt per model from
finished tasks (the time between the first and the last round seen, per round
between them, or from the start to the end with round 1 counted as a third of a
round, since round 1 only runs the prompt; round 1 on its own), shared by every
task of the client, as the default schedule does. Until a round length is known it searches like the
default: doubling the time spent in the current stage, from 0.25 s.

``early`` moves the planned look that much of the remaining time earlier: with
tasks whose pace varies by ±30 %, a look at the median sees half of them late,
so equal-lag comparisons need it. Nothing here is used by the SDK.
"""

from __future__ import annotations

import collections
import statistics

from spo_async.polling import PollMode, PollState

FLOOR = 0.25


class RoundAware:
    """Last seen round + median round length, then fixed steps."""

    def __init__(self, *, step: float = 0.2, early: float = 0.0) -> None:
        self.step = step
        self.early = early
        self.rounds: dict[str | None, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=32)
        )
        self.firsts: dict[str | None, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=32)
        )

    def __repr__(self) -> str:
        return f"RoundAware(step={self.step}, early={self.early})"

    def next_delay(self, state: PollState) -> float:
        if state.polls == 0 or (state.last is not None and state.last.is_terminal):
            return 0.0
        seen, start, now = state.round_seen_at, state.started_at, state.elapsed
        rounds = self.rounds[state.model]
        if not rounds:  # the same search as the default schedule's
            anchor = seen[-1] if seen else (start if start is not None else 0.0)
            return max(now - anchor, FLOOR)
        median = statistics.median(rounds)
        firsts = self.firsts[state.model]
        first = statistics.median(firsts) if firsts else median
        done, total = len(seen), state.max_rounds
        target = total if state.mode is PollMode.COMPLETION and total else done + 1
        if done:
            last, ahead = seen[-1], (target - done) * median
        elif start is not None:
            last, ahead = start, first + (target - 1) * median
        else:  # still queued: nothing to aim at
            return self.step * median
        due = last + (1.0 - self.early) * ahead
        return due - now if now < due else self.step * median

    def task_finished(self, state: PollState) -> None:
        seen, start, last = state.round_seen_at, state.started_at, state.last
        if last is None or not last.is_terminal or last.failed or len(seen) < 2:
            return
        if seen[0] < seen[1]:  # round 1 was seen on its own
            self.rounds[state.model].append((seen[-1] - seen[0]) / (len(seen) - 1))
            if start is not None and start < seen[0]:
                self.firsts[state.model].append(seen[0] - start)
        elif start is not None and start < seen[-1]:  # only the end: round 1 is a third
            self.rounds[state.model].append((seen[-1] - start) / (len(seen) - 2 / 3))
