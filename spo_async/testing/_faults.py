"""Scriptable fault injection: the ways a real gateway or a buggy server can misbehave.

A client is only as good as its handling of bad days: 429s with ``Retry-After``, HTML
pages from a 502-ing gateway, connections dropped before or after the work was done,
slow answers, truncated or mistyped JSON, statuses nobody documented, tasks that seem to
go backwards. Each of those is a :class:`FaultKind`; a :class:`Fault` says which one,
on which endpoint, how often and how many times. A :class:`FaultPlan` holds the faults,
picks the one (if any) that fires for each request with a seeded RNG, so a flaky run
is reproducible, and counts what fired.

The functions here are pure: they decide and they rewrite bodies. The emulator does the
I/O (closing the socket, sleeping, sending the reply).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import enum
import json
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, Literal

import attrs

from spo_async.testing._wire import envelope, html_page, localized_body

__all__ = ["Endpoint", "Fault", "FaultKind", "FaultPlan", "Reply", "fault_reply", "mutate"]

Endpoint = Literal["submit", "task", "any"]
"""Where a fault applies: the submit endpoint, the task query endpoint, or both."""

DEFAULT_HUGE_SIZE = 8 * 1024 * 1024


class FaultKind(enum.Enum):
    """Every kind of misbehaviour the emulator can inject."""

    STATUS = "status"
    """Answer with ``Fault.status``, ``Fault.body`` and ``Fault.headers`` instead."""
    RATE_LIMIT = "rate_limit"
    """Answer 429 with ``Retry-After: Fault.retry_after`` (seconds or an HTTP date)."""
    SERVER_ERROR_HTML = "server_error_html"
    """Answer 5xx (502 by default) with a gateway's ``text/html`` error page."""
    DROP_BEFORE = "drop_before"
    """Close the connection before doing anything: no task is created."""
    DROP_AFTER = "drop_after"
    """Do the work (a submit creates its task), then close the connection unanswered."""
    DELAY = "delay"
    """Wait ``Fault.delay`` real seconds, then answer normally."""
    TRUNCATED_JSON = "truncated_json"
    """Do the work and answer with the body cut in half."""
    WRONG_TYPES = "wrong_types"
    """Answer 200 with fields of the wrong JSON types (``"round": "one"``, ``status: 5``)."""
    UNKNOWN_STATUS = "unknown_status"
    """Report ``Fault.unknown_status`` (``"paused"``) as the task's status."""
    EXTRA_FIELDS = "extra_fields"
    """Add unknown keys at the top level and in every round (``tokens``, ``time``)."""
    HUGE_FIELD = "huge_field"
    """Add a ``trace`` field of ``Fault.size`` bytes (8 MiB by default)."""
    REGRESS = "regress"
    """Report the task as ``processing`` with one round fewer than it has."""
    DUPLICATE_ROUNDS = "duplicate_rounds"
    """Report the last round twice."""
    REORDER_ROUNDS = "reorder_rounds"
    """Report the rounds in descending order."""
    EMPTY_BODY = "empty_body"
    """Do the work and answer with an empty body (status 200 unless ``Fault.status``)."""
    ERROR_ENVELOPE = "error_envelope"
    """Answer ``Fault.status`` (500) with the 302 envelope for ``Fault.err_code``."""


_TASK_ONLY = frozenset(
    {
        FaultKind.UNKNOWN_STATUS,
        FaultKind.REGRESS,
        FaultKind.DUPLICATE_ROUNDS,
        FaultKind.REORDER_ROUNDS,
    }
)
_REPLACING = frozenset(
    {FaultKind.STATUS, FaultKind.RATE_LIMIT, FaultKind.SERVER_ERROR_HTML, FaultKind.ERROR_ENVELOPE}
)
_DEFAULT_STATUS = {
    FaultKind.STATUS: 500,
    FaultKind.RATE_LIMIT: 429,
    FaultKind.SERVER_ERROR_HTML: 502,
    FaultKind.ERROR_ENVELOPE: 500,
}


