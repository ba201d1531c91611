"""The SDK's value types: frozen, slotted attrs classes with no knowledge of JSON.

The wire format (field names such as ``round_data_list``, ``sample``) lives only
in :mod:`spo_async._convert`. Requests validate themselves on construction, so
a bad input fails with :class:`~spo_async.RequestValidationError` naming the
field before anything touches the network.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._errors import RequestValidationError
from ._state import TaskStatus

__all__ = [
    "MAX_ROUNDS_LIMIT",
    "OptimizationRequest",
    "Progress",
    "QAPair",
    "Round",
    "Sample",
    "TaskError",
    "TaskResult",
]

#: The largest ``max_rounds`` the SDK accepts. The service documents no limit,
#: but each round costs about eight LLM calls; the upstream SPO app stops at 100.
MAX_ROUNDS_LIMIT = 100


def _require_text(field: str, value: object, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise RequestValidationError(field, f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RequestValidationError(field, "must not be empty")


@attrs.frozen
class QAPair:
    """One example the optimizer learns from: a question and the answer wanted.

    ``answer`` may be empty, as upstream SPO allows; it can also describe the
    shape of the answer wanted (``"[thoughts][reply]"``) instead of the words.
    """

    question: str
    answer: str

    def __attrs_post_init__(self) -> None:
        _require_text("question", self.question)
        _require_text("answer", self.answer, allow_empty=True)


def _to_qa_tuple(value: Iterable[QAPair | Mapping[str, str]]) -> tuple[QAPair, ...]:
    """Accept ``QAPair`` objects or ``{"question": ..., "answer": ...}`` mappings."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise RequestValidationError("qa", f"expected a list of QAPair, got {type(value).__name__}")
    pairs: list[QAPair] = []
    for index, item in enumerate(value):
        if isinstance(item, QAPair):
            pairs.append(item)
        elif isinstance(item, Mapping):
            try:
                pairs.append(QAPair(question=item.get("question"), answer=item.get("answer", "")))  # type: ignore[arg-type]
            except RequestValidationError as exc:
                raise RequestValidationError(f"qa[{index}].{exc.field}", exc.problem) from None
        else:
            raise RequestValidationError(
                f"qa[{index}]", f"expected a QAPair, got {type(item).__name__}"
            )
    return tuple(pairs)


@attrs.frozen(kw_only=True)
class OptimizationRequest:
    """What to optimize, and how: the body of one submit.

    Defaults are the service's documented ones (``language="zh"``,
    ``temperature=0.7``); ``max_rounds`` defaults to 5, as in 302.AI's own web
    app. Round 1 only re-runs the original prompt, so at least 2 rounds are
    needed for any optimization to happen. Every field is checked here, on
    construction, and a bad one raises :class:`~spo_async.RequestValidationError`.
    """

    #: The prompt to optimize. Round 1 uses it unchanged.
    prompt: str
    #: At least one example; the service samples up to three of them per step.
    qa: tuple[QAPair, ...] = attrs.field(converter=_to_qa_tuple)
    #: A 302.AI chat model id, for example ``"claude-3-5-sonnet-20240620"``.
    model: str
    #: Rounds to run, 2 to :data:`MAX_ROUNDS_LIMIT`. Cost grows linearly with it.
    max_rounds: int = 5
    #: Free text describing the effect wanted; left out of the request when ``None``.
    requirements: str | None = None
    #: The optimization's working language.
    language: str = "zh"
    #: The optimizer model's sampling temperature.
    temperature: float = 0.7

    def __attrs_post_init__(self) -> None:
        _require_text("prompt", self.prompt)
        _require_text("model", self.model)
        _require_text("language", self.language)
        if not self.qa:
            raise RequestValidationError("qa", "needs at least one QAPair")
        if self.requirements is not None:
            _require_text("requirements", self.requirements, allow_empty=True)
        if isinstance(self.max_rounds, bool) or not isinstance(self.max_rounds, int):
            raise RequestValidationError(
                "max_rounds", f"expected an int, got {type(self.max_rounds).__name__}"
            )
        if not 2 <= self.max_rounds <= MAX_ROUNDS_LIMIT:
            raise RequestValidationError(
                "max_rounds",
                f"must be between 2 and {MAX_ROUNDS_LIMIT}, got {self.max_rounds} "
                "(round 1 only re-runs the original prompt)",
            )
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, int | float):
            raise RequestValidationError(
                "temperature", f"expected a number, got {type(self.temperature).__name__}"
            )
        try:
            finite = math.isfinite(self.temperature)
        except OverflowError:  # an int too large for a float
            finite = False
        if not finite or self.temperature < 0:
            raise RequestValidationError(
                "temperature", f"must be a finite number >= 0, got {self.temperature!r}"
            )


