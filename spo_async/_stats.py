"""The statistics of the adaptive poll schedule, without scipy or statistics.

Two jobs, both pure: the normal distribution (its density, tails, a belief
truncated to an interval, and when to look so that an event waits a given time
on average), and robust running estimates (median and MAD of the last few
samples). Written with :mod:`math` alone because they run at every look and
``import spo_async`` should stay cheap; :mod:`statistics` offers neither the
truncated moments nor the look rule. The reasoning that uses them is in
:mod:`spo_async._adaptive`.
"""

from __future__ import annotations

import collections
import math

__all__ = ["MAD_TO_SD", "MEDIAN_SE", "Estimate", "look_after", "truncate_normal"]

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
#: The MAD of a normal distribution times this is its standard deviation.
MAD_TO_SD = 1.4826
#: The standard error of a median is about this times ``sd / sqrt(n)``.
MEDIAN_SE = 1.2533


# -- the normal distribution ---------------------------------------------------------------


def _pdf(z: float) -> float:
    return 0.0 if math.isinf(z) else _INV_SQRT_2PI * math.exp(-0.5 * z * z)


def _cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / _SQRT2)


def _sf(z: float) -> float:
    """The upper tail, ``1 - cdf(z)``, accurate far into the tail."""
    return 0.5 * math.erfc(z / _SQRT2)


def truncate_normal(mean: float, sd: float, lo: float, hi: float) -> tuple[float, float]:
    """Mean and spread of a normal belief once it is known to lie in ``(lo, hi]``.

    This is how an observation bracket updates a predicted finish time. When
    the prediction and the bracket barely overlap (the prediction was badly
    off), the bracket wins: the belief becomes uniform over it, or hugs its
    finite end when the other is open.
    """
    if sd <= 0.0:
        return min(max(mean, lo), hi), 0.0
    a = (lo - mean) / sd
    b = (hi - mean) / sd
    mass = _sf(a) - _sf(b) if a > 0.0 else _cdf(b) - _cdf(a)
    if mass > 1e-12:
        pa, pb = _pdf(a), _pdf(b)
        ratio = (pa - pb) / mass
        apa = 0.0 if math.isinf(a) else a * pa
        bpb = 0.0 if math.isinf(b) else b * pb
        var = sd * sd * max(1.0 + (apa - bpb) / mass - ratio * ratio, 1e-6)
        return min(max(mean + sd * ratio, lo), hi), math.sqrt(var)
    if math.isfinite(lo) and math.isfinite(hi):
        return (lo + hi) / 2.0, (hi - lo) / math.sqrt(12.0)
    if math.isfinite(lo):  # far beyond the prediction: the Mills ratio's tail form
        return lo + sd / max(a, 1.0), sd / max(a, 1.0)
    if math.isfinite(hi):
        return hi - sd / max(-b, 1.0), sd / max(-b, 1.0)
    return mean, sd


def _stop_loss(z: float) -> float:
    """``E[(Z - z)+]`` for a standard normal ``Z``: how far past ``z`` it lands, on average."""
    return _pdf(z) - z * _sf(z)


def look_after(mean: float, sd: float, now: float, budget: float) -> float:
    """When to look so that, if the event is in by then, it waited ``budget`` on average.

    Solves ``E[(t - T)+ | T > now] = budget`` for ``t``, ``T`` the event's time
    (normal). A narrow prediction gets one look just after it; a wide one gets a
    first look early enough to keep the budget, then (asked again after a miss)
    looks closer and closer together as the event grows likely: the rule spends
    looks where the event is likely to be, and none where it is not. The left
    side grows and is convex in ``t``, so Newton's method started at
    ``E[T | T > now] + budget`` (never before the root) converges from the right.
    """
    if sd <= 0.0:
        return max(mean, now)
    za = (now - mean) / sd
    if za > 6.0:  # hopelessly late: the caller backs off; just look after the budget
        return now + budget
    target = budget / sd
    tail = _sf(za)
    loss = _stop_loss(za)
    z = za + loss / tail + target
    for _ in range(12):
        excess = (z - za) - (loss - _stop_loss(z)) / tail - target
        slope = 1.0 - _sf(z) / tail
        if excess <= 1e-7 * target or slope <= 1e-12:
            break
        z -= excess / slope
    return mean + z * sd


# -- robust running estimates --------------------------------------------------------------


class Estimate:
    """The last few samples of one duration, summarised by their median and spread.

    The median ignores a stalled round or a glitch that a mean would chase; the
    window bounds memory and lets an estimate follow a service that slows
    down. The spread is robust too: the MAD of the samples (a sample that
    averages ``span`` rounds counts its deviation ``sqrt(span)`` times, since
    averages look steadier than the rounds they average), plus the typical
    uncertainty left in each sample (``var``). That second term is the
    expectation-maximisation rule: a sample read from loose looks is partly a
    prediction, and predictions vary less than the truth, so leaving it out
    would make the rounds look steadier with every task, and the looks ever
    more confident and late. It never drops below ``floor`` of the median.
    """

    __slots__ = ("_cache", "_floor", "_samples")

    def __init__(self, size: int, floor: float) -> None:
        self._samples: collections.deque[tuple[float, int, float]] = collections.deque(maxlen=size)
        self._floor = floor
        self._cache: tuple[float, float | None, int] | None = None

    def add(self, value: float, span: int = 1, var: float = 0.0) -> None:
        if value > 0.0 and math.isfinite(value):
            self._samples.append((value, span, var))
            self._cache = None

    def summary(self) -> tuple[float, float | None, int] | None:
        """``(median, spread or None with fewer than 3 samples, count)``, or ``None`` if empty."""
        if self._cache is None and self._samples:
            samples = self._samples
            n = len(samples)
            median = _median(sorted(v for v, _, _ in samples))
            spread = None
            if n >= 3:
                mad = _median(sorted(abs(v - median) * math.sqrt(k) for v, k, _ in samples))
                left = _median(sorted(k * e for _, k, e in samples))
                spread = max(math.sqrt((MAD_TO_SD * mad) ** 2 + left), self._floor * median)
            self._cache = (median, spread, n)
        return self._cache


def _median(ordered: list[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0
