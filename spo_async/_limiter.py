"""One request budget for a whole client: a rate, a concurrency cap, and backing off on 429.

Submits and polls of every task share one :class:`RequestLimiter`, so a batch of
ten thousand tasks and a single ``optimize`` call in the same process draw from
the same budget. Three controls, applied in this order around each HTTP request:

1. **Concurrency**: at most ``max_concurrent`` requests in flight (a semaphore).
2. **Pause**: after a 429 with ``Retry-After``, nobody sends until that time has
   passed; the service asked the account, not one request, to wait.
3. **Rate**: a token bucket lets requests out at ``current_rate`` per second,
   at most ``burst`` back to back.

The rate adapts (AIMD, as TCP does): each 429 multiplies it by
``decrease_factor`` (at most once per ``decrease_cooldown``, since a burst of
429s is one signal, not fifty), and each ``recovery_interval`` of successes adds
``recovery_step`` back, up to the configured rate. Without a configured rate the
limiter sends freely until the first 429, then starts from half the rate it had
observed, and lets go again once it has recovered to that rate.

The bucket is :class:`aiolimiter.AsyncLimiter` (small, well kept, exact). It has
no way to change its rate in place, so a change of rate swaps in a new bucket;
waiters that were queued on the old one queue again on the new one, so the old
and new buckets never leak side by side. The pause, the AIMD control and the
concurrency cap are the parts aiolimiter does not do, and are written here.

Time is the running event loop's (``loop.time()``), as aiolimiter's is, so a test
loop with virtual time drives all of it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from typing import TYPE_CHECKING

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from aiolimiter import AsyncLimiter

__all__ = ["RequestLimiter"]

#: The window, in seconds, over which the observed request rate is measured.
_RATE_WINDOW = 1.0


def _check_number(
    name: str, value: object, *, at_least: float = 0.0, allow_none: bool = True
) -> None:
    """Refuse anything but a finite number above ``at_least`` (or equal, when it is not 0)."""
    if value is None and allow_none:
        return
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= at_least if at_least else value > 0)
    )
    if not ok:
        bound = f">= {at_least:g}" if at_least else "> 0"
        raise ConfigurationError(f"{name} must be a finite number {bound}, got {value!r}")


class RequestLimiter:
    """A client-wide budget of HTTP requests: rate, concurrency, and back-off on 429.

    Hold :meth:`slot` around each HTTP request, then report how it went::

        async with limiter.slot():
            response = await transport.send(request, timeout=...)
        if response.status == 429:
            limiter.on_rate_limited(retry_after)
        else:
            limiter.on_success()

    ``rate`` is the most requests per second (``None``: no cap until a 429 is
    seen), ``max_concurrent`` the most requests in flight (``None``: no cap).
    ``burst`` is how many requests may leave back to back after a quiet spell.
    On a 429 the rate is multiplied by ``decrease_factor`` (not below
    ``min_rate``), and everyone waits out ``Retry-After`` (capped at
    ``max_pause``); after that, each ``recovery_interval`` seconds with a success
    adds ``recovery_step`` requests per second (default: a tenth of the target
    rate) until the configured rate is back.

    One limiter belongs to one event loop, like the client that uses it.
    """

    def __init__(
        self,
        rate: float | None = None,
        max_concurrent: int | None = None,
        *,
        burst: float = 1.0,
        min_rate: float = 0.2,
        decrease_factor: float = 0.5,
        decrease_cooldown: float = 1.0,
        recovery_step: float | None = None,
        recovery_interval: float = 1.0,
        max_pause: float = 120.0,
    ) -> None:
        _check_number("rate", rate)
        _check_number("min_rate", min_rate, allow_none=False)
        _check_number("decrease_cooldown", decrease_cooldown, allow_none=False)
        _check_number("recovery_step", recovery_step)
        _check_number("recovery_interval", recovery_interval, allow_none=False)
        _check_number("max_pause", max_pause, allow_none=False)
        _check_number("burst", burst, at_least=1.0, allow_none=False)
        _check_number("decrease_factor", decrease_factor, allow_none=False)
        if not decrease_factor < 1:
            raise ConfigurationError(f"decrease_factor must be in (0, 1), got {decrease_factor!r}")
        concurrent: object = max_concurrent
        if concurrent is not None and (
            isinstance(concurrent, bool) or not isinstance(concurrent, int) or concurrent < 1
        ):
            raise ConfigurationError(f"max_concurrent must be an int >= 1, got {max_concurrent!r}")
        self.rate = None if rate is None else float(rate)
        self.max_concurrent = max_concurrent
        self.burst = float(burst)
        self.min_rate = (
            min(float(min_rate), self.rate) if self.rate is not None else float(min_rate)
        )
        self.decrease_factor = float(decrease_factor)
        self.decrease_cooldown = float(decrease_cooldown)
        self.recovery_step = None if recovery_step is None else float(recovery_step)
        self.recovery_interval = float(recovery_interval)
        self.max_pause = float(max_pause)

        self._current: float | None = self.rate
        self._bucket: AsyncLimiter | None = self._make_bucket(self.rate)
        #: Without a configured rate: the rate to recover to before letting go again.
        self._target: float | None = self.rate
        self._semaphore = asyncio.Semaphore(max_concurrent) if max_concurrent else None
        self._paused_until = -math.inf
        self._last_decrease = -math.inf
        self._last_change = -math.inf
        self._sent_times: collections.deque[float] = collections.deque()
        self._in_flight = 0
        self._requests_sent = 0
        self._rate_limited = 0

    def __repr__(self) -> str:
        rate = "unlimited" if self._current is None else f"{self._current:g}/s"
        return (
            f"<RequestLimiter rate={rate} (configured {self.rate}) "
            f"in_flight={self._in_flight} max_concurrent={self.max_concurrent}>"
        )

    # -- read-only statistics ----------------------------------------------------------

    @property
    def current_rate(self) -> float | None:
        """The requests per second allowed now (``None``: no cap)."""
        return self._current

    @property
    def in_flight(self) -> int:
        """Requests between leaving :meth:`slot`'s entry and its exit."""
        return self._in_flight

    @property
    def requests_sent(self) -> int:
        """Requests let through since the limiter was made."""
        return self._requests_sent

    @property
    def rate_limited(self) -> int:
        """How many 429 answers were reported."""
        return self._rate_limited

    @property
    def paused_for(self) -> float:
        """Seconds until the current ``Retry-After`` pause ends (0 when not paused)."""
        return max(0.0, self._paused_until - self._now())

    @property
    def requests_per_second(self) -> float:
        """Requests let through during the last second."""
        self._prune(self._now())
        return len(self._sent_times) / _RATE_WINDOW

    # -- the gate ----------------------------------------------------------------------

    def slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Wait for a free slot, a token and the end of any pause; hold it for one request.

        Use it as ``async with limiter.slot():`` around the request. (A small class
        rather than :func:`contextlib.asynccontextmanager`: this runs once per HTTP
        request, and the generator machinery cost more than the rest of the gate.)
        """
        return _Slot(self)

    async def _enter(self) -> asyncio.Semaphore | None:
        """Pass the gate; returns the semaphore held, for :meth:`_exit` to release."""
        semaphore = self._semaphore
        if semaphore is not None:
            await semaphore.acquire()
        try:
            await self._wait_turn()
            now = self._now()
            self._sent_times.append(now)
            self._prune(now)
        except BaseException:
            if semaphore is not None:
                semaphore.release()
            raise
        self._in_flight += 1
        self._requests_sent += 1
        return semaphore

    def _exit(self, semaphore: asyncio.Semaphore | None) -> None:
        self._in_flight -= 1
        if semaphore is not None:
            semaphore.release()

    async def _wait_turn(self) -> None:
        while True:
            delay = self._paused_until - self._now()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            bucket = self._bucket
            if bucket is None:
                return
            await bucket.acquire()
            # A token from a bucket that was swapped out (the rate changed) or taken
            # before a pause began does not count: queue again under the new rules.
            if bucket is self._bucket and self._paused_until <= self._now():
                return

    # -- feedback ----------------------------------------------------------------------

    def on_rate_limited(self, retry_after: float | None = None) -> None:
        """A request got 429: pause everyone for ``retry_after`` seconds, and slow down."""
        now = self._now()
        self._rate_limited += 1
        if retry_after is not None and retry_after > 0:
            self._paused_until = max(self._paused_until, now + min(retry_after, self.max_pause))
        if now - self._last_decrease < self.decrease_cooldown:
            return
        self._last_decrease = now
        if self._current is None:
            observed = self.requests_per_second
            self._target = max(observed, self.min_rate)
            new_rate = max(self.min_rate, observed * self.decrease_factor)
        else:
            new_rate = max(self.min_rate, self._current * self.decrease_factor)
        self._set_rate(new_rate, now)

    def on_success(self) -> None:
        """A request got an answer other than 429: creep back toward the configured rate."""
        current, target = self._current, self._target
        if current is None or target is None or current >= target:
            return
        now = self._now()
        if now - self._last_change < self.recovery_interval or now < self._paused_until:
            return
        step = self.recovery_step if self.recovery_step is not None else target / 10
        new_rate = min(target, current + step)
        if new_rate >= target and self.rate is None:
            # Recovered to where the first 429 hit, without a cap of our own: let go.
            self._target = None
            self._set_rate(None, now)
        else:
            self._set_rate(new_rate, now)

    # -- internals ---------------------------------------------------------------------

    def _set_rate(self, rate: float | None, now: float) -> None:
        self._current = rate
        self._last_change = now
        self._bucket = self._make_bucket(rate)

    def _make_bucket(self, rate: float | None) -> AsyncLimiter | None:
        if rate is None:
            return None
        # Imported here: a client without a rate never needs a bucket, and aiolimiter's
        # import costs more than the rest of this module.
        from aiolimiter import AsyncLimiter  # noqa: PLC0415

        # ``burst`` tokens leak out at ``rate`` per second: ``burst / rate`` seconds per burst.
        return AsyncLimiter(self.burst, self.burst / rate)

    def _prune(self, now: float) -> None:
        times = self._sent_times
        while times and times[0] <= now - _RATE_WINDOW:
            times.popleft()

    @staticmethod
    def _now() -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            # Statistics read outside a loop: asyncio's loops tell time.monotonic().
            return time.monotonic()


class _Slot:
    """One pass through a :class:`RequestLimiter`: entered before a request, left after it."""

    __slots__ = ("_held", "_limiter")

    def __init__(self, limiter: RequestLimiter) -> None:
        self._limiter = limiter
        self._held: asyncio.Semaphore | None = None

    async def __aenter__(self) -> None:
        self._held = await self._limiter._enter()

    async def __aexit__(self, *exc_info: object) -> None:
        self._limiter._exit(self._held)
