"""The task lifecycle table: terminal statuses, legal moves, and the wire's status strings."""

from __future__ import annotations

import itertools

import pytest
from spo_async._state import (
    LEGAL_MOVES,
    TERMINAL_STATUSES,
    TaskStatus,
    is_legal_move,
    status_from_wire,
)

Q, P, S, F, U = (
    TaskStatus.QUEUE,
    TaskStatus.PROCESSING,
    TaskStatus.SUCCESS,
    TaskStatus.FAIL,
    TaskStatus.UNKNOWN,
)

#: The lifecycle written out by hand, independently of LEGAL_MOVES: queue -> processing ->
#: success | fail, with unknown allowed in and out of any non-terminal status.
EXPECTED_LEGAL = {
    (Q, Q), (Q, P), (Q, S), (Q, F), (Q, U),
    (P, P), (P, S), (P, F), (P, U),
    (U, Q), (U, P), (U, S), (U, F), (U, U),
    (S, S),
    (F, F),
}  # fmt: skip


def test_terminal_statuses_are_success_and_fail() -> None:
    """Only success and fail are terminal; unknown is not."""
    assert {S, F} == TERMINAL_STATUSES
    assert [s for s in TaskStatus if s.is_terminal] == [S, F]


@pytest.mark.parametrize(
    ("before", "after"),
    list(itertools.product(TaskStatus, repeat=2)),
    ids=[f"{a}->{b}" for a, b in itertools.product(TaskStatus, repeat=2)],
)
def test_every_move_is_legal_exactly_when_the_lifecycle_allows_it(
    before: TaskStatus, after: TaskStatus
) -> None:
    """is_legal_move agrees with the hand-written lifecycle for every pair of statuses."""
    assert is_legal_move(before, after) is ((before, after) in EXPECTED_LEGAL)


def test_every_status_has_a_row_in_the_table() -> None:
    """LEGAL_MOVES has one row per status, and every status may stay where it is."""
    assert set(LEGAL_MOVES) == set(TaskStatus)
    assert all(s in LEGAL_MOVES[s] for s in TaskStatus)


def test_terminal_statuses_never_move() -> None:
    """A finished task can only be seen finished the same way again."""
    for status in TERMINAL_STATUSES:
        assert LEGAL_MOVES[status] == {status}


WIRE = [
    ("queue", Q),
    ("processing", P),
    ("success", S),
    ("fail", F),
    ("apikeyFail", U),
    ("paused", U),
    ("unknown", U),
    ("", U),
    ("SUCCESS", U),
    (" success", U),
]


@pytest.mark.parametrize(("raw", "status"), WIRE, ids=[repr(w[0]) for w in WIRE])
def test_status_from_wire_maps_known_strings_and_falls_back_to_unknown(
    raw: str, status: TaskStatus
) -> None:
    """The four documented strings map to themselves; anything else is UNKNOWN."""
    assert status_from_wire(raw) is status
