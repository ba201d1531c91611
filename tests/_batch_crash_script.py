"""Run a journaled batch against an emulator; the crash test kills this process midway.

Usage: python tests/_batch_crash_script.py BASE_URL API_KEY JOURNAL COUNT CONCURRENCY
"""

from __future__ import annotations

import asyncio
import sys

from spo_async import AsyncSPOClient, OptimizationRequest, QAPair, RetryPolicy
from spo_async.polling import FixedSchedule


def batch_requests(count: int) -> dict[str, OptimizationRequest]:
    """The crash test's batch: one distinct prompt per key."""
    return {
        f"item-{i}": OptimizationRequest(
            prompt=f"crash prompt {i}",
            qa=[QAPair("Good morning", "[thoughts][reply]")],
            model="claude-3-5-sonnet-20240620",
            max_rounds=3,
        )
        for i in range(count)
    }


async def main(base_url: str, api_key: str, journal: str, count: int, concurrency: int) -> None:
    async with AsyncSPOClient(
        api_key=api_key,
        base_url=base_url,
        retry=RetryPolicy.no_wait(),
        schedule=FixedSchedule(interval=0.005),
    ) as client:
        outcomes = await client.optimize_all(
            batch_requests(count), journal=journal, concurrency=concurrency
        )
    print(f"finished {len(outcomes)}", flush=True)


if __name__ == "__main__":
    url, key, path, n, bound = sys.argv[1:6]
    asyncio.run(main(url, key, path, int(n), int(bound)))
