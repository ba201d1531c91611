"""The value types: request validation before any network call, and TaskResult's helpers."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
from spo_async import (
    FailureReason,
    OptimizationRequest,
    QAPair,
    RequestValidationError,
    Round,
    Sample,
    SPOError,
    TaskResult,
    TaskStatus,
)
from spo_async._models import MAX_ROUNDS_LIMIT

QA = (QAPair(question="Good morning", answer="[thoughts][reply]"),)


def make_request(**changes: Any) -> OptimizationRequest:
    fields: dict[str, Any] = {"prompt": "Act as a poet", "qa": QA, "model": "m-1"}
    fields.update(changes)
    return OptimizationRequest(**fields)


# -- OptimizationRequest validation ----------------------------------------------------------

BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("empty-prompt", {"prompt": ""}, "prompt"),
    ("whitespace-prompt", {"prompt": " \t\n"}, "prompt"),
    ("non-str-prompt", {"prompt": 42}, "prompt"),
    ("none-prompt", {"prompt": None}, "prompt"),
    ("empty-qa", {"qa": []}, "qa"),
    ("qa-str", {"qa": "question"}, "qa"),
    ("qa-bytes", {"qa": b"question"}, "qa"),
    ("qa-dict", {"qa": {"question": "q", "answer": "a"}}, "qa"),
    ("qa-int", {"qa": 3}, "qa"),
    ("qa-none", {"qa": None}, "qa"),
    ("qa-item-str", {"qa": [QA[0], "q?"]}, "qa[1]"),
    ("qa-item-tuple", {"qa": [("q", "a")]}, "qa[0]"),
    ("qa-item-none", {"qa": [None]}, "qa[0]"),
    ("qa-dict-missing-question", {"qa": [{"question": "q"}, {"answer": "a"}]}, "qa[1].question"),
    ("qa-dict-empty-question", {"qa": [{"question": " ", "answer": "a"}]}, "qa[0].question"),
    ("qa-dict-int-answer", {"qa": [{"question": "q", "answer": 1}]}, "qa[0].answer"),
    ("qa-dict-none-answer", {"qa": [{"question": "q", "answer": None}]}, "qa[0].answer"),
    ("max-rounds-1", {"max_rounds": 1}, "max_rounds"),
    ("max-rounds-0", {"max_rounds": 0}, "max_rounds"),
    ("max-rounds-negative", {"max_rounds": -3}, "max_rounds"),
    ("max-rounds-101", {"max_rounds": MAX_ROUNDS_LIMIT + 1}, "max_rounds"),
    ("max-rounds-bool", {"max_rounds": True}, "max_rounds"),
    ("max-rounds-str", {"max_rounds": "5"}, "max_rounds"),
    ("max-rounds-float", {"max_rounds": 2.0}, "max_rounds"),
    ("temperature-nan", {"temperature": math.nan}, "temperature"),
    ("temperature-inf", {"temperature": math.inf}, "temperature"),
    ("temperature-negative", {"temperature": -0.1}, "temperature"),
    ("temperature-above-2", {"temperature": 99}, "temperature"),
    ("temperature-bool", {"temperature": True}, "temperature"),
    ("temperature-str", {"temperature": "0.7"}, "temperature"),
    ("temperature-huge-int", {"temperature": 10**400}, "temperature"),
    ("empty-model", {"model": ""}, "model"),
    ("non-str-model", {"model": 3.5}, "model"),
    ("empty-language", {"language": ""}, "language"),
    ("non-str-language", {"language": None}, "language"),
    ("non-str-requirements", {"requirements": 7}, "requirements"),
]


@pytest.mark.parametrize(
    ("changes", "field"),
    [(c, f) for _, c, f in BAD_REQUESTS],
    ids=[i for i, _, _ in BAD_REQUESTS],
)
def test_bad_request_raises_validation_error_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    """Every bad input raises RequestValidationError whose ``field`` names the culprit."""
    with pytest.raises(RequestValidationError) as info:
        make_request(**changes)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert info.value.problem in str(info.value)


def test_request_validation_error_is_a_value_error_and_an_spo_error() -> None:
    """Callers may catch RequestValidationError as ValueError or as SPOError."""
    with pytest.raises(ValueError, match="prompt") as info:
        make_request(prompt="")
    assert isinstance(info.value, SPOError)


def test_request_defaults_are_the_documented_ones() -> None:
    """The prompt's language, temperature 0.7, max_rounds 5 and no requirements by default."""
    request = make_request()
    assert (request.language, request.temperature, request.max_rounds, request.requirements) == (
        "en",
        0.7,
        5,
        None,
    )


