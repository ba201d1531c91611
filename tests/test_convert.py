"""The converter: wire names, strict types, unknown keys kept, and the result-reading rules."""

from __future__ import annotations

import copy
from typing import Any

import cattrs
import pytest
from spo_async import FailureReason, OptimizationRequest, QAPair, Round, Sample, TaskStatus
from spo_async._convert import request_to_wire, task_from_wire, task_to_wire

CONTRACT_ERRORS = (cattrs.BaseValidationError, TypeError, ValueError)


def wire_round(number: int, *, success: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "round": number,
        "prompt": f"prompt {number}",
        "success": success,
        "sample": [{"question": "q", "answer": f"a{number}"}],
        **extra,
    }


def full_body() -> dict[str, Any]:
    return {
        "status": "processing",
        "best_prompt": "prompt 2",
        "best_round": 2,
        "round_data_list": [wire_round(1), wire_round(2), wire_round(3, success=False)],
        "error": None,
    }


# -- request_to_wire ---------------------------------------------------------------------------


def make_request(**changes: Any) -> OptimizationRequest:
    fields: dict[str, Any] = {
        "prompt": "p",
        "qa": [QAPair("q", "a"), QAPair("q2", "")],
        "model": "claude-3-5-sonnet-20240620",
    }
    fields.update(changes)
    return OptimizationRequest(**fields)


def test_request_to_wire_sends_every_field_and_leaves_out_unset_requirements() -> None:
    """The submit body holds the documented fields; requirements is absent when None."""
    assert request_to_wire(make_request()) == {
        "prompt": "p",
        "qa": [{"question": "q", "answer": "a"}, {"question": "q2", "answer": ""}],
        "model": "claude-3-5-sonnet-20240620",
        "max_rounds": 5,
        "language": "en",
        "temperature": 0.7,
    }


@pytest.mark.parametrize("requirements", ["", "reply in Chinese"], ids=["empty", "text"])
def test_request_to_wire_keeps_set_requirements_even_empty(requirements: str) -> None:
    """A requirements string the caller set is sent, even an empty one."""
    assert request_to_wire(make_request(requirements=requirements))["requirements"] == requirements


# -- task_from_wire: shapes --------------------------------------------------------------------


def test_minimal_body_is_a_status_alone() -> None:
    """``{"status": "queue"}`` is a whole answer: every other field is optional."""
    result = task_from_wire({"status": "queue"}, task_id="t")
    assert (result.task_id, result.status, result.raw_status) == ("t", TaskStatus.QUEUE, "queue")
    assert (result.rounds, result.best_prompt, result.best_round, result.error) == (
        (),
        None,
        None,
        None,
    )
    assert result.max_rounds is None
    assert result.extra == {}


def test_every_known_field_is_read_under_its_sdk_name() -> None:
    """round_data_list -> rounds, round -> number, sample -> samples, and so on."""
    result = task_from_wire(full_body(), task_id="t", max_rounds=5)
    assert result.status is TaskStatus.PROCESSING
    assert (result.best_prompt, result.best_round, result.max_rounds) == ("prompt 2", 2, 5)
    assert result.rounds[2] == Round(
        number=3, prompt="prompt 3", samples=(Sample("q", "a3"),), success=False
    )
    assert [r.number for r in result.rounds] == [1, 2, 3]


def test_unknown_keys_are_kept_at_every_level_and_round_trip() -> None:
    """Unknown top-level, round and sample keys land in ``extra`` and go back out unchanged."""
    body = full_body()
    body["queue_position"] = 3
    body["round_data_list"][0].update(tokens=120, time=4.5)
    body["round_data_list"][0]["sample"][0]["id"] = "uuid-1"
    result = task_from_wire(body, task_id="t")
    assert result.extra == {"queue_position": 3}
    assert result.rounds[0].extra == {"tokens": 120, "time": 4.5}
    assert result.rounds[0].samples[0].extra == {"id": "uuid-1"}
    assert result.rounds[1].extra == {}
    wire = task_to_wire(result)
    assert wire["queue_position"] == 3
    assert wire["round_data_list"][0]["tokens"] == 120
    assert wire["round_data_list"][0]["sample"][0]["id"] == "uuid-1"
    assert task_from_wire(wire, task_id="t") == result


def test_task_to_wire_uses_wire_names_and_keeps_raw_values() -> None:
    """task_to_wire writes the service's names plus task_id and max_rounds."""
    body = {**full_body(), "status": "fail", "error": {"err_code": -1, "detail": "x"}}
    wire = task_to_wire(task_from_wire(body, task_id="t", max_rounds=3))
    assert wire == {**body, "task_id": "t", "max_rounds": 3}


def test_stored_max_rounds_is_read_back_unless_overridden() -> None:
    """A stored dict's max_rounds is used when the caller passes none, replaced when it does."""
    wire = task_to_wire(task_from_wire({"status": "queue"}, task_id="t", max_rounds=7))
    assert task_from_wire(wire, task_id="t").max_rounds == 7
    assert task_from_wire(wire, task_id="t", max_rounds=9).max_rounds == 9


