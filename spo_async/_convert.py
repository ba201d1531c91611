"""The one cattrs converter: the only place that knows the service's JSON shapes.

Rules it applies (the service's wire contract, as documented in the docs' reference):

* Names differ on the wire: ``round_data_list`` -> ``rounds``, ``round`` ->
  ``number``, ``sample`` -> ``samples``.
* Types are checked strictly: a ``"5"`` where an integer belongs, or ``1`` where
  a boolean belongs, is a contract breach, not something to coerce.
* Unknown keys never fail a parse; they are kept in each model's ``extra``.
* ``null`` and an absent key mean the same for every optional field.
* A non-empty ``error`` means the task failed whatever ``status`` says, so such
  a snapshot gets ``status=FAIL`` (``raw_status`` keeps the string that came).
* Rounds are ordered by number; a round listed twice with the same content is
  kept once, with different content it is a contract breach.
* A successful task that leaves ``best_round`` / ``best_prompt`` out gets them
  from its best round: the most recent successful one (SPO's own rule).
* An answer listing more than :data:`MAX_LISTED_ROUNDS` rounds or
  :data:`MAX_LISTED_SAMPLES` samples is refused before it is read: reading one
  costs the event loop microseconds, and no task comes near either number.

:func:`result_problem` then says whether a parsed snapshot can be believed (a
success must carry a best prompt, ...); the sans-I/O layer checks it on every
answer from the network.

:func:`make_converter` builds the converter (cattrs' ``preconf`` pattern); the
module keeps one instance, :data:`CONVERTER`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._errors import RequestValidationError
from ._models import FailureReason, OptimizationRequest, QAPair, Round, Sample, TaskResult
from ._state import TaskStatus, status_from_wire

__all__ = [
    "CONVERTER",
    "MAX_LISTED_ROUNDS",
    "MAX_LISTED_SAMPLES",
    "make_converter",
    "request_to_wire",
    "result_problem",
    "task_from_dict",
    "task_from_wire",
    "task_to_wire",
]

T = TypeVar("T")

#: The most rounds one answer may list: ten times the SDK's own ``MAX_ROUNDS_LIMIT``.
MAX_LISTED_ROUNDS = 1_000
#: The most samples one answer may list, all rounds together: the service samples at
#: most three questions per round, so a task of 1,000 rounds lists about 3,000.
MAX_LISTED_SAMPLES = 10_000

_SAMPLE_KEYS = frozenset({"question", "answer"})
_ROUND_KEYS = frozenset({"round", "prompt", "sample", "success"})
_TASK_KEYS = frozenset(
    {"task_id", "status", "best_prompt", "best_round", "round_data_list", "error", "max_rounds"}
)


def _strict(kind: type[T], accept: tuple[type, ...] | None = None) -> Callable[[Any, Any], T]:
    """A structure hook that checks the JSON type instead of coercing it."""
    accepted = accept or (kind,)

    def hook(value: Any, _: Any) -> T:
        if type(value) is kind:  # the usual case, decided by one identity test
            return value
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {kind.__name__}, got bool")
        if not isinstance(value, accepted):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return kind(value)  # type: ignore[call-arg]

    return hook


def _with_extra(
    cls: type[T], base: Callable[[Mapping[str, Any], Any], T], known: frozenset[str]
) -> Callable[[Any, Any], T]:
    """Wrap a generated hook so it refuses non-objects and keeps unknown keys."""

    def hook(value: Any, _: Any) -> T:
        # ``type(...) is dict`` first: JSON gives dicts, and an ABC check costs far more.
        if type(value) is not dict and not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        obj = base(value, cls)
        if not known.issuperset(value):
            obj = attrs.evolve(obj, extra={k: v for k, v in value.items() if k not in known})  # type: ignore[misc]
        return obj

    return hook


def _list_of(converter: cattrs.Converter, item: type[T]) -> Callable[[Any, Any], tuple[T, ...]]:
    """A hook for an optional JSON list: ``null`` or absent is empty; anything else breaks."""
    structure: Callable[[Any, Any], T] | None = None

    def hook(value: Any, _: Any) -> tuple[T, ...]:
        nonlocal structure
        if value is None:
            return ()
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        if structure is None:
            # Looked up once, on first use (every hook is registered by then), rather
            # than dispatched again for every item of every answer.
            structure = converter.get_structure_hook(item)
        return tuple([structure(v, item) for v in value])

    return hook


def _text_or_empty(value: Any, _: Any) -> str:
    """A string field where ``null`` means empty; any other type still breaks."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    return value