LANGUAGES = [
    ("english", "Act as a helpful tutor", "en"),
    ("chinese", "扮演用户的女朋友用中文回答", "zh"),
    ("japanese-kana-with-kanji", "ユーザーの友達として日本語で答えてください", "ja"),
    ("korean", "친절한 선생님처럼 대답하세요", "ko"),
    ("russian", "Отвечай как вежливый учитель", "ru"),
    ("mostly-chinese-with-english-terms", "请用 JSON 格式回答用户的问题并解释原因", "zh"),
    ("no-letters", "1234 !!!", "en"),
]


@pytest.mark.parametrize(
    ("text", "expected"), [x[1:] for x in LANGUAGES], ids=[x[0] for x in LANGUAGES]
)
def test_auto_language_follows_the_script_of_the_text(text: str, expected: str) -> None:
    """``language="auto"`` becomes the language of the request's text, before anything is sent."""
    request = make_request(prompt=text, qa=[QAPair(question=text, answer="")])
    assert request.language == expected


def test_an_explicit_language_is_kept() -> None:
    """A language given by the caller is sent as given, whatever the text's script."""
    assert make_request(prompt="扮演老师", language="en").language == "en"


GOOD_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("max-rounds-2", {"max_rounds": 2}),
    ("max-rounds-limit", {"max_rounds": MAX_ROUNDS_LIMIT}),
    ("temperature-zero", {"temperature": 0}),
    ("temperature-int", {"temperature": 1}),
    ("requirements-empty", {"requirements": ""}),
    ("language-en", {"language": "en"}),
    ("qa-empty-answer", {"qa": [QAPair(question="q", answer="")]}),
    ("qa-generator", {"qa": (p for p in QA)}),
]


@pytest.mark.parametrize(
    "changes", [c for _, c in GOOD_REQUESTS], ids=[i for i, _ in GOOD_REQUESTS]
)
def test_valid_edge_values_are_accepted(changes: dict[str, Any]) -> None:
    """Boundary values that the contract allows construct a request."""
    make_request(**changes)


def test_dict_qa_items_are_converted_to_qapairs() -> None:
    """Mappings in ``qa`` become QAPairs; a missing answer is empty; extra keys are dropped."""
    request = make_request(
        qa=[{"question": "a?", "answer": "A"}, {"question": "b?", "id": "uuid"}, QA[0]]
    )
    assert request.qa == (QAPair("a?", "A"), QAPair("b?", ""), QA[0])
    assert isinstance(request.qa, tuple)


def test_qapair_validates_itself() -> None:
    """A QAPair built directly checks its own fields."""
    with pytest.raises(RequestValidationError) as info:
        QAPair(question="", answer="a")
    assert info.value.field == "question"


def test_request_is_frozen_slotted_and_hashable() -> None:
    """Requests are immutable values: equal requests hash alike and fields cannot be set."""
    a, b = make_request(), make_request(qa=[{"question": "Good morning", "answer": QA[0].answer}])
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert not hasattr(a, "__dict__")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        a.prompt = "other"  # type: ignore[misc]


# -- TaskResult helpers ------------------------------------------------------------------------


def rnd(number: int, *, success: bool = True, samples: int = 1, prompt: str = "") -> Round:
    return Round(
        number=number,
        prompt=prompt or f"prompt {number}",
        samples=tuple(Sample(question=f"q{i}", answer="a") for i in range(samples)),
        success=success,
    )


def task(status: TaskStatus, *rounds: Round, **changes: Any) -> TaskResult:
    return TaskResult(
        task_id="t-1", status=status, raw_status=str(status), rounds=rounds, **changes
    )


STATUS_FLAGS = [
    (TaskStatus.QUEUE, False, False, False),
    (TaskStatus.PROCESSING, False, False, False),
    (TaskStatus.UNKNOWN, False, False, False),
    (TaskStatus.SUCCESS, True, True, False),
    (TaskStatus.FAIL, True, False, True),
]


@pytest.mark.parametrize(
    ("status", "terminal", "succeeded", "failed"),
    STATUS_FLAGS,
    ids=[str(s[0]) for s in STATUS_FLAGS],
)
def test_terminal_succeeded_failed_follow_the_status(
    status: TaskStatus, terminal: bool, succeeded: bool, failed: bool
) -> None:
    """is_terminal, succeeded and failed are read from the effective status."""
    result = task(status)
    assert (result.is_terminal, result.succeeded, result.failed) == (terminal, succeeded, failed)


COMPLETED = [
    ("running-trailing-empty-dropped", TaskStatus.PROCESSING, [1, 1, 0], [1, 2]),
    ("unknown-trailing-empty-dropped", TaskStatus.UNKNOWN, [1, 0], [1]),
    ("queue-only-empty-round-dropped", TaskStatus.QUEUE, [0], []),
    ("running-middle-empty-kept", TaskStatus.PROCESSING, [1, 0, 1], [1, 2, 3]),
    ("running-all-full", TaskStatus.PROCESSING, [1, 1], [1, 2]),
    ("success-trailing-empty-kept", TaskStatus.SUCCESS, [1, 0], [1, 2]),
    ("fail-trailing-empty-kept", TaskStatus.FAIL, [1, 0], [1, 2]),
    ("no-rounds", TaskStatus.PROCESSING, [], []),
]