NULL_OR_ABSENT = ["best_prompt", "best_round", "round_data_list", "error"]


@pytest.mark.parametrize("key", NULL_OR_ABSENT)
def test_null_and_absent_mean_the_same(key: str) -> None:
    """An optional field sent as null parses exactly like one left out."""
    body = full_body()
    null = task_from_wire({**body, key: None}, task_id="t")
    absent = task_from_wire({k: v for k, v in body.items() if k != key}, task_id="t")
    assert null == absent


@pytest.mark.parametrize("sample", [None, []], ids=["null", "empty-list"])
def test_round_sample_null_absent_or_empty_is_no_samples(sample: list[Any] | None) -> None:
    """A round's ``sample`` may be null, absent or empty: no samples; success defaults false."""
    with_sample = {"round": 1, "prompt": "p", "sample": sample}
    without = {"round": 1, "prompt": ""}
    result = task_from_wire({"status": "processing", "round_data_list": [with_sample]}, task_id="t")
    assert result.rounds[0].samples == ()
    result = task_from_wire({"status": "processing", "round_data_list": [without]}, task_id="t")
    assert result.rounds[0] == Round(number=1, prompt="", samples=(), success=False)


# -- the error field ---------------------------------------------------------------------------

ERRORS: list[tuple[str, Any, FailureReason | None]] = [
    ("string", "Generation failed", FailureReason(message="Generation failed")),
    ("object-code-message", {"err_code": -10003, "message": "net"}, FailureReason("net", -10003)),
    ("object-code-only", {"err_code": -1024}, FailureReason(err_code=-1024)),
    ("object-bad-types", {"err_code": "x", "message": 5}, FailureReason()),
    ("object-bool-code", {"err_code": True}, FailureReason()),
    ("number", 42, FailureReason(message="42")),
    ("list", ["x"], FailureReason(message="['x']")),
    ("empty-string", "", None),
    ("empty-object", {}, None),
    ("zero", 0, None),
    ("false", False, None),
    ("empty-list", [], None),
    ("null", None, None),
]


