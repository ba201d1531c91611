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
        for name in dir(spo_async)
        if not name.startswith("_") and not inspect.ismodule(getattr(spo_async, name))
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


def test_importing_the_package_leaves_the_batch_layer_unloaded() -> None:
    """``import spo_async`` does not load the batch layer, the adaptive schedule or tenacity.

    Their names load on first use: a batch name, ``AdaptiveSchedule``, or a client
    (whose default schedule is adaptive). (SQLite itself cannot be checked here:
    coverage, measuring this subprocess, uses it.)
    """
    import subprocess
    import sys

    code = (
        "import sys, spo_async; "
        "lazy = ('spo_async._batch', 'spo_async._journal', 'spo_async._events', "
        "'spo_async._stream', 'spo_async._adaptive', 'tenacity'); "
        "assert not [m for m in lazy if m in sys.modules], 'loaded early'; "
        "assert spo_async.Succeeded.__name__ == 'Succeeded'; "
        "assert 'spo_async._journal' in sys.modules; "
        "spo_async.AsyncSPOClient(api_key='sk-test'); "
        "assert 'spo_async._adaptive' in sys.modules; "
        "assert spo_async.AdaptiveSchedule.__name__ == 'AdaptiveSchedule'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # noqa: S603


def test_an_unknown_attribute_is_an_attribute_error() -> None:
    """The lazy loader does not swallow typos."""
    import pytest

    with pytest.raises(AttributeError, match="no_such_name"):
        spo_async.no_such_name  # noqa: B018
