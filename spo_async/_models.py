"""The SDK's value types: frozen, slotted attrs classes with no knowledge of JSON.

The wire format (field names such as ``round_data_list``, ``sample``) lives only
in :mod:`spo_async._convert`. Requests validate themselves on construction, so
a bad input fails with :class:`~spo_async.RequestValidationError` naming the
field before anything touches the network.
"""

from __future__ import annotations

import collections
import math
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._errors import RequestValidationError
from ._state import TaskStatus

__all__ = [
    "MAX_ROUNDS_LIMIT",
    "FailureReason",
    "OptimizationRequest",
    "QAPair",
    "Round",
    "Sample",
    "TaskResult",
    "detect_language",
]

#: The largest ``temperature`` the SDK accepts: chat models take 0 to 2.
MAX_TEMPERATURE = 2.0

#: Scripts whose letters name a language for ``language="auto"``; anything else is English.
_SCRIPT_LANGUAGES = {
    "CJK": "zh",
    "HIRAGANA": "ja",
    "KATAKANA": "ja",
    "HANGUL": "ko",
    "CYRILLIC": "ru",
    "ARABIC": "ar",
    "HEBREW": "he",
    "GREEK": "el",
    "THAI": "th",
    "DEVANAGARI": "hi",
}


def detect_language(text: str) -> str:
    """The language ``language="auto"`` picks for ``text``, from the script of its letters.

    Japanese kana anywhere means ``"ja"`` (Japanese mixes kana with Chinese
    characters); otherwise the script with the most letters decides: Chinese
    characters give ``"zh"``, Hangul ``"ko"``, Cyrillic ``"ru"``, and so on, and
    Latin letters (or none) give ``"en"``. A script cannot tell French from
    English: pass ``language`` yourself for other languages written in Latin letters.
    """
    if text.isascii():  # the common case, in well under a microsecond: Latin or none
        return "en"
    counts: collections.Counter[str] = collections.Counter()
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        script = name.split(" ", 1)[0]
        counts[_SCRIPT_LANGUAGES.get(script, "en")] += 1
    if not counts:
        return "en"
    if counts["ja"]:
        return "ja"
    return counts.most_common(1)[0][0]


#: The largest ``max_rounds`` the SDK accepts. The service documents no limit,
#: but each round costs about eight LLM calls; the upstream SPO app stops at 100.
MAX_ROUNDS_LIMIT = 100


def _require_text(field: str, value: object, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise RequestValidationError(field, f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RequestValidationError(field, "must not be empty")
    if not value.isprintable():  # the rare case: look for text that no wire can carry
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RequestValidationError(
                field, f"holds a character that cannot be sent (at position {exc.start})"
            ) from None


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

    ``max_rounds`` defaults to 5, as in 302.AI's own web app; the first round
    runs the original prompt unchanged and each later one tries a rewrite.
    ``temperature`` defaults to the service's 0.7. ``language`` defaults to
    ``"auto"``: the language of the prompt's text, read from its script when the
    request is made (by the script of its letters), so that an English prompt is
    optimized in English; the service's own default would be Chinese (``"zh"``).
    The field then holds the language chosen. Every field is checked here, on
    construction, and a bad one raises :class:`~spo_async.RequestValidationError`.
    """

    #: The prompt to optimize. Round 1 uses it unchanged.
    prompt: str
    #: At least one example; the service samples up to three of them per step.
    qa: tuple[QAPair, ...] = attrs.field(converter=_to_qa_tuple)
    #: A 302.AI chat model id, for example ``"claude-3-5-sonnet-20240620"``.
    model: str
    #: Rounds to run, 2 to 100. Cost grows linearly with it.
    max_rounds: int = 5
    #: Free text describing the effect wanted; left out of the request when ``None``.
    requirements: str | None = None
    #: The optimization's working language, such as ``"en"`` or ``"zh"``; ``"auto"``
    #: (the default) picks it from the text's script when the request is made.
    language: str = "auto"
    #: The optimizer model's sampling temperature, 0 to 2.
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
            hint = (
                " (round 1 only runs the original prompt, so 1 round optimizes nothing)"
                if self.max_rounds < 2
                else " (each round costs about eight model calls)"
            )
            raise RequestValidationError(
                "max_rounds",
                f"must be between 2 and {MAX_ROUNDS_LIMIT}, got {self.max_rounds}{hint}",
            )
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, int | float):
            raise RequestValidationError(
                "temperature", f"expected a number, got {type(self.temperature).__name__}"
            )
        try:
            finite = math.isfinite(self.temperature)
        except OverflowError:  # an int too large for a float
            finite = False
        if not finite or not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise RequestValidationError(
                "temperature",
                f"must be a number from 0 to {MAX_TEMPERATURE:g}, got {self.temperature!r}",
            )
        if self.language == "auto":
            texts = [self.prompt, self.requirements or ""]
            texts += [text for pair in self.qa for text in (pair.question, pair.answer)]
            object.__setattr__(self, "language", detect_language(" ".join(texts)))


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
class FailureReason:
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
    error: FailureReason | None = None
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

    def to_dict(self) -> dict[str, Any]:
        """The public JSON form of a result: a JSON-ready dict of this snapshot.

        It is the service's own shape (``status``, ``round_data_list`` with
        ``round``/``prompt``/``success``/``sample``, ``best_prompt``, ``best_round``,
        ``error``) plus ``task_id`` and ``max_rounds``, with every field the service
        sent that this SDK does not know kept as it came. The CLI's ``--json``
        output and the batch journal store results in this form;
        :meth:`from_dict` reads it back into an equal snapshot.
        """
        from ._convert import task_to_wire  # noqa: PLC0415 - the wire format lives there

        return task_to_wire(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskResult:
        """Read a snapshot back from :meth:`to_dict`'s form (or a service answer with ``task_id``).

        Raises :class:`~spo_async.RequestValidationError` naming the problem when
        ``data`` is not such a dict.
        """
        from ._convert import task_from_dict  # noqa: PLC0415

        return task_from_dict(data)
