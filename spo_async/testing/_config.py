"""How an emulator is set up: keys, models, pace, faults, outcomes, and a clock to drive.

Everything a test may want to vary lives in one frozen :class:`EmulatorConfig`, so a
configuration can be shared, compared, ``attrs.evolve``-d and passed through a pytest
fixture. :class:`ManualClock` replaces the real clock when a test wants to step a task
through its lifecycle by hand instead of waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from spo_async.testing._faults import Fault
from spo_async.testing._tasks import SimulationSettings, TaskOutcome

__all__ = ["DEFAULT_API_KEY", "EmulatorConfig", "ManualClock"]

DEFAULT_API_KEY = "sk-spo-emulator"
"""The API key every emulator accepts unless ``EmulatorConfig.api_keys`` says otherwise."""


class ManualClock:
    """A clock that moves only when told to, for stepping tasks through time in tests.

    Pass it as ``EmulatorConfig(clock=clock)``; then ``clock.advance(1.5)`` moves every
    task 1.5 simulated seconds on. Safe to advance from one thread while the emulator
    reads it from another.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """Return the current simulated time in seconds."""
        return self._now

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"

    def advance_to(self, when: float) -> float:
        """Move time forward to exactly ``when`` (not backwards) and return it."""
        with self._lock:
            if when < self._now:
                raise ValueError(f"a clock cannot go backwards (from {self._now!r} to {when!r})")
            self._now = float(when)
            return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (not backwards) and return the new time."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance by {seconds!r})")
        with self._lock:
            self._now += seconds
            return self._now


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    """Reject a non-positive value."""
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _not_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    """Reject a negative value."""
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    """Reject a value that is neither ``None`` nor a finite number > 0."""
    if value is not None and not 0 < value < float("inf"):
        raise ValueError(f"{attribute.name} must be None or a finite number > 0, got {value!r}")