def _task_error(value: Any, _: Any) -> FailureReason | None:
    """The ``error`` field may be a string, an object, anything; empty means none."""
    if not value:
        return None
    if isinstance(value, str):
        return FailureReason(message=value, raw=value)
    if isinstance(value, Mapping):
        message = value.get("message")
        code = value.get("err_code")
        return FailureReason(
            message=message if isinstance(message, str) else None,
            err_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            raw=value,
        )
    return FailureReason(message=str(value), raw=value)


def _normalize_rounds(rounds: tuple[Round, ...]) -> tuple[Round, ...]:
    """Order rounds by number, drop exact repeats, refuse contradicting repeats."""
    by_number: dict[int, Round] = {}
    for r in rounds:
        seen = by_number.get(r.number)
        if seen is None:
            by_number[r.number] = r
        elif seen != r:
            raise ValueError(f"round {r.number} is listed twice with different content")
    if len(by_number) == len(rounds) and all(
        a.number < b.number for a, b in itertools.pairwise(rounds)
    ):
        return rounds
    return tuple(by_number[n] for n in sorted(by_number))


def _check_listing(rounds: Any) -> None:
    """Refuse a round list too long to read, before any of it is structured."""
    if not isinstance(rounds, list):
        return  # the generated hook reports the wrong type
    if len(rounds) > MAX_LISTED_ROUNDS:
        raise ValueError(f"{len(rounds)} rounds listed, more than {MAX_LISTED_ROUNDS}")
    samples = sum(
        len(r["sample"])
        for r in rounds
        if isinstance(r, Mapping) and isinstance(r.get("sample"), list)
    )
    if samples > MAX_LISTED_SAMPLES:
        raise ValueError(f"{samples} samples listed, more than {MAX_LISTED_SAMPLES}")


def result_problem(result: TaskResult) -> str | None:
    """Why ``result``, although every field has its type, cannot be believed; or ``None``.

    * ``best_round`` is never negative (rounds count from 1).
    * A success carries a best prompt (after the fill-in from its rounds): without
      one there is no result to hand over, and reporting success would hide that.
    * A success's ``best_round`` is one of the rounds it lists.

    A running task's ``best_round`` may point past the rounds shown so far, so only a
    success is held to the last two rules.
    """
    best_round = result.best_round
    if best_round is not None and best_round < 0:
        return f"best_round is negative ({best_round})"
    if result.status is not TaskStatus.SUCCESS:
        return None
    if result.best_prompt is None:
        return "the task succeeded without a best prompt (none sent, no successful round listed)"
    if best_round is not None and all(r.number != best_round for r in result.rounds):
        return f"the task succeeded with best_round {best_round}, which is not a listed round"
    return None


