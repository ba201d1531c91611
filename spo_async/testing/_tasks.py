"""The simulation of one SPO task, worked out in full at submit time and read at any moment.

The hosted service runs MetaGPT's SPO loop (spec §6): round 1 runs the original prompt,
every later round writes a new prompt from the best one so far, runs it on up to three
sampled questions and asks four judges, each of which may see the two answer sets
swapped, whether the new round beats the best; a strict majority (3 or 4 of 4) wins.

Nothing here touches the network or an event loop, and no background task drives the
simulation. :class:`SimulatedTask` draws every random choice (prompts, samples, votes,
jittered durations) from a seeded :class:`random.Random` once, when it is created, and
:meth:`SimulatedTask.snapshot` answers "what would ``GET /tasks/{id}`` say at time
*now*?" with a bisect over the precomputed round finish times. That keeps a ``GET``
cheap enough to serve ten thousand concurrent tasks, and makes every run reproducible:
the same seed and request always give the same rounds.

The rewritten prompts and the sample answers are written in the request's ``language``
(English, Chinese or Japanese; Chinese when it is left out, as on the service; English
with a note naming the code for any other), so a client that sends the wrong language
sees it in the results. For a given task seed the language changes only the words,
never a draw: samples, votes and timings are the same whatever it is.
"""

from __future__ import annotations

import bisect
import json
import random
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

__all__ = [
    "DEFAULT_EXECUTION_ERROR",
    "DEFAULT_TASK_ERROR",
    "SimulatedRound",
    "SimulatedTask",
    "SimulationSettings",
    "TaskOutcome",
    "Vote",
]

DEFAULT_TASK_ERROR = "Optimization failed: the optimizer model returned an error"
"""The ``error`` a failing task reports when its :class:`TaskOutcome` names none."""

DEFAULT_EXECUTION_ERROR = "Error code: 500 - {'error': {'message': 'upstream model timed out'}}"
"""The answer text stored when a scripted execution call "raises" (spec §6.2)."""

SERVICE_DEFAULT_LANGUAGE = "zh"
"""The ``language`` the service assumes when a submit leaves it out (spec §2.1)."""


@attrs.frozen
class _Phrasing:
    """How the fake optimizer and executor write in one language.

    ``words`` are the 24 qualities a rewritten prompt asks for, index for index the same
    in every language, so one seed draws the same choices whatever the language. The
    templates' ``{note}`` is where English says that the request named a language the
    emulator does not write.
    """

    words: tuple[str, ...]
    instruction: str  # str.format: number, best_round, words, note
    answer: str  # str.format: digest, question, note
    separator: str


_ENGLISH = _Phrasing(
    words=(
        "concise", "vivid", "warm", "precise", "playful", "structured", "empathetic",
        "direct", "stepwise", "grounded", "curious", "formal", "friendly", "specific",
        "brief", "detailed", "honest", "creative", "calm", "confident", "clear", "polite",
        "lively", "careful",
    ),
    instruction="- round {number} (from round {best_round}{note}): be {words}.",
    answer="[answer {digest}{note}] {question}",
    separator=", ",
)  # fmt: skip

_PHRASINGS = {
    "en": _ENGLISH,
    "zh": _Phrasing(
        words=(
            "简洁", "生动", "温暖", "精确", "俏皮", "有条理", "有同理心", "直接", "循序渐进",
            "有依据", "好奇", "正式", "友好", "具体", "简短", "详细", "诚实", "有创意", "冷静",
            "自信", "清晰", "礼貌", "活泼", "细心",
        ),
        instruction="- 第 {number} 轮（基于第 {best_round} 轮）：请做到{words}。",  # noqa: RUF001
        answer="[模拟回答 {digest}] {question}",
        separator="、",
    ),
    "ja": _Phrasing(
        words=(
            "簡潔さ", "生き生きとした表現", "温かさ", "正確さ", "遊び心", "構成", "共感",
            "率直さ", "段階的な説明", "根拠", "好奇心", "丁寧な言葉遣い", "親しみやすさ",
            "具体性", "短さ", "詳しさ", "誠実さ", "創造性", "落ち着き", "自信", "明快さ",
            "礼儀正しさ", "明るさ", "慎重さ",
        ),
        instruction="- 第{number}ラウンド（第{best_round}ラウンドから）：{words}を心がける。",  # noqa: RUF001
        answer="[模擬回答 {digest}] {question}",
        separator="、",
    ),
}  # fmt: skip

