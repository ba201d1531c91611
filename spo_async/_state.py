"""The task lifecycle as data: statuses, which are terminal, which moves are legal.

A task moves ``queue -> processing -> success | fail``. Everything that needs to
know whether a task is done, or whether a new snapshot contradicts the last one,
asks the tables here instead of writing its own ``if`` chain (h11's ``_state.py``
is the model).

Unknown statuses. The service may add a status tomorrow. A status string this
SDK does not know becomes :attr:`TaskStatus.UNKNOWN` (the raw string is kept in
``TaskResult.raw_status``). It is *not terminal*: waiting goes on, with a warning
in the log, until the task reaches a known terminal status or the deadline
passes. A client created with ``strict_status=True`` raises
:class:`~spo_async.ProtocolError` instead.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

__all__ = ["LEGAL_MOVES", "TERMINAL_STATUSES", "TaskStatus", "is_legal_move", "status_from_wire"]


class TaskStatus(enum.StrEnum):
    """Where a task is in its life, as the service reports it."""

    #: Accepted, not started yet.
    QUEUE = "queue"
    #: Rounds are running; ``rounds`` grows.
    PROCESSING = "processing"
    #: Finished; ``best_prompt`` holds the result.
    SUCCESS = "success"
    #: Finished without a result; ``error`` may say why.
    FAIL = "fail"
    #: A status string this SDK does not know (kept in ``raw_status``); not terminal.
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        """Whether a task in this status will never change again."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: frozenset[TaskStatus] = frozenset({TaskStatus.SUCCESS, TaskStatus.FAIL})

#: For each status, the statuses a later snapshot of the same task may report.
#: ``UNKNOWN`` can neither be judged nor judge: moves into and out of it are
#: allowed from any non-terminal status.
LEGAL_MOVES: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.QUEUE: frozenset(TaskStatus),
    TaskStatus.PROCESSING: frozenset(TaskStatus) - {TaskStatus.QUEUE},
    TaskStatus.UNKNOWN: frozenset(TaskStatus),
    TaskStatus.SUCCESS: frozenset({TaskStatus.SUCCESS}),
    TaskStatus.FAIL: frozenset({TaskStatus.FAIL}),
}

_BY_WIRE_NAME: Mapping[str, TaskStatus] = {
    s.value: s for s in TaskStatus if s is not TaskStatus.UNKNOWN
}


def status_from_wire(raw: str) -> TaskStatus:
    """Map the service's status string to a :class:`TaskStatus` (``UNKNOWN`` if new)."""
    return _BY_WIRE_NAME.get(raw, TaskStatus.UNKNOWN)


def is_legal_move(before: TaskStatus, after: TaskStatus) -> bool:
    """Whether a task seen in ``before`` may later be seen in ``after``."""
    return after in LEGAL_MOVES[before]
