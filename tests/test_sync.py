"""The blocking client: every call, its views, its errors, and nothing left behind."""

from __future__ import annotations

import gc
import threading
import warnings
from collections.abc import Iterator

import pytest
from spo_async import (
    ClientClosedError,
    ConfigurationError,
    NotFoundError,
    SPOClient,
    TaskFailedError,
    WaitTimeoutError,
)
from spo_async.polling import FixedSchedule, PollState
from spo_async.testing import EmulatorConfig, TaskOutcome, ThreadedEmulator

from .conftest import make_request


@pytest.fixture
def emu() -> Iterator[ThreadedEmulator]:
    """An emulator in a thread of its own, fast enough for whole tasks."""
    with ThreadedEmulator(EmulatorConfig(round_seconds=0.004, seed=3)) as emulator:
        yield emulator


def client_for(emu: ThreadedEmulator) -> SPOClient:
    return SPOClient(emu.api_key, base_url=emu.base_url, schedule=FixedSchedule(interval=0.002))


def test_submit_then_wait_then_read(emu: ThreadedEmulator) -> None:
    """``submit``, ``wait_for_result`` and ``get_task`` block and return what the async ones do."""
    with client_for(emu) as client:
        task_id = client.submit(make_request())
        result = client.wait_for_result(task_id, timeout=30)
        assert result.succeeded
        assert client.get_task(task_id).succeeded


def test_a_view_keeps_its_options_and_closing_it_closes_the_client(emu: ThreadedEmulator) -> None:
    """``with_options`` on the sync client is a view of the same loop and pool."""
    client = client_for(emu)
    patient = client.with_options(timeout=60)
    assert patient.optimize(make_request()).succeeded
    assert "SPOClient" in repr(patient)
    patient.close()
    assert client.closed
    with pytest.raises(ClientClosedError):
        client.submit(make_request())


def test_errors_arrive_as_they_would_from_the_async_client(emu: ThreadedEmulator) -> None:
    """A failed task, a timeout and an unknown id raise the same typed errors."""
    emu.script_next(TaskOutcome(fail_at_round=2))
    with client_for(emu) as client:
        with pytest.raises(TaskFailedError):
            client.optimize(make_request())
        with pytest.raises(WaitTimeoutError):
            client.optimize(make_request(max_rounds=50), timeout=0.05)
        with pytest.raises(NotFoundError):
            client.get_task("spo-no-such-task")
        with pytest.raises(ConfigurationError):
            client.optimize(make_request(), timeout=-1)


def test_a_bad_setting_leaves_no_thread_behind() -> None:
    """A constructor that refuses its settings stops the loop thread it started."""
    before = set(threading.enumerate())
    with pytest.raises(ConfigurationError):
        SPOClient("sk-test", request_timeout=0)
    assert set(threading.enumerate()) <= before


def test_a_forgotten_client_warns_once_and_stops_its_thread(emu: ThreadedEmulator) -> None:
    """Dropped without ``close``: one ResourceWarning, and the loop thread ends."""
    before = set(threading.enumerate())
    client = client_for(emu)
    client.get_task(client.submit(make_request()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del client
        gc.collect()
    unclosed = [w for w in caught if "unclosed" in str(w.message) and "SPOClient" in str(w.message)]
    assert len(unclosed) == 1
    assert set(threading.enumerate()) <= before


def test_poll_mode_reaches_the_wait_from_each_blocking_call(emu: ThreadedEmulator) -> None:
    """``poll_mode`` of the sync calls is the async client's, passed through unchanged."""
    modes: list[str] = []

    def schedule(state: PollState) -> float:
        modes.append(state.mode.value)
        return 0.002

    with SPOClient(emu.api_key, base_url=emu.base_url, schedule=schedule) as client:
        watched: list[object] = []
        result = client.optimize(make_request(), on_event=watched.append, poll_mode="completion")
        assert result.succeeded
        assert set(modes) == {"completion"}
        modes.clear()
        task_id = client.submit(make_request())
        assert client.wait_for_result(task_id, poll_mode="progress").succeeded
        assert set(modes) == {"progress"}
        modes.clear()
        outcomes = client.optimize_all([make_request()], poll_mode="progress")
        assert [o.ok for o in outcomes] == [True]
        assert set(modes) == {"progress"}
