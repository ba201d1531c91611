"""Hostile answers: whatever the service (or a gateway) sends, the parsers return a model or
raise a typed SPOError, never KeyError, TypeError, ValueError, JSONDecodeError or cattrs errors.
"""

from __future__ import annotations

import copy
import email.utils
import json
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from spo_async import APIError, RequestValidationError, SPOError, TaskResult, TaskStatus
from spo_async._convert import task_from_wire, task_to_wire
from spo_async._sansio import (
    HTTPResponse,
    error_from_response,
    parse_retry_after,
    parse_submit_response,
    parse_task_response,
)

HOSTILE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KNOWN_STATUSES = ["queue", "processing", "success", "fail"]
TASK_KEYS = {
    "task_id",
    "status",
    "best_prompt",
    "best_round",
    "round_data_list",
    "error",
    "max_rounds",
}
ROUND_KEYS = {"round", "prompt", "sample", "success"}
SAMPLE_KEYS = {"question", "answer"}

# -- strategies --------------------------------------------------------------------------------

short_text = st.text(max_size=8)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities included: Python's json writes and reads them
    | short_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(short_text, children, max_size=3)
    ),
    max_leaves=8,
)
#: JSON values that equal themselves (no NaN), for round trips.
clean_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False)
    | short_text,
    lambda children: (
        st.lists(children, max_size=2) | st.dictionaries(short_text, children, max_size=2)
    ),
    max_leaves=3,
)


