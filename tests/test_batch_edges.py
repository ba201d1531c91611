"""A batch's edges: bad inputs, closed batches, refused submits, and stopping mid-queue."""

from __future__ import annotations

from pathlib import Path

import pytest
from spo_async import (
    ConfigurationError,
    Errored,
    InsufficientBalanceError,
    RequestLimiter,
    RequestValidationError,
)
from spo_async.testing import Emulator, Fault, FaultKind

from .conftest import ClientFactory, make_request, until


@pytest.mark.parametrize("requests", [5, "a string", b"bytes"], ids=["int", "str", "bytes"])
def test_input_that_is_not_a_collection_of_requests_is_refused(
    make_client: ClientFactory, requests: object
) -> None:
    """``optimize_many(5)`` names the argument at once, before any batch exists."""
    with pytest.raises(RequestValidationError, match="requests"):
        make_client().optimize_many(requests)  # type: ignore[arg-type]


def test_a_keys_function_that_raises_names_the_row(make_client: ClientFactory) -> None:
    """A bug in the caller's ``keys`` function is reported with the row it failed on."""

    def keys(request: object) -> str:
        raise KeyError("no such field")

    with pytest.raises(RequestValidationError, match=r"requests\[0\]"):
        make_client().optimize_many([make_request()], keys=keys)


async def test_a_closed_batch_cannot_be_started_again(make_client: ClientFactory) -> None:
    """A batch runs once: entering it after ``aclose`` is a clear error, not a silent no-op."""
    batch = make_client().optimize_many([make_request()])
    await batch.aclose()
    with pytest.raises(ConfigurationError, match="closed"):
        await batch.__aenter__()


async def test_a_refused_submit_is_an_errored_item_without_a_task_and_is_retried_next_run(
    make_client: ClientFactory, emu: Emulator, tmp_path: Path
) -> None:
    """Insufficient balance on one submit: that item is Errored (no task); a rerun submits it."""
    emu.inject(
        Fault(FaultKind.ERROR_ENVELOPE, endpoint="submit", err_code=-10004, status=402, times=1)
    )
    client = make_client()
    journal = tmp_path / "run.db"
    requests = {"a": make_request("a"), "b": make_request("b")}
    first = {o.key: o for o in await client.optimize_all(requests, journal=journal, concurrency=1)}
    refused = [o for o in first.values() if isinstance(o, Errored)]
    assert len(refused) == 1
    assert isinstance(refused[0].error, InsufficientBalanceError)
    assert refused[0].task_id is None
    again = await client.optimize_all(requests, journal=journal, concurrency=1)
    assert all(o.ok for o in again)
    assert emu.tasks_created == 2


async def test_closing_a_batch_whose_submits_wait_in_the_limiter_sends_none_of_them(
    make_client: ClientFactory, emu: Emulator, tmp_path: Path
) -> None:
    """Submits queued behind the rate limit never leave once the batch is closed."""
    client = make_client(limiter=RequestLimiter(rate=0.05))  # one request per 20 s
    requests = [make_request(f"p{i}") for i in range(3)]
    async with client.optimize_many(requests, concurrency=3, journal=tmp_path / "j.db") as batch:
        await until(lambda: emu.submits, what="the one submit the limiter lets out")
    assert len(emu.submits) == 1
    assert batch.progress.pending + batch.progress.running >= 2