# Spellings of the languages the emulator writes; anything else is answered in English.
_ALIASES = {
    "en": "en", "english": "en",
    "zh": "zh", "cn": "zh", "chinese": "zh", "中文": "zh",
    "ja": "ja", "jp": "ja", "japanese": "ja", "日本語": "ja",
}  # fmt: skip
_WORD_COUNT = len(_ENGLISH.words)


def _phrasing(language: object) -> tuple[_Phrasing, str]:
    """Return how to write for a request's ``language``, and the note an unknown one adds.

    A missing ``language`` is the service's default (Chinese). A code the emulator does
    not speak falls back to English and says so in every text it writes, so a client
    sending a wrong or unresolved code (``"auto"``, ``"french"``) can see it did.
    """
    if language is None:
        language = SERVICE_DEFAULT_LANGUAGE
    text = str(language).strip()
    primary = text.lower().replace("_", "-").split("-", 1)[0]
    known = _ALIASES.get(primary)
    if known is not None:
        return _PHRASINGS[known], ""
    return _ENGLISH, f"; language {text!r} is not emulated, written in English"


_QUEUE, _PROCESSING, _SUCCESS, _FAIL = range(4)
_STATUS_NAMES = ("queue", "processing", "success")
_JUDGES = 4


def _round_set(rounds: Iterable[int]) -> frozenset[int]:
    """Accept any iterable of round numbers (a set literal, a range) as a frozenset."""
    return frozenset(rounds)


@attrs.frozen
class TaskOutcome:
    """A script for one task's fate, for tests that need more than the default success.

    By default a task succeeds after ``max_rounds`` rounds, at the pace the emulator's
    config sets. Hand an outcome to :meth:`Emulator.script_next` or return one from
    ``EmulatorConfig.outcome_for`` to make a task fail partway, carry an empty prompt or
    an execution error, or run at its own pace.

    Attributes:
        fail_at_round: the task fails while running this round: rounds before it are
            reported, then the status turns to ``fail_status`` when this round would have
            finished. ``1`` fails before any round is reported. ``None``, or a value above
            ``max_rounds``, never fails.
        error: the ``error`` value of the failed task: a string or an object such as
            ``{"err_code": -1024, "message": "..."}``.
        fail_status: the status a failed task reports. ``"fail"`` is the documented one;
            ``"processing"`` exercises the rule that a truthy ``error`` means failure
            whatever the status says (spec §3.3).
        empty_prompt_rounds: rounds (2 and up) whose optimizer "returned no ``<prompt>``
            tag", so their ``prompt`` is ``""``.
        execution_error_rounds: rounds whose first sample's answer is ``execution_error``,
            as when an execute call raises (spec §6.2).
        execution_error: the text stored as that answer.
        queue_seconds: this task's time in ``queue``; ``None`` uses the config's.
        round_seconds: one duration for every round (round 1 still takes the config's
            first-round fraction of it), or one duration per round from round 1 (the last
            entry repeats). ``None`` uses the config's. Jitter and time scale still apply.
    """

    fail_at_round: int | None = None
    error: str | Mapping[str, Any] | None = DEFAULT_TASK_ERROR
    fail_status: str = "fail"
    empty_prompt_rounds: frozenset[int] = attrs.field(default=frozenset(), converter=_round_set)
    execution_error_rounds: frozenset[int] = attrs.field(default=frozenset(), converter=_round_set)
    execution_error: str = DEFAULT_EXECUTION_ERROR
    queue_seconds: float | None = None
    round_seconds: float | tuple[float, ...] | None = None


@attrs.frozen
class SimulationSettings:
    """The timing and reporting knobs every task shares, taken from ``EmulatorConfig``.

    Durations are in seconds of the emulator's clock and are multiplied by
    ``time_scale``; ``jitter`` is relative (``0.3`` draws each duration from ±30 %).
    """

    queue_seconds: float = 0.0
    round_seconds: float = 0.05
    first_round_fraction: float = 1 / 3
    jitter: float = 0.0
    time_scale: float = 1.0
    win_probability: float = 0.5
    expose_best_while_processing: bool = True
    show_running_round: bool = False


@attrs.frozen
class Vote:
    """One judge call of an SPO round: whether the slots were swapped and what it chose.

    Unswapped, slot A holds the best round's answers and slot B the new round's; the
    judge's choice counts for the new round once the swap is undone.
    """

    swapped: bool
    choice: Literal["A", "B"]

    @property
    def new_round_won(self) -> bool:
        """Whether this vote went to the new round after undoing the A/B swap."""
        return (self.choice == "B") != self.swapped


