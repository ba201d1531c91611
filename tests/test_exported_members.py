"""The public surface is exactly spo_async.__all__, sorted, and every name in it is documented."""

from __future__ import annotations

import inspect

import spo_async
import spo_async.testing


def test_all_is_sorted_and_has_no_duplicates() -> None:
    """__all__ is kept sorted so that a diff shows every change to the public API."""
    assert spo_async.__all__ == sorted(spo_async.__all__)
    assert len(set(spo_async.__all__)) == len(spo_async.__all__)


def test_all_equals_the_public_names() -> None:
    """Every public attribute is in __all__ and every name in __all__ exists."""
    public = {
        name
        for name, value in vars(spo_async).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public | {"__version__"} == set(spo_async.__all__)


def test_the_issue_names_are_public() -> None:
    """The names users were promised are there."""
    promised = {
        "AsyncSPOClient",
        "OptimizationRequest",
        "QAPair",
        "TaskResult",
        "Round",
        "TaskStatus",
        "SPOError",
    }
    assert promised <= set(spo_async.__all__)


def test_public_items_are_documented() -> None:
    """Every public class and function says what it is for."""
    for package in (spo_async, spo_async.testing):
        for name in package.__all__:
            value = getattr(package, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert inspect.getdoc(value), f"{package.__name__}.{name} has no docstring"


def test_testing_all_is_sorted() -> None:
    """The emulator's public surface is kept sorted too."""
    assert spo_async.testing.__all__ == sorted(spo_async.testing.__all__)
