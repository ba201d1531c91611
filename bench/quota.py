"""One client against a service quota it does not know: how much of it is used, how many 429s.

``python bench/quota.py`` starts the emulator in quota mode (``--quota`` requests per
second per API key, a moving window of one second, 429 with ``Retry-After`` past it)
on loopback, and one :class:`~spo_async.AsyncSPOClient` with its default settings
(its default limiter finds the quota) submits ``--tasks`` tasks at once and waits for
each (``submit`` then ``wait_for_result``). ``--noise 0.05`` also answers 5 % of the
requests the quota let through with a 429 (``Retry-After: 1``), the way a gateway
refuses now and then for reasons of its own.

It prints one Markdown table row: the share of the quota used (requests the quota
admitted, over quota x the time from the first request to the last), the share of
requests answered 429 (by the quota, and at random), what the limiter learnt, how
many load signals it saw, the lowest budget it had after the first five seconds
(``inf``: no budget, the limiter of before), and with ``--timeline`` the requests
admitted in each second.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time

from spo_async import AsyncSPOClient, OptimizationRequest, QAPair, SPOError
from spo_async.testing import Emulator, EmulatorConfig, Fault, FaultKind

QA = [QAPair("Good morning", "[thoughts][reply]"), QAPair("Do you love me?", "[thoughts][reply]")]
MODEL = "claude-3-5-sonnet-20240620"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quota", type=float, default=40.0, help="requests per second")
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per task")
    parser.add_argument("--round-seconds", type=float, default=1.0)
    parser.add_argument("--noise", type=float, default=0.0, help="share of random 429s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeline", action="store_true")
    args = parser.parse_args()

    config = EmulatorConfig(
        quota_per_second=args.quota, round_seconds=args.round_seconds, seed=args.seed
    )
    async with Emulator(config) as emu:
        if args.noise:
            emu.inject(Fault(FaultKind.RATE_LIMIT, probability=args.noise, retry_after=1))
        failed = 0
        async with AsyncSPOClient(api_key=emu.api_key, base_url=emu.base_url) as client:

            async def one(i: int) -> None:
                nonlocal failed
                request = OptimizationRequest(
                    prompt=f"prompt {i}", qa=QA, max_rounds=args.rounds, model=MODEL
                )
                try:
                    task_id = await client.submit(request)
                    await client.wait_for_result(task_id, timeout=600)
                except SPOError:
                    failed += 1

            limiter = client.limiter
            budgets: list[float] = []

            async def watch() -> None:  # the budget, every half second after the first five
                await asyncio.sleep(5)
                while True:
                    budgets.append(getattr(limiter, "current_rate", None) or float("inf"))
                    await asyncio.sleep(0.5)

            watcher = asyncio.create_task(watch())
            started = time.monotonic()
            await asyncio.gather(*(one(i) for i in range(args.tasks)))
            wall = time.monotonic() - started
            watcher.cancel()

    quota = emu.quota
    assert quota is not None
    first, last = quota.log[0][0], quota.log[-1][0]
    noise = emu.faults_fired[FaultKind.RATE_LIMIT]
    requests = quota.admitted + quota.refused
    used = quota.admitted / (args.quota * (last - first))
    learned = getattr(limiter, "learned_rate", None)
    signals = getattr(limiter, "load_signals", "-")
    print(
        "| quota/s | tasks | noise | wall s | requests | quota used | 429 share "
        "| quota 429s | random 429s | learned/s | load signals | lowest budget/s | failed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.quota:g} | {args.tasks} | {args.noise:.0%} | {wall:.1f} | {requests} "
        f"| {used:.3f} | {(quota.refused + noise) / requests:.2%} | {quota.refused} | {noise} "
        f"| {'-' if learned is None else f'{learned:.1f}'} | {signals} "
        f"| {min(budgets, default=float('inf')):.1f} | {failed} |"
    )
    if args.timeline:
        per_second: collections.Counter[int] = collections.Counter()
        for when, admitted in quota.log:
            per_second[int(when - first)] += admitted
        print(
            "admitted per second:", " ".join(str(per_second[s]) for s in range(max(per_second) + 1))
        )


if __name__ == "__main__":
    asyncio.run(main())