def make_converter() -> cattrs.Converter:
    """Build a converter that speaks the 302.AI SPO wire format (see the module docs)."""
    c = cattrs.Converter(forbid_extra_keys=False)
    c.register_structure_hook(str, _strict(str))
    c.register_structure_hook(int, _strict(int))
    c.register_structure_hook(bool, _strict(bool))
    c.register_structure_hook(float, _strict(float, (int, float)))

    sample_hook = make_dict_structure_fn(
        Sample,
        c,
        question=override(struct_hook=_text_or_empty),
        answer=override(struct_hook=_text_or_empty),
        extra=override(omit=True),
    )
    c.register_structure_hook(Sample, _with_extra(Sample, sample_hook, _SAMPLE_KEYS))
    c.register_structure_hook_func(lambda t: t == tuple[Sample, ...], _list_of(c, Sample))
    c.register_structure_hook(
        Round,
        _with_extra(
            Round,
            make_dict_structure_fn(
                Round,
                c,
                number=override(rename="round"),
                samples=override(rename="sample"),
                extra=override(omit=True),
            ),
            _ROUND_KEYS,
        ),
    )
    c.register_structure_hook_func(lambda t: t == tuple[Round, ...], _list_of(c, Round))
    c.register_structure_hook(FailureReason | None, _task_error)

    def _status(value: Any, _: Any) -> TaskStatus:
        return status_from_wire(c.structure(value, str))

    generated_task = make_dict_structure_fn(
        TaskResult,
        c,
        status=override(struct_hook=_status),
        raw_status=override(rename="status"),
        rounds=override(rename="round_data_list"),
        extra=override(omit=True),
    )

    def _task(value: Mapping[str, Any], cls: Any) -> TaskResult:
        _check_listing(value.get("round_data_list"))
        result = generated_task(value, cls)
        rounds = _normalize_rounds(result.rounds)
        status = TaskStatus.FAIL if result.error is not None else result.status
        best_round, best_prompt = result.best_round, result.best_prompt
        if status is TaskStatus.SUCCESS and (best_round is None or best_prompt is None):
            best = attrs.evolve(result, rounds=rounds).best
            if best is not None:
                best_round = best.number if best_round is None else best_round
                best_prompt = best.prompt if best_prompt is None else best_prompt
        if (rounds, status, best_round, best_prompt) != (
            result.rounds,
            result.status,
            result.best_round,
            result.best_prompt,
        ):
            result = attrs.evolve(
                result, rounds=rounds, status=status, best_round=best_round, best_prompt=best_prompt
            )
        return result

    c.register_structure_hook(TaskResult, _with_extra(TaskResult, _task, _TASK_KEYS))

    c.register_unstructure_hook(
        OptimizationRequest,
        make_dict_unstructure_fn(
            OptimizationRequest, c, requirements=override(omit_if_default=True)
        ),
    )
    c.register_unstructure_hook(QAPair, make_dict_unstructure_fn(QAPair, c))

    def _unstructure_sample(s: Sample) -> dict[str, Any]:
        return {**s.extra, "question": s.question, "answer": s.answer}

    def _unstructure_round(r: Round) -> dict[str, Any]:
        return {
            **r.extra,
            "round": r.number,
            "prompt": r.prompt,
            "success": r.success,
            "sample": [_unstructure_sample(s) for s in r.samples],
        }

    def _unstructure_task(t: TaskResult) -> dict[str, Any]:
        return {
            **t.extra,
            "task_id": t.task_id,
            "status": t.raw_status,
            "best_prompt": t.best_prompt,
            "best_round": t.best_round,
            "round_data_list": [_unstructure_round(r) for r in t.rounds],
            "error": t.error.raw if t.error is not None else None,
            "max_rounds": t.max_rounds,
        }

    c.register_unstructure_hook(Sample, _unstructure_sample)
    c.register_unstructure_hook(Round, _unstructure_round)
    c.register_unstructure_hook(TaskResult, _unstructure_task)
    return c


#: The SDK's one converter.
CONVERTER = make_converter()


def request_to_wire(request: OptimizationRequest) -> dict[str, Any]:
    """The submit body for ``request``, as a JSON-ready dict."""
    body: dict[str, Any] = CONVERTER.unstructure(request)
    return body


def task_from_wire(
    body: Mapping[str, Any], *, task_id: str, max_rounds: int | None = None
) -> TaskResult:
    """Parse a query answer (or a stored :func:`task_to_wire` dict) into a TaskResult.

    Raises cattrs' validation errors, ``TypeError`` or ``ValueError`` on a body that
    breaks the contract; :mod:`spo_async._sansio` turns those into ``ProtocolError``.
    """
    payload = dict(body)
    payload["task_id"] = task_id
    if max_rounds is not None or "max_rounds" not in payload:
        payload["max_rounds"] = max_rounds
    return CONVERTER.structure(payload, TaskResult)


def task_from_dict(data: Mapping[str, Any]) -> TaskResult:
    """:meth:`TaskResult.from_dict`: a stored snapshot back, or a typed error naming the problem."""
    if not isinstance(data, Mapping):
        raise RequestValidationError("data", f"expected a mapping, got {type(data).__name__}")
    task_id = data.get("task_id")
    if not isinstance(task_id, str) or not task_id:
        raise RequestValidationError("task_id", "a stored result needs its task_id string")
    max_rounds = data.get("max_rounds")
    try:
        return task_from_wire(data, task_id=task_id, max_rounds=max_rounds)
    except cattrs.BaseValidationError as exc:
        raise RequestValidationError("data", "; ".join(cattrs.transform_error(exc))) from None
    except (TypeError, ValueError) as exc:
        raise RequestValidationError("data", str(exc)) from None


def task_to_wire(result: TaskResult) -> dict[str, Any]:
    """A JSON-ready dict of ``result`` in the wire's names, plus ``task_id`` and ``max_rounds``."""
    body: dict[str, Any] = CONVERTER.unstructure(result)
    return body
