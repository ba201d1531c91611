"""A client used where it cannot work fails with a typed error that says why."""

from __future__ import annotations

import asyncio

import pytest
from spo_async import AsyncSPOClient, ClientClosedError, ConfigurationError
from spo_async.testing import ThreadedEmulator

from .conftest import make_request


def test_a_client_reused_by_a_second_asyncio_run_says_to_make_one_per_loop() -> None:
    """A second ``asyncio.run`` with one client gets a typed error, not aiohttp's RuntimeError."""
    with ThreadedEmulator() as emu:
        client = AsyncSPOClient(emu.api_key, base_url=emu.base_url)

        async def first() -> None:
            client.optimize_many([make_request()])  # binds the client to this loop

        async def second() -> str:
            return await client.submit(make_request())

        asyncio.run(first())
        with pytest.raises(ClientClosedError, match="event loop"):
            asyncio.run(second())
        assert emu.tasks_created == 0


def test_a_client_shared_between_two_running_loops_is_refused() -> None:
    """A client used from another thread's running loop fails clearly before sending."""
    with ThreadedEmulator() as emu:
        client = AsyncSPOClient(emu.api_key, base_url=emu.base_url)
        errors: list[BaseException] = []

        async def use() -> None:
            await client.submit(make_request())

        async def main() -> None:
            await use()
            other = asyncio.new_event_loop()
            try:
                await asyncio.to_thread(lambda: errors.append(_run_in(other, use())))
            finally:
                other.close()
            await client.aclose()

        asyncio.run(main())
        assert isinstance(errors[0], ConfigurationError)
        assert emu.tasks_created == 1


def _run_in(loop: asyncio.AbstractEventLoop, coroutine: object) -> BaseException:
    try:
        loop.run_until_complete(coroutine)  # type: ignore[arg-type]
    except BaseException as exc:
        return exc
    raise AssertionError("the second loop was allowed to use the client")
