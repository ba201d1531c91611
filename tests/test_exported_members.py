"""The public surface is exactly spo_async.__all__, sorted, and every name in it is documented.

Besides the top level, three modules are public: :mod:`spo_async.polling`,
:mod:`spo_async.transport` and :mod:`spo_async.testing`. Everything else is private.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from types import ModuleType

import pytest
import spo_async
import spo_async.polling
import spo_async.testing
import spo_async.transport

#: The 1.0 top level, written out by hand: a change to it must change this list too.
EXPECTED_ALL = {
    # the clients and what they take
    "AsyncSPOClient",
    "SPOClient",
    "OptimizationRequest",
    "QAPair",
    "RetryPolicy",
    "RequestLimiter",
    # what they return
    "TaskResult",
    "Round",
    "Sample",
    "TaskStatus",
    "FailureReason",
    # outcomes and events
    "Outcome",
    "Succeeded",
    "Failed",
    "Errored",
    "OutcomeUnknown",
    "Event",
    "TaskSubmitted",
    "TaskQueued",
    "RoundCompleted",
    "TaskRetrying",
    "BatchProgress",
    "EventStream",
    "Batch",
    # the errors
    "SPOError",
    "ConfigurationError",
    "RequestValidationError",
    "ClientClosedError",
    "TransportError",
    "RequestTimeoutError",
    "ProtocolError",
    "APIError",
    "AuthenticationError",
    "InsufficientBalanceError",
    "QuotaExceededError",
    "RateLimitError",
    "NotFoundError",
    "InvalidRequestError",
    "TransientError",
    "SubmitOutcomeUnknownError",
    "TaskFailedError",
    "WaitTimeoutError",
    "JournalError",
    "__version__",
}

#: What each public submodule exports.
EXPECTED_SUBMODULES: dict[ModuleType, set[str]] = {
    spo_async.polling: {
        "AdaptiveSchedule",
        "ExponentialSchedule",
        "FixedSchedule",
        "PollMode",
        "PollSchedule",
        "PollState",
    },
    spo_async.transport: {"AiohttpTransport", "HTTPRequest", "HTTPResponse", "Transport"},
}

#: Names the 1.0 API removed from the top level (renamed, moved to a submodule, or gone).
REMOVED = [
    "API_KEY_ENV_VARS",
    "DEFAULT_BASE_URL",
    "DEFAULT_WAIT_TIMEOUT",
    "MAX_ROUNDS_LIMIT",
    "Progress",
    "TaskError",
    "RetryNotice",
    "TaskEvent",
    "TaskSucceeded",
    "TaskFailed",
    "TaskErrored",
    "TaskTimedOut",
    "TaskOutcomeUnknown",
    "EventCallback",
    "BatchInput",
    "BatchItem",
    "ScheduleLike",
    "FixedSchedule",
    "ExponentialSchedule",
    "AdaptiveSchedule",
    "PollState",
    "PollMode",
    "Transport",
    "AiohttpTransport",
    "HTTPRequest",
    "HTTPResponse",
]


def test_all_is_sorted_and_has_no_duplicates() -> None:
    """__all__ is kept sorted so that a diff shows every change to the public API."""
    assert spo_async.__all__ == sorted(spo_async.__all__)
    assert len(set(spo_async.__all__)) == len(spo_async.__all__)


def test_all_is_the_1_0_surface() -> None:
    """__all__ holds exactly the 44 names of the 1.0 API."""
    assert len(spo_async.__all__) == 44
    assert set(spo_async.__all__) == EXPECTED_ALL


def test_all_equals_the_public_names() -> None:
    """Every public attribute is in __all__ and every name in __all__ exists."""
    public = {
        name
        for name in dir(spo_async)
        if not name.startswith("_") and not inspect.ismodule(getattr(spo_async, name))
    }
    assert public | {"__version__"} == set(spo_async.__all__)


@pytest.mark.parametrize("name", REMOVED)
def test_removed_names_are_gone_from_the_top_level(name: str) -> None:
    """A name the 1.0 API removed or moved is not reachable from ``spo_async`` any more."""
    assert name not in spo_async.__all__
    assert not hasattr(spo_async, name)


@pytest.mark.parametrize(
    "module", list(EXPECTED_SUBMODULES), ids=[m.__name__ for m in EXPECTED_SUBMODULES]
)
def test_public_submodules_export_what_the_api_says(module: ModuleType) -> None:
    """``spo_async.polling`` and ``spo_async.transport`` export their names, sorted."""
    assert set(module.__all__) == EXPECTED_SUBMODULES[module]
    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        assert getattr(module, name).__module__.startswith("spo_async.")


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


@pytest.mark.parametrize(
    "package",
    [spo_async, spo_async.polling, spo_async.transport, spo_async.testing],
    ids=lambda m: m.__name__,
)
def test_public_items_are_documented(package: ModuleType) -> None:
    """Every public class and function says what it is for."""
    assert inspect.getdoc(package), f"{package.__name__} has no docstring"
    for name in package.__all__:
        value = getattr(package, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{package.__name__}.{name} has no docstring"


def test_testing_all_is_sorted() -> None:
    """The emulator's public surface is kept sorted too."""
    assert spo_async.testing.__all__ == sorted(spo_async.testing.__all__)


def test_importing_the_package_leaves_the_batch_layer_unloaded() -> None:
    """``import spo_async`` does not load the batch layer, the events, the adaptive schedule or
    tenacity.

    Their names load on first use: an event name loads the events only, ``Batch``
    the batch layer and its journal, and a client (whose default schedule is
    adaptive) the adaptive schedule. (SQLite itself cannot be checked here:
    coverage, measuring this subprocess, uses it.)
    """
    code = (
        "import sys, spo_async; "
        "lazy = ('spo_async._batch', 'spo_async._journal', 'spo_async._events', "
        "'spo_async._stream', 'spo_async._adaptive', 'tenacity'); "
        "assert not [m for m in lazy if m in sys.modules], 'loaded early'; "
        "assert spo_async.Succeeded.__name__ == 'Succeeded'; "
        "assert 'spo_async._events' in sys.modules; "
        "assert 'spo_async._batch' not in sys.modules, 'an event loaded the batch layer'; "
        "assert spo_async.Batch.__name__ == 'Batch'; "
        "assert 'spo_async._journal' in sys.modules; "
        "spo_async.AsyncSPOClient(api_key='sk-test'); "
        "assert 'spo_async._adaptive' in sys.modules; "
        "from spo_async.polling import AdaptiveSchedule; "
        "assert AdaptiveSchedule.__name__ == 'AdaptiveSchedule'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # noqa: S603


def test_an_unknown_attribute_is_an_attribute_error() -> None:
    """The lazy loader does not swallow typos."""
    with pytest.raises(AttributeError, match="no_such_name"):
        spo_async.no_such_name  # noqa: B018