@pytest.mark.parametrize(("error", "expected"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_error_field_of_any_shape_becomes_task_error_or_none(
    error: Any, expected: FailureReason | None
) -> None:
    """The error may be a string, object or anything; falsy means none; raw keeps what came."""
    result = task_from_wire({"status": "fail", "error": error}, task_id="t")
    assert result.error == expected
    if result.error is not None:
        assert result.error.raw == error


@pytest.mark.parametrize("status", ["queue", "processing", "success", "paused"])
def test_truthy_error_means_failure_whatever_the_status(status: str) -> None:
    """A non-empty error makes the effective status FAIL; raw_status keeps what came."""
    result = task_from_wire({"status": status, "error": "boom"}, task_id="t")
    assert result.status is TaskStatus.FAIL
    assert result.raw_status == status
    assert result.failed


def test_falsy_error_leaves_the_status_alone() -> None:
    """An empty error object does not turn a running task into a failure."""
    result = task_from_wire({"status": "processing", "error": {}}, task_id="t")
    assert result.status is TaskStatus.PROCESSING


@pytest.mark.parametrize("raw", ["apikeyFail", "paused", ""], ids=["apikeyFail", "paused", "empty"])
def test_unknown_status_is_kept_as_unknown(raw: str) -> None:
    """A status string the SDK does not know is UNKNOWN (not terminal), raw string kept."""
    result = task_from_wire({"status": raw}, task_id="t")
    assert (result.status, result.raw_status, result.is_terminal) == (
        TaskStatus.UNKNOWN,
        raw,
        False,
    )


# -- best_* fallback ---------------------------------------------------------------------------

FALLBACK: list[tuple[str, dict[str, Any], tuple[int | None, str | None]]] = [
    ("success-fills-both", {"status": "success"}, (2, "prompt 2")),
    ("success-keeps-best-round", {"status": "success", "best_round": 1}, (1, "prompt 1")),
    ("success-keeps-best-prompt", {"status": "success", "best_prompt": "X"}, (2, "X")),
    ("processing-not-filled", {"status": "processing"}, (None, None)),
    ("fail-not-filled", {"status": "fail"}, (None, None)),
    ("error-not-filled", {"status": "success", "error": "e"}, (None, None)),
]


@pytest.mark.parametrize(
    ("fields", "expected"), [f[1:] for f in FALLBACK], ids=[f[0] for f in FALLBACK]
)
def test_success_without_best_fields_takes_them_from_the_latest_successful_round(
    fields: dict[str, Any], expected: tuple[int | None, str | None]
) -> None:
    """On success, missing best_round/best_prompt come from the most recent successful round."""
    rounds = [wire_round(1), wire_round(2), wire_round(3, success=False)]
    result = task_from_wire({**fields, "round_data_list": rounds}, task_id="t")
    assert (result.best_round, result.best_prompt) == expected


def test_success_without_rounds_or_best_fields_stays_empty() -> None:
    """A success with nothing to fall back on keeps best_* as None in the converter.

    (parse_task_response then refuses it: see result_problem.)
    """
    result = task_from_wire({"status": "success", "round_data_list": []}, task_id="t")
    assert (result.best_round, result.best_prompt) == (None, None)


# -- round order and duplicates ----------------------------------------------------------------


def test_rounds_are_sorted_by_number() -> None:
    """Rounds listed out of order come back ordered by round number."""
    body = {
        "status": "processing",
        "round_data_list": [wire_round(3), wire_round(1), wire_round(2)],
    }
    assert [r.number for r in task_from_wire(body, task_id="t").rounds] == [1, 2, 3]


def test_exact_duplicate_rounds_are_kept_once() -> None:
    """A round listed twice with the same content appears once."""
    body = {
        "status": "processing",
        "round_data_list": [wire_round(1), wire_round(2), wire_round(1), wire_round(2)],
    }
    assert [r.number for r in task_from_wire(body, task_id="t").rounds] == [1, 2]


def test_duplicate_rounds_differing_only_in_unknown_fields_are_kept_once() -> None:
    """Unknown fields are not compared: the round is kept once, with the first listing's extras."""
    body = {"status": "processing", "round_data_list": [wire_round(1, tokens=3), wire_round(1)]}
    (kept,) = task_from_wire(body, task_id="t").rounds
    assert kept.extra == {"tokens": 3}


@pytest.mark.parametrize(
    "duplicate",
    [wire_round(1, success=False), {**wire_round(1), "prompt": "other"}],
    ids=["success-differs", "prompt-differs"],
)
def test_contradicting_duplicate_rounds_raise_value_error(duplicate: dict[str, Any]) -> None:
    """A round listed twice with different content is a contract breach."""
    body = {"status": "processing", "round_data_list": [wire_round(1), duplicate]}
    with pytest.raises(ValueError, match="round 1 is listed twice"):
        task_from_wire(body, task_id="t")


def test_task_from_wire_does_not_mutate_its_input() -> None:
    """Parsing leaves the caller's dict as it was."""
    body = full_body()
    before = copy.deepcopy(body)
    task_from_wire(body, task_id="t", max_rounds=3)
    assert body == before


# -- strict types ------------------------------------------------------------------------------


def with_round(**changes: Any) -> dict[str, Any]:
    return {"status": "processing", "round_data_list": [{**wire_round(1), **changes}]}


def with_sample(sample: Any) -> dict[str, Any]:
    return with_round(sample=[sample])


WRONG_TYPES: list[tuple[str, dict[str, Any]]] = [
    ("status-missing", {}),
    ("status-null", {"status": None}),
    ("status-list", {"status": ["success"]}),
    ("status-int", {"status": 1}),
    ("best-round-str", {"status": "success", "best_round": "2"}),
    ("best-round-bool", {"status": "success", "best_round": True}),
    ("best-round-float", {"status": "success", "best_round": 2.0}),
    ("best-prompt-int", {"status": "success", "best_prompt": 5}),
    ("round-data-list-object", {"status": "queue", "round_data_list": {}}),
    ("round-data-list-str", {"status": "queue", "round_data_list": "[]"}),
    ("round-item-list", {"status": "queue", "round_data_list": [[1, "p"]]}),
    ("round-item-null", {"status": "queue", "round_data_list": [None]}),
    ("round-number-str", with_round(round="1")),
    ("round-number-bool", with_round(round=True)),
    ("round-number-missing", {"status": "queue", "round_data_list": [{"prompt": "p"}]}),
    ("round-prompt-null", with_round(prompt=None)),
    ("round-success-int", with_round(success=1)),
    ("round-success-str", with_round(success="true")),
    ("round-sample-object", with_round(sample={})),
    ("sample-item-str", with_sample("answer")),
    ("sample-answer-int", with_sample({"question": "q", "answer": 1})),
    ("max-rounds-str", {"status": "queue", "max_rounds": "5"}),
]


@pytest.mark.parametrize("body", [w[1] for w in WRONG_TYPES], ids=[w[0] for w in WRONG_TYPES])
def test_wrong_json_types_are_refused_not_coerced(body: dict[str, Any]) -> None:
    """A value of the wrong JSON type breaks the contract: no "1" -> 1, no 1 -> True."""
    with pytest.raises(CONTRACT_ERRORS):
        task_from_wire(body, task_id="t")


@pytest.mark.parametrize(
    "sample",
    [{"question": "q"}, {"question": "q", "answer": None}, {"answer": "a", "question": None}],
    ids=["answer-missing", "answer-null", "question-null"],
)
def test_a_sample_without_question_or_answer_reads_as_empty(sample: dict[str, Any]) -> None:
    """The sample shape is only inferred, so missing or null texts read as "" (not a breach)."""
    result = task_from_wire(with_sample(sample), task_id="t")
    (parsed,) = result.rounds[0].samples
    assert parsed.question == (sample.get("question") or "")
    assert parsed.answer == (sample.get("answer") or "")
