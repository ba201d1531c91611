"""Pickling: every SDK error crosses a process boundary (process pools, multiprocessing
queues, caches) with its attributes, whatever its ``__init__`` takes.

The classes are found, not listed: every SPOError subclass defined in
``spo_async._errors`` (and the SDK's other modules) is built from its ``__init__``
signature, so a class added or renamed later is covered without touching this file.
"""

from __future__ import annotations

import copy
import inspect
import pickle
import types
import typing
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import pytest
import spo_async
from spo_async import _errors
from spo_async._models import FailureReason, OptimizationRequest, QAPair, Round, TaskResult
from spo_async._state import TaskStatus


def error_classes() -> list[type[_errors.SPOError]]:
    """Every SPOError subclass the SDK defines (the base included), found by walking."""
    import spo_async._polling  # noqa: F401 - defines a private subclass

    found: list[type[_errors.SPOError]] = []
    pending: list[type[_errors.SPOError]] = [_errors.SPOError]
    while pending:
        cls = pending.pop()
        if cls not in found and cls.__module__.startswith("spo_async"):
            found.append(cls)
            pending += cls.__subclasses__()
    return sorted(found, key=lambda c: c.__qualname__)


RESULT = TaskResult(
    "spo-7",
    TaskStatus.FAIL,
    "fail",
    rounds=(Round(1, "p", success=True),),
    error=FailureReason("overloaded", -1024, raw={"err_code": -1024}),
    max_rounds=3,
    extra={"tokens": 12},
)
REQUEST = OptimizationRequest(prompt="p", qa=[QAPair("q", "a")], model="gpt-4o")

#: A sample value for each annotation an error's __init__ may use.
SAMPLES: dict[Any, Any] = {
    str: "text",
    int: 402,
    float: 2.5,
    bool: False,
    bytes: b"<html>502</html>",
    TaskResult: RESULT,
    OptimizationRequest: REQUEST,
    BaseException: _errors.TransportError("refused", method="POST", path="/submit"),
    Path: Path("batch.journal"),
}


def sample_for(annotation: Any, name: str) -> Any:
    """A value of the annotated type (the first usable member of a union, None last)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        for member in members:
            try:
                return sample_for(member, name)
            except LookupError:
                continue
        return None
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        return {"en": "message", "cn": "消息"}
    if origin is PathLike or annotation is PathLike:
        return Path("batch.journal")
    for kind, value in SAMPLES.items():
        if annotation is kind or (isinstance(annotation, type) and issubclass(annotation, kind)):
            return value
    raise LookupError(f"teach this test to build a {annotation!r} for parameter {name!r}")


def build(cls: type[_errors.SPOError]) -> _errors.SPOError:
    """An instance of ``cls``, every parameter of its __init__ given a sample value."""
    namespace = {**vars(_errors), **vars(spo_async), "TaskResult": TaskResult}
    namespace |= {"OptimizationRequest": OptimizationRequest, "Path": Path}
    hints = typing.get_type_hints(cls.__init__, globalns=namespace)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        value = sample_for(hints.get(name, str), name)
        if parameter.kind is parameter.KEYWORD_ONLY:
            kwargs[name] = value
        else:
            args.append(value)
    if cls.__init__ is BaseException.__init__:
        args = ["what went wrong"]
    return cls(*args, **kwargs)


def same(a: Any, b: Any) -> bool:
    """Equal values; exceptions compare by type, args and attributes."""
    if isinstance(a, BaseException):
        return (
            type(a) is type(b)
            and a.args == b.args
            and vars(a).keys() == vars(b).keys()
            and all(same(v, vars(b)[k]) for k, v in vars(a).items())
        )
    return bool(a == b)


@pytest.mark.parametrize("cls", [pytest.param(c, id=c.__qualname__) for c in error_classes()])
def test_every_error_survives_pickle_and_copy_with_its_attributes(
    cls: type[_errors.SPOError],
) -> None:
    """args, attributes, notes and task_id come back; so do str and the class."""
    error = build(cls)
    error.task_id = "spo-42"
    error.add_note("task_id: spo-42 (the task may still be running)")
    for again in (
        pickle.loads(pickle.dumps(error)),  # noqa: S301 - our own bytes
        pickle.loads(pickle.dumps(error, protocol=2)),  # noqa: S301
        copy.copy(error),
        copy.deepcopy(error),
    ):
        assert type(again) is cls
        assert str(again) == str(error)
        assert again.args == error.args
        assert again.__notes__ == error.__notes__
        assert again.task_id == "spo-42"
        assert same(again, error)


def test_the_walk_finds_the_errors_with_their_own_init() -> None:
    """The classes that used to fail (a custom __init__) are among those checked."""
    names = {cls.__name__ for cls in error_classes()}
    assert len(names) >= 20
    custom = {c.__name__ for c in error_classes() if "__init__" in vars(c)}
    assert custom <= names
    assert len(custom) >= 4
