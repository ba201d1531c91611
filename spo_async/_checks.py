"""Checks of the options a caller passes, made before anything is sent.

Every method checks all of its arguments first, so that a mistake costs an
exception and never a billed task (``optimize(request, timeout="600")`` used to
submit, then fail, losing the task id). A bad option raises
:class:`~spo_async.ConfigurationError`, which is also a ``ValueError``; what is
sent (requests, task ids, batch rows) is checked by the models and the wire
core, and raises :class:`~spo_async.RequestValidationError`.
"""

from __future__ import annotations

import math
from typing import TypeVar

from ._errors import ConfigurationError
from ._schedules import PollMode

__all__ = ["check_callable", "check_count", "check_flag", "check_poll_mode", "check_seconds"]

T = TypeVar("T")


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


def check_seconds(name: str, value: object, *, allow_none: bool = True) -> float | None:
    """A duration in seconds: a finite number >= 0 (``None`` for "no limit" when allowed)."""
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        none = " or None" if allow_none else ""
        raise ConfigurationError(
            f"{name} must be a finite number of seconds >= 0{none}, got {_describe(value)}"
        )
    return float(value)


def check_flag(name: str, value: object) -> bool:
    """A real ``bool``: ``raise_on_failure="no"`` is a mistake, not a truthy value."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, got {_describe(value)}")
    return value


def check_count(
    name: str, value: object, *, minimum: int = 1, allow_none: bool = False
) -> int | None:
    """A whole number >= ``minimum`` (``None`` when allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an int >= {minimum}, got {_describe(value)}")
    return value


def check_poll_mode(value: object) -> PollMode | None:
    """A :class:`PollMode` (or its value, ``"progress"`` or ``"completion"``), or ``None``."""
    if value is None or isinstance(value, PollMode):
        return value
    if isinstance(value, str) and value in {m.value for m in PollMode}:
        return PollMode(value)
    modes = " or ".join(repr(m.value) for m in PollMode)
    raise ConfigurationError(
        f"poll_mode must be a PollMode ({modes}) or None, got {_describe(value)}"
    )


def check_callable(name: str, value: T) -> T:
    """A callable, or ``None``."""
    if value is not None and not callable(value):
        raise ConfigurationError(f"{name} must be callable, got {_describe(value)}")
    return value
