"""How many requests per second one process can pass through a shared budget.

``python bench/shared_ceiling.py`` starts a throwaway PostgreSQL and redis-server on
loopback (tests/servers.py), then for each store runs 50 callers in one process
through ``RequestLimiter.shared(uri, rate=5000, start_rate=5000)`` for 4 s (no HTTP:
each caller takes a slot and reports a success at once) and prints the slots per
second and the size of the stored state. Every slot is one exchange with the store
under its lock, and the state carries two seconds of send and answer times, so both
figures bound the rate a shared budget can serve.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spo_async import RequestLimiter  # noqa: E402
from spo_async._shared_limiter import encode_state  # noqa: E402
from tests.servers import fresh_database, postgres_server, redis_server  # noqa: E402

SECONDS = 4.0
CALLERS = 50


async def ceiling(uri: str, label: str) -> None:
    """Print the slots per second one process got through the budget at ``uri``."""
    limiter = RequestLimiter.shared(uri, name=f"ceiling-{label}", rate=5000, start_rate=5000)
    limiter._bind(time.monotonic, asyncio.sleep, None)
    passed = 0

    async def caller(end: float) -> None:
        nonlocal passed
        while time.monotonic() < end:
            async with limiter.slot():
                pass
            limiter.on_success()
            passed += 1

    start = time.monotonic()
    await asyncio.gather(*(caller(start + SECONDS) for _ in range(CALLERS)))
    elapsed = time.monotonic() - start
    size = len(encode_state(limiter._state))
    print(f"| {label} | {passed / elapsed:.0f} | {size:,} |")
    await limiter._release()


def main() -> None:
    print("| store | slots per second | stored state, bytes |\n|---|---|---|")
    with postgres_server() as postgres, redis_server() as redis:
        asyncio.run(ceiling(fresh_database(postgres), "postgresql"))
        asyncio.run(ceiling(redis, "redis"))


if __name__ == "__main__":
    main()