def extras(known: set[str], max_size: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    """Unknown keys: never a known one (a trailing "+" keeps them apart without a filter)."""
    keys = st.sampled_from(sorted(known)).map(lambda k: k + "+") | short_text.map(lambda k: k + "+")
    return st.dictionaries(keys, clean_json_values, max_size=max_size)


@st.composite
def wire_samples(draw: st.DrawFn) -> dict[str, Any]:
    return {
        **draw(extras(SAMPLE_KEYS, 1)),
        "question": draw(short_text),
        "answer": draw(short_text),
    }


@st.composite
def wire_rounds(draw: st.DrawFn, number: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        **draw(extras(ROUND_KEYS, 1)),
        "round": number,
        "prompt": draw(short_text),
    }
    if draw(st.booleans()):
        body["success"] = draw(st.booleans())
    sample = draw(st.none() | st.lists(wire_samples(), max_size=2) | st.just(Ellipsis))
    if sample is not Ellipsis:
        body["sample"] = sample
    return body


ABSENT = object()

error_values = (
    st.just(ABSENT)
    | st.none()
    | st.sampled_from(["", {}, 0, False, []])
    | short_text
    | st.fixed_dictionaries(
        {},
        optional={
            "err_code": st.integers(-20000, 0) | clean_json_values,
            "message": short_text | clean_json_values,
        },
    )
    | clean_json_values
)


@st.composite
def valid_task_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A task answer that keeps the contract, with random optional parts and unknown keys."""
    body: dict[str, Any] = dict(draw(extras(TASK_KEYS)))
    body["status"] = draw(st.sampled_from(KNOWN_STATUSES) | short_text)
    numbers = draw(st.lists(st.integers(min_value=1, max_value=120), unique=True, max_size=4))
    rounds = [draw(wire_rounds(n)) for n in numbers]
    if draw(st.booleans()) and rounds:
        rounds.append(copy.deepcopy(draw(st.sampled_from(rounds))))  # an exact repeat
    choice = draw(st.sampled_from(["list", "null", "absent"]))
    if choice == "list":
        body["round_data_list"] = rounds
    elif choice == "null":
        body["round_data_list"] = None
    for key, values in (
        ("best_prompt", st.none() | short_text),
        ("best_round", st.none() | st.integers(min_value=1, max_value=120)),
        ("error", error_values),
    ):
        value = draw(st.just(ABSENT) | values)
        if value is not ABSENT:
            body[key] = value
    if body["status"] == "success":
        # A success keeps the contract only with a best prompt (sent, or from a successful
        # round) and a best_round among the rounds listed.
        listed = {r["round"] for r in rounds} if choice == "list" else set()
        if body.get("best_round") not in listed | {None}:
            del body["best_round"]
        if body.get("best_prompt") is None and not any(
            r.get("success") for r in (rounds if choice == "list" else [])
        ):
            body["best_prompt"] = draw(short_text)
    return body


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place inside a JSON value, the value itself included."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, (*prefix, index))


@st.composite
def mutated_task_bodies(draw: st.DrawFn) -> Any:
    """A valid task answer with one to three places replaced by random JSON or removed."""
    body: Any = draw(valid_task_bodies())
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(list(paths(body))))
        if not path:
            body = draw(json_values)
            continue
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()):
            parent[path[-1]] = draw(json_values)
        else:
            del parent[path[-1]]
    return body


def to_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


envelopes = st.fixed_dictionaries(
    {},
    optional={
        "err_code": st.sampled_from([-10001, -10003, -10008, -10010, -1024, -99]) | json_values,
        "message": json_values,
        "message_cn": json_values,
        "message_jp": json_values,
        "type": json_values,
    },
).map(lambda error: {"error": error})

bodies = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [b"", b"<html><h1>502 Bad Gateway</h1></html>", b"\xff\xfe\x00", b"[" * 5000, b"{" * 3000]
    ),
    json_values.map(to_bytes),
    envelopes.map(to_bytes),
    mutated_task_bodies().map(to_bytes),
    valid_task_bodies().map(to_bytes),
    st.fixed_dictionaries({"task_id": json_values}).map(to_bytes),
    mutated_task_bodies().map(to_bytes).map(lambda b: b[: len(b) // 2]),  # truncated
)

retry_after_values = st.one_of(
    st.text(max_size=30),
    st.floats().map(str),
    st.integers().map(str),
    st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
    ).map(lambda d: email.utils.format_datetime(d, usegmt=True)),
    st.sampled_from(["Mon, 01 Jan 2000 00:00:00 +9999", "Mon, 32 Jan 2000 00:00:00 GMT", "\x00"]),
)
headers = st.dictionaries(
    st.sampled_from(["retry-after", "content-type", "Retry-After"]) | short_text,
    short_text,
    max_size=3,
) | st.builds(
    lambda v, h: {**h, "retry-after": v},
    retry_after_values,
    st.dictionaries(short_text, short_text, max_size=2),
)

responses = st.builds(
    HTTPResponse,
    # Every status may come; 2xx ones are drawn more often so that bodies get parsed.
    status=st.sampled_from([200, 201, 204]) | st.integers(min_value=100, max_value=599),
    headers=headers,
    body=bodies,
)
clocks = st.floats(min_value=0.0, max_value=4e9)

# -- properties --------------------------------------------------------------------------------


def outcome(call: Callable[[], object]) -> object:
    """Run ``call``; return its value or the SPOError it raised (anything else fails the test)."""
    try:
        return call()
    except SPOError as exc:
        caught = exc
    assert not isinstance(caught, RequestValidationError), caught
    str(caught)
    repr(caught)
    return caught


def check_task_result(result: TaskResult, task_id: str) -> None:
    assert result.task_id == task_id
    numbers = [r.number for r in result.rounds]
    assert numbers == sorted(set(numbers))
    assert (result.error is None) or result.status is TaskStatus.FAIL
    if result.raw_status not in KNOWN_STATUSES and result.error is None:
        assert result.status is TaskStatus.UNKNOWN
    json.dumps(task_to_wire(result))


def check_task_outcome(
    got: object, response: HTTPResponse, max_rounds: int | None, strict: bool
) -> None:
    if isinstance(got, TaskResult):
        assert 200 <= response.status < 300
        check_task_result(got, "task-1")
        assert got.max_rounds == max_rounds or max_rounds is None
        if strict:
            assert got.status is not TaskStatus.UNKNOWN
    else:
        assert isinstance(got, SPOError)


def check_submit_outcome(got: object, response: HTTPResponse) -> None:
    if isinstance(got, str):
        assert got
        assert 200 <= response.status < 300
    else:
        assert isinstance(got, SPOError)


def check_error(error: APIError, response: HTTPResponse) -> None:
    assert isinstance(error, APIError)
    assert error.status == response.status
    assert error.err_code is None or type(error.err_code) is int
    assert all(error.messages.values())
    assert error.retry_after is None or (
        math.isfinite(error.retry_after) and error.retry_after >= 0
    )
    assert len(error.body) < 2100
    str(error)


@HOSTILE
@given(
    response=responses,
    now=clocks,
    max_rounds=st.none() | st.integers(2, 100),
    strict=st.booleans(),
)
def test_any_answer_yields_a_model_or_a_typed_spo_error(
    response: HTTPResponse, now: float, max_rounds: int | None, strict: bool
) -> None:
    """Any status, headers and body: parse_task_response gives a TaskResult,
    parse_submit_response a task id, error_from_response an APIError; else an SPOError."""
    task = outcome(
        lambda: parse_task_response(
            response, "task-1", max_rounds=max_rounds, strict_status=strict, now=now
        )
    )
    event(f"task: {type(task).__name__}")
    check_task_outcome(task, response, max_rounds, strict)
    check_submit_outcome(outcome(lambda: parse_submit_response(response, now=now)), response)
    check_error(error_from_response(response, now=now), response)


@HOSTILE
@given(value=retry_after_values, now=clocks)
def test_parse_retry_after_is_none_or_a_finite_wait(value: str, now: float) -> None:
    """Any Retry-After text gives None or a finite, non-negative number of seconds."""
    seconds = parse_retry_after(value, now=now)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


@settings(HOSTILE, max_examples=200)
@given(body=valid_task_bodies(), max_rounds=st.none() | st.integers(2, 100))
def test_a_valid_task_body_parses_and_survives_a_round_trip(
    body: dict[str, Any], max_rounds: int | None
) -> None:
    """Every contract-keeping answer parses, and task_from_wire(task_to_wire(x)) == x."""
    result = parse_task_response(
        HTTPResponse(200, {}, to_bytes(body)), "t-7", max_rounds=max_rounds
    )
    check_task_result(result, "t-7")
    wire = task_to_wire(result)
    again = task_from_wire(json.loads(json.dumps(wire)), task_id=result.task_id)
    assert again == result
    assert again.extra == result.extra
    assert [r.extra for r in again.rounds] == [r.extra for r in result.rounds]
    assert task_to_wire(again) == wire
