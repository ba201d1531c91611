"""The emulator's quota mode: a per-key request rate, enforced the way an API gateway does.

With ``EmulatorConfig(quota_per_second=40.0)`` every request of one API key, submit or
query, counts against that key's quota, whatever it asks for and however it ends. The
quota is a *moving window* (a log of admitted requests, the ``limits`` library's
"moving window" strategy): at most ``limit`` admitted requests in any ``window``
seconds, where ``limit`` is ``quota_per_second * window``. It is the strictest common
reading of "Q requests per second" (a fixed window also lets ``2 * limit`` through
across a window's edge, a token bucket a full burst after a quiet spell), so a client
that stays under it stays under those too.

A refused request is answered 429 with ``Retry-After`` in whole seconds, rounded up (the
header's delta-seconds form has no fraction): the time until the oldest admitted request
leaves the window. A refused request is not admitted, so it does not use up the quota.

The check comes first in the request path, before authentication and before any
injected fault: the gateway refuses before the service sees the request.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable

from spo_async.testing._faults import Reply
from spo_async.testing._wire import localized_body

__all__ = ["QuotaGate"]


class QuotaGate:
    """Admits or refuses each request of a key against a moving window of ``window`` seconds.

    ``per_second`` requests per second on average, at most ``limit`` (``per_second *
    window``, at least 1) in any ``window`` seconds. ``window`` grows to ``1 /
    per_second`` when that is longer, so that a quota below one request per second
    still admits one. Times come from ``clock`` (the emulator's simulation clock, so a
    :class:`~spo_async.testing.ManualClock` drives the quota too).

    :attr:`admitted`, :attr:`refused` and :attr:`log` (``(time, admitted)`` per request,
    unless ``record`` is off) are there for tests and benchmarks.
    """

    def __init__(
        self,
        per_second: float,
        *,
        window: float = 1.0,
        clock: Callable[[], float],
        record: bool = True,
    ) -> None:
        if not per_second > 0 or not window > 0:
            raise ValueError(
                f"a quota needs a rate and a window > 0, got {per_second!r}, {window!r}"
            )
        self.window = max(float(window), 1.0 / per_second)
        self.limit = max(1, math.floor(per_second * self.window + 1e-9))
        self.per_second = float(per_second)
        self._clock = clock
        self._record = record
        self._admitted: dict[str, collections.deque[float]] = {}
        self.admitted = 0
        """Requests let through, all keys together."""
        self.refused = 0
        """Requests answered 429 by the quota, all keys together."""
        self.log: list[tuple[float, bool]] = []
        """``(time, admitted)`` for every request, in arrival order (when recording)."""

    def __repr__(self) -> str:
        return f"<QuotaGate {self.limit} per {self.window:g} s, {self.refused} refused>"

    def check(self, key: str) -> Reply | None:
        """Count one request of ``key``: ``None`` when admitted, else the 429 reply to send."""
        now = self._clock()
        times = self._admitted.get(key)
        if times is None:
            times = self._admitted[key] = collections.deque()
        horizon = now - self.window
        while times and times[0] <= horizon:
            times.popleft()
        admitted = len(times) < self.limit
        if self._record:
            self.log.append((now, admitted))
        if admitted:
            times.append(now)
            self.admitted += 1
            return None
        self.refused += 1
        wait = times[0] + self.window - now
        retry_after = max(1, math.ceil(wait - 1e-9))
        return Reply(
            429, localized_body("rate_limit"), headers=(("Retry-After", str(retry_after)),)
        )

    def reset(self) -> None:
        """Forget every key's window, the counts and the log."""
        self._admitted.clear()
        self.admitted = 0
        self.refused = 0
        self.log.clear()