@pytest.mark.parametrize(
    ("status", "sample_counts", "expected"),
    [c[1:] for c in COMPLETED],
    ids=[c[0] for c in COMPLETED],
)
def test_completed_rounds_drops_a_trailing_empty_round_only_while_running(
    status: TaskStatus, sample_counts: list[int], expected: list[int]
) -> None:
    """A running task's last round without samples is still running, so it is not counted."""
    rounds = [rnd(i, samples=n) for i, n in enumerate(sample_counts, start=1)]
    result = task(status, *rounds)
    assert [r.number for r in result.completed_rounds] == expected


BEST = [
    ("by-best-round", [True, True, True], 2, TaskStatus.SUCCESS, 2),
    ("best-round-may-be-a-failed-round", [True, False], 2, TaskStatus.SUCCESS, 2),
    ("fallback-latest-success", [True, True, False], None, TaskStatus.SUCCESS, 2),
    ("best-round-not-listed-falls-back", [True, True], 9, TaskStatus.SUCCESS, 2),
    ("fallback-round-1", [True, False, False], None, TaskStatus.PROCESSING, 1),
    ("no-rounds", [], None, TaskStatus.PROCESSING, None),
    ("no-successful-round", [False, False], None, TaskStatus.FAIL, None),
]


@pytest.mark.parametrize(
    ("successes", "best_round", "status", "expected"),
    [b[1:] for b in BEST],
    ids=[b[0] for b in BEST],
)
def test_best_is_best_round_else_most_recent_successful_round(
    successes: list[bool], best_round: int | None, status: TaskStatus, expected: int | None
) -> None:
    """``best`` is the round numbered best_round, else the latest successful completed round."""
    rounds = [rnd(i, success=s) for i, s in enumerate(successes, start=1)]
    best = task(status, *rounds, best_round=best_round).best
    assert (best.number if best is not None else None) == expected


def test_best_ignores_a_running_round_without_samples() -> None:
    """The fallback only looks at completed rounds, not a running one listed as successful."""
    result = task(TaskStatus.PROCESSING, rnd(1), rnd(2, samples=0))
    assert result.best == rnd(1)


COMPLETED_COUNTS: list[tuple[str, list[int], int]] = [
    ("all-done", [1, 1, 1], 3),
    ("running-round-not-counted", [1, 0], 1),
    ("none-yet", [], 0),
]


@pytest.mark.parametrize(
    ("sample_counts", "expected"),
    [c[1:] for c in COMPLETED_COUNTS],
    ids=[c[0] for c in COMPLETED_COUNTS],
)
def test_completed_rounds_leave_out_a_running_round(
    sample_counts: list[int], expected: int
) -> None:
    """A running task's trailing round without samples is not counted as completed."""
    rounds = [rnd(i, samples=n) for i, n in enumerate(sample_counts, start=1)]
    assert len(task(TaskStatus.PROCESSING, *rounds).completed_rounds) == expected


TASK_ERRORS = [
    ("message-only", FailureReason(message="boom", raw="boom"), "boom"),
    ("code-only", FailureReason(err_code=-10003, raw={"err_code": -10003}), "err_code -10003"),
    ("code-and-message", FailureReason(message="m", err_code=-1, raw={}), "err_code -1: m"),
    ("neither-shows-raw", FailureReason(raw=[1, 2]), "[1, 2]"),
    ("empty-message-shows-raw", FailureReason(message="", raw={"x": 1}), "{'x': 1}"),
]


@pytest.mark.parametrize(
    ("error", "text"), [t[1:] for t in TASK_ERRORS], ids=[t[0] for t in TASK_ERRORS]
)
def test_task_error_str_shows_code_and_message(error: FailureReason, text: str) -> None:
    """str(FailureReason) reads "err_code N: message", and falls back to the raw value."""
    assert str(error) == text


def test_task_error_equality_ignores_raw() -> None:
    """Two errors with the same code and message are equal whatever their raw form."""
    assert FailureReason(message="m", raw="m") == FailureReason(message="m", raw={"message": "m"})


def test_task_result_is_hashable_despite_extra_fields() -> None:
    """Snapshots can go in sets even when they carry unknown fields (``extra`` is not hashed)."""
    a = task(TaskStatus.SUCCESS, rnd(1), extra={"tokens": [1, 2]})
    assert hash(a) == hash(task(TaskStatus.SUCCESS, rnd(1)))


def test_text_that_cannot_be_sent_is_refused_when_the_request_is_made() -> None:
    """Half an emoji (a lone surrogate) in a prompt fails at once, naming the field."""
    with pytest.raises(RequestValidationError, match="prompt"):
        make_request(prompt="hello \ud83d")
    with pytest.raises(RequestValidationError, match="answer"):
        QAPair(question="q", answer="\udc00")