# Every judge call is a fair A/B swap and a preference for the new round, so only four
# votes exist; keyed by (swapped, prefers_new). The new round sits in slot A when swapped.
_VOTES = {
    (swapped, prefers_new): Vote(swapped, "A" if prefers_new == swapped else "B")
    for swapped in (False, True)
    for prefers_new in (False, True)
}


@attrs.frozen
class SimulatedRound:
    """The true, precomputed content of one round, with the votes that decided it.

    ``samples`` are ``(question, answer)`` pairs; ``votes`` is empty for round 1, which
    is never judged. ``finishes_at`` is the clock time at which the round is reported.
    """

    number: int
    prompt: str
    success: bool
    samples: tuple[tuple[str, str], ...]
    votes: tuple[Vote, ...]
    finishes_at: float

    @property
    def wins(self) -> int:
        """How many of the four judges preferred this round's answers."""
        return sum(vote.new_round_won for vote in self.votes)

    def to_wire(self) -> dict[str, Any]:
        """Return the round as the service reports it in ``round_data_list``."""
        return {
            "round": self.number,
            "prompt": self.prompt,
            "success": self.success,
            "sample": [{"question": q, "answer": a} for q, a in self.samples],
        }


def _answer(prompt: str, question: str, phrasing: _Phrasing, note: str) -> str:
    """Return the deterministic answer the fake executor gives ``question`` under ``prompt``."""
    digest = zlib.crc32(f"{prompt}\x1f{question}".encode("utf-8", "surrogatepass"))
    return phrasing.answer.format(digest=f"{digest:08x}", question=question, note=note)


def _next_prompt(
    best_prompt: str,
    number: int,
    best_round: int,
    picks: Sequence[int],
    *,
    phrasing: _Phrasing,
    note: str,
) -> str:
    """Return round ``number``'s prompt, written by the fake optimizer from the best one."""
    words = phrasing.separator.join(phrasing.words[i] for i in picks)
    line = phrasing.instruction.format(number=number, best_round=best_round, words=words, note=note)
    return f"{best_prompt}\n{line}"