def _fraction(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    """Reject a value outside [0, 1]."""
    if not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be within [0, 1], got {value!r}")


def _strings(values: Iterable[str]) -> frozenset[str]:
    """Accept any iterable of strings (a set literal, a list) as a frozenset."""
    return frozenset(values)


def _optional_strings(values: Iterable[str] | None) -> frozenset[str] | None:
    """Accept ``None`` (no restriction) or any iterable of strings as a frozenset."""
    if isinstance(values, str):
        raise TypeError(f"expected a collection of strings, got the string {values!r}")
    return None if values is None else frozenset(values)


def _fault_tuple(faults: Iterable[Fault]) -> tuple[Fault, ...]:
    """Accept any iterable of faults as a tuple."""
    return tuple(faults)


@attrs.frozen(kw_only=True)
class EmulatorConfig:
    """Everything that shapes an emulator's behaviour; every field has a usable default.

    Attributes:
        host, port: where to listen; port 0 picks a free port.
        api_keys: keys accepted as ``Authorization: Bearer <key>``.
        insufficient_balance_keys: keys that authenticate but whose submits get -10004
            with HTTP 402 (they need not be repeated in ``api_keys``).
        models: the model ids a submit may name; any other is refused with -10008 and
            HTTP 503, as the service refuses a model it does not know. ``None`` (the
            default) accepts every model, since the service offers far more than any
            list here would keep up with.
        max_rounds_limit: the largest ``max_rounds`` accepted (no limit is documented;
            this one keeps a typo from planning a billion rounds).
        max_body_bytes: the largest request body; a bigger one gets 413 with -10011.
        not_found_status: the HTTP status of an unknown task id (with -10010).
        queue_seconds: time each task spends in ``queue``.
        round_seconds: duration of each round; round 1 takes ``first_round_fraction`` of
            it, since it only runs the prompt (no optimize or judge calls).
        jitter: relative spread of every duration (``0.3`` = ±30 %), from the seeded RNG.
        time_scale: multiplies every duration (``0.01`` runs a hundred times faster).
        win_probability: chance that one judge prefers the new round; a round needs 3 of
            4 votes, so the default 0.5 makes about 31 % of rounds succeed.
        expose_best_while_processing: report ``best_prompt``/``best_round`` before the
            end (the real behaviour is unverified).
        show_running_round: report the running round with an empty ``sample`` list.
        seed: seeds task contents, task ids, jitter and fault draws.
        task_id_nonce: mixed into every task id. ``None`` (the default) draws a random
            one per emulator, so ids never repeat across emulators or processes (a
            journal resumed against a new emulator cannot meet an old id); a fixed
            string makes the ids a function of ``seed``, the nonce and the submit order.
        clock: the time source of the simulation (not of ``DELAY`` faults or sockets).
        faults: faults armed when the emulator is created.
        outcome_for: called with each accepted submit body; a :class:`TaskOutcome` it
            returns scripts that task (scripted outcomes from ``script_next`` win).
        record_requests: keep :attr:`Emulator.request_log`; turn off for long benchmarks.
        log_requests: log one INFO line per request on the ``spo_async.testing``
            logger: method, path, status, time taken, task id, fault, and whether an
            ``Authorization`` header came (never its value).
        shutdown_timeout: seconds ``close()`` waits for requests still being answered.
        quota_per_second: the requests per second each API key may send, submits and
            queries together (``None``: no quota); past it the emulator answers 429 with
            ``Retry-After``, as a gateway would (a moving window, see
            :class:`~spo_async.testing._quota.QuotaGate`). Runs on ``clock``.
        quota_window: the window, in seconds, over which ``quota_per_second`` is counted:
            at most ``quota_per_second * quota_window`` requests in any such span.
    """

    host: str = "127.0.0.1"
    port: int = 0
    api_keys: frozenset[str] = attrs.field(default=frozenset({DEFAULT_API_KEY}), converter=_strings)
    insufficient_balance_keys: frozenset[str] = attrs.field(default=frozenset(), converter=_strings)
    models: frozenset[str] | None = attrs.field(default=None, converter=_optional_strings)
    max_rounds_limit: int = attrs.field(default=1000, validator=_positive)
    max_body_bytes: int = attrs.field(default=4 * 1024 * 1024, validator=_positive)
    not_found_status: int = 404
    queue_seconds: float = attrs.field(default=0.0, validator=_not_negative)
    round_seconds: float = attrs.field(default=0.05, validator=_not_negative)
    first_round_fraction: float = attrs.field(default=1 / 3, validator=_fraction)
    jitter: float = attrs.field(default=0.0, validator=_fraction)
    time_scale: float = attrs.field(default=1.0, validator=_not_negative)
    win_probability: float = attrs.field(default=0.5, validator=_fraction)
    expose_best_while_processing: bool = True
    show_running_round: bool = False
    seed: int = 0
    task_id_nonce: str | None = None
    clock: Callable[[], float] = time.monotonic
    faults: tuple[Fault, ...] = attrs.field(default=(), converter=_fault_tuple)
    outcome_for: Callable[[Mapping[str, Any]], TaskOutcome | None] | None = None
    record_requests: bool = True
    log_requests: bool = False
    shutdown_timeout: float = attrs.field(default=1.0, validator=_not_negative)
    quota_per_second: float | None = attrs.field(default=None, validator=_positive_or_none)
    quota_window: float = attrs.field(default=1.0, validator=_positive)

    def simulation_settings(self) -> SimulationSettings:
        """Return the part of the config every simulated task needs."""
        return SimulationSettings(
            queue_seconds=self.queue_seconds,
            round_seconds=self.round_seconds,
            first_round_fraction=self.first_round_fraction,
            jitter=self.jitter,
            time_scale=self.time_scale,
            win_probability=self.win_probability,
            expose_best_while_processing=self.expose_best_while_processing,
            show_running_round=self.show_running_round,
        )