@attrs.frozen
class Sample:
    """One answer a round's prompt produced for one sampled question.

    The service's sample shape is only inferred (the reference app reads just the
    list's length), so a missing or ``null`` question or answer reads as ``""``.
    """

    question: str = ""
    answer: str = ""
    #: Fields the service sent that this SDK does not know, kept as they came. Not
    #: compared (nor hashed): servers of two versions may answer during a deploy.
    extra: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)


@attrs.frozen
class Round:
    """One optimization round: the prompt tried, its answers, and whether it won.

    ``success`` is true when this round's prompt beat the best one so far in
    the judges' vote (round 1, the original prompt, always counts as a success).
    """

    number: int
    prompt: str
    samples: tuple[Sample, ...] = ()
    success: bool = False
    #: Fields the service sent that this SDK does not know (``tokens``, ``time``, ...).
    #: Not compared: a round does not change when a rolling deploy adds or drops one.
    extra: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)


@attrs.frozen
class TaskError:
    """Why a task failed, as the service said it: a text, a code, or both.

    ``raw`` is the ``error`` value exactly as it came (a string, an object, ...).
    """

    message: str | None = None
    err_code: int | None = None
    raw: Any = attrs.field(default=None, hash=False, eq=False, repr=False)

    def __str__(self) -> str:
        code = f"err_code {self.err_code}" if self.err_code is not None else ""
        parts = [p for p in (code, self.message) if p]
        return ": ".join(parts) or repr(self.raw)


@attrs.frozen
class Progress:
    """How far a task has come: ``done`` rounds of ``total`` (``None`` when unknown)."""

    done: int
    total: int | None

    @property
    def fraction(self) -> float | None:
        """``done / total`` between 0 and 1, or ``None`` when the total is unknown."""
        if not self.total:
            return None
        return min(1.0, self.done / self.total)

    def __str__(self) -> str:
        return f"{self.done}/{self.total if self.total is not None else '?'}"


@attrs.frozen
class TaskResult:
    """One snapshot of a task, as one query of the service returned it.

    ``status`` is the effective status: the service's rule is that a non-empty
    ``error`` means failure whatever ``status`` says, so such a snapshot has
    ``status == TaskStatus.FAIL`` while ``raw_status`` keeps the string that came.

    ``best_prompt`` and ``best_round`` are the service's; when a successful task
    leaves them out, they are filled from the best round (see :attr:`best`).
    ``max_rounds`` is not sent by the service: the client fills it in when it
    knows the request.
    """

    task_id: str
    status: TaskStatus
    raw_status: str
    rounds: tuple[Round, ...] = ()
    best_prompt: str | None = None
    best_round: int | None = None
    error: TaskError | None = None
    max_rounds: int | None = None
    #: Top-level fields the service sent that this SDK does not know. Not compared.
    extra: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def is_terminal(self) -> bool:
        """Whether the task has finished, successfully or not."""
        return self.status.is_terminal

    @property
    def succeeded(self) -> bool:
        """Whether the task finished with a result."""
        return self.status is TaskStatus.SUCCESS

    @property
    def failed(self) -> bool:
        """Whether the task finished without a result."""
        return self.status is TaskStatus.FAIL

    @property
    def completed_rounds(self) -> tuple[Round, ...]:
        """Rounds that have finished.

        While a task runs the service may list the running round with no samples
        yet; like 302.AI's web app, such a trailing round is not counted.
        """
        if self.rounds and not self.is_terminal and not self.rounds[-1].samples:
            return self.rounds[:-1]
        return self.rounds

    @property
    def best(self) -> Round | None:
        """The best round so far.

        The round numbered ``best_round`` when the service says; otherwise the
        most recent successful round, which is how SPO picks its best.
        """
        if self.best_round is not None:
            for r in self.rounds:
                if r.number == self.best_round:
                    return r
        for r in reversed(self.completed_rounds):
            if r.success:
                return r
        return None

    @property
    def progress(self) -> Progress:
        """Rounds done of ``max_rounds`` (the total is ``None`` when not known)."""
        return Progress(done=len(self.completed_rounds), total=self.max_rounds)