def _header_pairs(
    value: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[tuple[str, str], ...]:
    """Normalize headers given as a mapping or as pairs into a hashable tuple of pairs."""
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((str(k), str(v)) for k, v in items)


def _check_probability(_: object, __: attrs.Attribute[float], value: float) -> None:
    """Reject a probability outside [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"probability must be within [0, 1], got {value!r}")


def _check_times(_: object, __: attrs.Attribute[int | None], value: int | None) -> None:
    """Reject a negative firing budget."""
    if value is not None and value < 0:
        raise ValueError(f"times must be None or >= 0, got {value!r}")


@attrs.frozen
class Fault:
    """One scripted misbehaviour: what happens, where, how likely and how many times.

    Attributes:
        kind: what goes wrong.
        endpoint: ``"submit"``, ``"task"`` or ``"any"``. Kinds that only make sense for a
            task body (``UNKNOWN_STATUS``, ``REGRESS``, ``*_ROUNDS``) never fire on submit.
        probability: the chance it fires on a matching request, drawn from the seeded RNG.
        times: how many times it may fire; ``None`` is unlimited.
        status: the HTTP status of the reply; each kind has a sensible default.
        retry_after: ``Retry-After`` for ``RATE_LIMIT`` (and ``STATUS`` if set): seconds,
            an HTTP-date string or a :class:`datetime.datetime`.
        delay: real seconds ``DELAY`` waits.
        body: the body ``STATUS`` sends; ``None`` sends an HTML page for a 5xx and the
            reason phrase otherwise.
        headers: extra response headers for the replacing kinds.
        err_code: the envelope's ``err_code`` for ``ERROR_ENVELOPE``.
        size: the size in bytes of ``HUGE_FIELD``'s field.
        unknown_status: the status ``UNKNOWN_STATUS`` reports.
        task_id: fire only on queries for this task id.
        after_work: for the replacing kinds, do the work first (a submit creates its
            task) and then answer with the fault, like a gateway timing out late.
    """

    kind: FaultKind
    endpoint: Endpoint = "any"
    probability: float = attrs.field(default=1.0, validator=_check_probability)
    times: int | None = attrs.field(default=None, validator=_check_times)
    status: int | None = None
    retry_after: str | float | dt.datetime | None = None
    delay: float = 1.0
    body: str | bytes | None = None
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_header_pairs)
    err_code: int = -10003
    size: int = DEFAULT_HUGE_SIZE
    unknown_status: str = "paused"
    task_id: str | None = None
    after_work: bool = False

    def applies_to(self, endpoint: str, task_id: str | None) -> bool:
        """Return whether this fault may fire on a request to ``endpoint`` (for ``task_id``)."""
        if self.endpoint not in ("any", endpoint):
            return False
        if endpoint == "submit":
            return self.kind not in _TASK_ONLY and self.task_id is None
        return self.task_id is None or self.task_id == task_id

    @property
    def replaces_reply(self) -> bool:
        """Whether the fault sends its own reply instead of the normal one."""
        return self.kind in _REPLACING

    @property
    def http_status(self) -> int:
        """The HTTP status this fault's reply carries."""
        if self.status is not None:
            return self.status
        return _DEFAULT_STATUS.get(self.kind, 200)

    def retry_after_value(self) -> str | None:
        """Return the ``Retry-After`` header value, formatted, or ``None`` for no header."""
        value = self.retry_after
        if value is None:
            return "1" if self.kind is FaultKind.RATE_LIMIT else None
        if isinstance(value, dt.datetime):
            return email.utils.format_datetime(value.astimezone(dt.UTC), usegmt=True)
        if isinstance(value, str):
            return value
        return f"{value:g}"


@attrs.define
class _Armed:
    """A fault in a plan, with how many more times it may fire (``None``: unlimited)."""

    fault: Fault
    remaining: int | None


class FaultPlan:
    """The active faults, the seeded RNG that decides when they fire, and the tally.

    Faults are tried in the order they were added; the first one that matches the
    request, has budget left and wins its probability draw fires. A fault counts as
    fired when it is chosen, in :attr:`fired` (by kind) and :attr:`fired_at` (by
    endpoint and kind).
    """

    def __init__(self, faults: Iterable[Fault] = (), *, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._faults: list[_Armed] = []
        self.fired: Counter[FaultKind] = Counter()
        self.fired_at: Counter[tuple[str, FaultKind]] = Counter()
        for fault in faults:
            self.add(fault)

    def __bool__(self) -> bool:
        """Whether any fault may still fire, so a quiet plan costs one truth test."""
        return bool(self._faults)

    @property
    def faults(self) -> tuple[Fault, ...]:
        """The faults that may still fire, in the order they are tried."""
        return tuple(armed.fault for armed in self._faults)

    def add(self, fault: Fault) -> None:
        """Arm ``fault`` after the ones already armed."""
        if fault.times != 0:
            self._faults.append(_Armed(fault, fault.times))

    def clear(self) -> None:
        """Disarm every fault; the tally of what fired is kept."""
        self._faults.clear()

    def reset_counts(self) -> None:
        """Forget what fired."""
        self.fired.clear()
        self.fired_at.clear()

    def pick(self, endpoint: str, task_id: str | None = None) -> Fault | None:
        """Return the fault that fires for this request, if any, and use up its budget."""
        for armed in self._faults:
            fault = armed.fault
            if not fault.applies_to(endpoint, task_id):
                continue
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                continue
            if armed.remaining is not None:
                armed.remaining -= 1
                if armed.remaining == 0:
                    self._faults.remove(armed)
            self.fired[fault.kind] += 1
            self.fired_at[endpoint, fault.kind] += 1
            return fault
        return None


@attrs.frozen
class Reply:
    """An HTTP reply before it becomes an aiohttp response: what a handler or a fault sends."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def _content_type(body: bytes) -> str:
    """Guess the content type of a scripted body from its first character."""
    head = body.lstrip()[:1]
    if head == b"<":
        return "text/html"
    if head in (b"{", b"["):
        return "application/json"
    return "text/plain"


def fault_reply(fault: Fault) -> Reply:
    """Return the reply of a fault that replaces the normal one (``fault.replaces_reply``)."""
    status = fault.http_status
    headers = fault.headers
    retry_after = fault.retry_after_value()
    if retry_after is not None:
        headers = (*headers, ("Retry-After", retry_after))
    if fault.kind is FaultKind.RATE_LIMIT:
        return Reply(status, localized_body("rate_limit"), headers=headers)
    if fault.kind is FaultKind.SERVER_ERROR_HTML:
        return Reply(status, html_page(status), "text/html", headers)
    if fault.kind is FaultKind.ERROR_ENVELOPE:
        return Reply(status, envelope(fault.err_code), headers=headers)
    body = fault.body
    if body is None:
        data = html_page(status) if status >= 500 else _reason(status).encode()
    else:
        data = body.encode() if isinstance(body, str) else body
    return Reply(status, data, _content_type(data), headers)


def _reason(status: int) -> str:
    """Return the reason phrase of an HTTP status, or a generic one."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _best_of(rounds: list[Any]) -> tuple[Any, Any]:
    """Return ``(best_prompt, best_round)`` of the last successful round in ``rounds``."""
    for item in reversed(rounds):
        if item.get("success"):
            return item.get("prompt"), item.get("round")
    return None, None


def _mutate_json(fault: Fault, data: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """Rewrite a decoded 200 body according to a body-shaping fault."""
    kind = fault.kind
    rounds = data.get("round_data_list")
    if kind is FaultKind.WRONG_TYPES:
        if endpoint == "submit":
            return {"task_id": 12345}
        wrong = {"round": "one", "prompt": 42, "success": "yes", "sample": "none"}
        return {
            "status": 5,
            "best_prompt": ["not", "a", "string"],
            "best_round": "two",
            "round_data_list": [wrong] + [dict(item, **wrong) for item in rounds or []],
            "error": 0,
        }
    if kind is FaultKind.EXTRA_FIELDS:
        data.update({"tokens": 1234, "time": 12.5, "trace_id": "emulator-extra"})
        for item in rounds or []:
            item.update({"tokens": 321, "time": 3.25, "score": None})
    elif kind is FaultKind.HUGE_FIELD:
        data["trace"] = "x" * fault.size
    elif kind is FaultKind.UNKNOWN_STATUS:
        data["status"] = fault.unknown_status
    elif rounds:  # the round-list faults leave a task with no rounds as it is
        if kind is FaultKind.REGRESS:
            del rounds[-1]
            data["status"] = "processing"
            data["best_prompt"], data["best_round"] = _best_of(rounds)
        elif kind is FaultKind.DUPLICATE_ROUNDS:
            rounds.append(dict(rounds[-1]))
        else:  # REORDER_ROUNDS
            rounds.reverse()
    return data


def mutate(fault: Fault, status: int, body: bytes, endpoint: str) -> Reply:
    """Return the reply a body-shaping fault makes out of the normal ``(status, body)``.

    ``TRUNCATED_JSON`` and ``EMPTY_BODY`` apply to any reply; the kinds that rewrite
    JSON fields apply only to a 200 whose body is a JSON object, and leave others alone.
    """
    kind = fault.kind
    if kind is FaultKind.TRUNCATED_JSON:
        return Reply(fault.status or status, body[: len(body) // 2])
    if kind is FaultKind.EMPTY_BODY:
        return Reply(fault.http_status, b"")
    if status == 200:
        data = json.loads(body)
        if isinstance(data, dict):
            body = json.dumps(_mutate_json(fault, data, endpoint), ensure_ascii=False).encode()
    return Reply(fault.status or status, body)