class SimulatedTask:
    """One submitted task: its whole timeline, and the wire body it reports at any time.

    Built once per submit by the emulator; afterwards only read. ``rounds`` holds every
    round the task will run (for a task scripted to fail, the rounds it completes plus
    the one it fails in), so a test can compare what a client saw with the truth.
    """

    __slots__ = (
        "_best_after",
        "_cache_body",
        "_cache_key",
        "_fail_at",
        "_finish_times",
        "_settings",
        "_wire_rounds",
        "ends_at",
        "outcome",
        "queue_ends_at",
        "request",
        "rounds",
        "seed",
        "submitted_at",
        "task_id",
    )

    def __init__(
        self,
        task_id: str,
        request: Mapping[str, Any],
        *,
        seed: int,
        submitted_at: float,
        settings: SimulationSettings,
        outcome: TaskOutcome | None = None,
    ) -> None:
        self.task_id = task_id
        self.request = request
        self.seed = seed
        self.submitted_at = submitted_at
        self.outcome = outcome = outcome if outcome is not None else TaskOutcome()
        self._settings = settings
        max_rounds: int = request["max_rounds"]
        fail_at = outcome.fail_at_round
        self._fail_at = fail_at if fail_at is not None and fail_at <= max_rounds else None
        planned = max_rounds if self._fail_at is None else self._fail_at
        timing = random.Random(seed ^ 0x5EED7135)
        self.queue_ends_at = submitted_at + self._duration(timing, outcome.queue_seconds, None)
        self.rounds = self._plan(random.Random(seed), timing, planned)
        self.ends_at = self.rounds[-1].finishes_at
        reported = self.rounds if self._fail_at is None else self.rounds[:-1]
        self._finish_times = [r.finishes_at for r in reported]
        self._wire_rounds = [r.to_wire() for r in reported]
        best: list[SimulatedRound | None] = [None]
        for r in reported:
            best.append(r if r.success else best[-1])
        self._best_after = best
        self._cache_key = (-1, -1)
        self._cache_body = b""

    def _duration(self, timing: random.Random, value: float | None, number: int | None) -> float:
        """Return one jittered, scaled duration: the queue's (``number`` None) or a round's."""
        s = self._settings
        if number is None:
            base = s.queue_seconds if value is None else value
        else:
            per_round = self.outcome.round_seconds
            if isinstance(per_round, tuple):
                base = per_round[min(number, len(per_round)) - 1]
            else:
                base = s.round_seconds if per_round is None else per_round
                if number == 1:
                    base *= s.first_round_fraction
        if s.jitter:
            base *= timing.uniform(1 - s.jitter, 1 + s.jitter)
        return max(0.0, base) * s.time_scale

    def _plan(
        self, rng: random.Random, timing: random.Random, planned: int
    ) -> tuple[SimulatedRound, ...]:
        """Draw every round's prompt, samples and votes, and when each one finishes."""
        qa = [(item["question"], item["answer"]) for item in self.request["qa"]]
        k = min(3, len(qa))
        outcome = self.outcome
        rounds: list[SimulatedRound] = []
        best_prompt: str = self.request["prompt"]
        best_round = 1
        finished = self.queue_ends_at
        phrasing, note = _phrasing(self.request.get("language"))
        word_indices = range(_WORD_COUNT)
        for number in range(1, planned + 1):
            picks = rng.choices(word_indices, k=3)
            votes: tuple[Vote, ...] = ()
            if number == 1:
                prompt, success = best_prompt, True
            else:
                prompt = _next_prompt(
                    best_prompt, number, best_round, picks, phrasing=phrasing, note=note
                )
                if number in outcome.empty_prompt_rounds:
                    prompt = ""
                p = self._settings.win_probability
                votes = tuple(_VOTES[rng.random() < 0.5, rng.random() < p] for _ in range(_JUDGES))
                success = sum(v.new_round_won for v in votes) * 2 > _JUDGES
            picked = rng.sample(qa, k)
            samples = [(q, _answer(prompt, q, phrasing, note)) for q, _ in picked]
            if number in outcome.execution_error_rounds and samples:
                samples[0] = (samples[0][0], outcome.execution_error)
            finished += self._duration(timing, None, number)
            rounds.append(SimulatedRound(number, prompt, success, tuple(samples), votes, finished))
            if success:
                best_prompt, best_round = prompt, number
        return tuple(rounds)

    @property
    def max_rounds(self) -> int:
        """The ``max_rounds`` the task was submitted with."""
        return int(self.request["max_rounds"])

    @property
    def will_fail(self) -> bool:
        """Whether the task ends in failure rather than success."""
        return self._fail_at is not None

    def _phase(self, now: float) -> tuple[int, int]:
        """Return ``(phase, rounds reported)`` at ``now``: the key of the cached body."""
        if now < self.queue_ends_at:
            return _QUEUE, 0
        done = bisect.bisect_right(self._finish_times, now)
        if now >= self.ends_at:
            return (_FAIL if self._fail_at is not None else _SUCCESS), done
        return _PROCESSING, done

    def status(self, now: float) -> str:
        """Return the status the task reports at ``now``."""
        phase, _ = self._phase(now)
        return self.outcome.fail_status if phase == _FAIL else _STATUS_NAMES[phase]

    def rounds_done(self, now: float) -> int:
        """Return how many rounds the task reports at ``now``."""
        return self._phase(now)[1]

    def body(self, now: float) -> bytes:
        """Return the JSON body of ``GET /302/prompt/spo/tasks/{id}`` at ``now``.

        The body changes only when the phase or the number of rounds does, so the last one
        is cached: most polls cost one bisect and no serialization.
        """
        key = self._phase(now)
        if key != self._cache_key:
            self._cache_body = json.dumps(self._wire(*key), ensure_ascii=False).encode()
            self._cache_key = key
        return self._cache_body

    def snapshot(self, now: float) -> dict[str, Any]:
        """Return the body at ``now`` as a fresh dict, exactly as a client would decode it."""
        result: dict[str, Any] = json.loads(self.body(now))
        return result

    def _wire(self, phase: int, done: int) -> dict[str, Any]:
        """Build the wire body for a phase and a number of reported rounds."""
        rounds = self._wire_rounds[:done]
        if self._settings.show_running_round and phase == _PROCESSING and done < len(self.rounds):
            running = self.rounds[done]
            rounds.append(
                {"round": running.number, "prompt": running.prompt, "success": False, "sample": []}
            )
        best = self._best_after[done]
        if phase == _PROCESSING and not self._settings.expose_best_while_processing:
            best = None
        failed = phase == _FAIL
        return {
            "status": self.outcome.fail_status if failed else _STATUS_NAMES[phase],
            "best_prompt": None if best is None else best.prompt,
            "best_round": None if best is None else best.number,
            "round_data_list": rounds,
            "error": self.outcome.error if failed else None,
        }
