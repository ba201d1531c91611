"""Four processes on one API key against a quota they do not know: one budget, or one each.

``python bench/shared_quota.py`` starts the emulator in quota mode (``--quota``
requests per second per API key, a moving window of one second, 429 with
``Retry-After`` past it) in a thread of this process, and a throwaway PostgreSQL
and redis-server on loopback (tests/servers.py: Debian's ``postgresql`` and
``redis-server``). Then, for each way of limiting (``--modes``: ``memory`` is a
default limiter per process, as replicas have today; ``postgresql`` and ``redis``
share one ``RequestLimiter.shared(uri)`` budget), it starts ``--processes`` worker
processes at once, each submitting ``--tasks`` tasks at once and waiting for each,
the same API key for all.

It prints one Markdown row per mode, counted at the emulator: the share of the quota
used (requests admitted over quota x the time from the first request to the last),
the share of requests answered 429, and the wall time. Each worker prints its own
limiter's view (learnt quota, load signals) to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QA = [("Good morning", "[thoughts][reply]"), ("Do you love me?", "[thoughts][reply]")]
MODEL = "claude-3-5-sonnet-20240620"


async def worker(args: argparse.Namespace) -> None:
    """One process of the fleet: submit ``--tasks`` tasks at once and wait for each."""
    from spo_async import AsyncSPOClient, OptimizationRequest, QAPair, RequestLimiter, SPOError

    limiter = RequestLimiter() if args.limiter == "memory" else RequestLimiter.shared(args.limiter)
    failed = 0
    async with AsyncSPOClient(
        api_key=args.api_key, base_url=args.base_url, limiter=limiter
    ) as client:

        async def one(i: int) -> None:
            nonlocal failed
            request = OptimizationRequest(
                prompt=f"prompt {args.index}-{i}",
                qa=[QAPair(q, a) for q, a in QA],
                max_rounds=args.rounds,
                model=MODEL,
            )
            try:
                task_id = await client.submit(request)
                await client.wait_for_result(task_id, timeout=900)
            except SPOError:
                failed += 1

        await asyncio.gather(*(one(i) for i in range(args.tasks)))
    report = {
        "process": args.index,
        "failed": failed,
        "sent": limiter.requests_sent,
        "429": limiter.rate_limited,
        "learned": limiter.learned_rate,
        "load_signals": limiter.load_signals,
    }
    print(json.dumps(report), file=sys.stderr)


def run_fleet(args: argparse.Namespace, limiter: str) -> tuple[float, float, float, int]:
    """Run one fleet against a fresh emulator; (quota used, 429 share, wall s, failed)."""
    from spo_async.testing import EmulatorConfig, ThreadedEmulator

    config = EmulatorConfig(
        quota_per_second=args.quota,
        round_seconds=args.round_seconds,
        seed=args.seed,
    )
    with ThreadedEmulator(config) as emu:
        argv = [sys.executable, __file__, "--worker", "--base-url", emu.base_url]
        argv += ["--api-key", emu.api_key, "--limiter", limiter, "--tasks", str(args.tasks)]
        argv += ["--rounds", str(args.rounds)]
        started = time.monotonic()
        workers = [
            subprocess.Popen([*argv, "--index", str(i)], stderr=subprocess.PIPE, text=True)  # noqa: S603
            for i in range(args.processes)
        ]
        failed = 0
        for process in workers:
            _, err = process.communicate()
            for line in err.splitlines():
                with contextlib.suppress(ValueError):
                    failed += json.loads(line)["failed"]
            print(f"  [{limiter.split(':', maxsplit=1)[0]}] {err.strip()}", file=sys.stderr)
        wall = time.monotonic() - started
        quota = emu.emulator.quota
        assert quota is not None
        first, last = quota.log[0][0], quota.log[-1][0]
        used = quota.admitted / (args.quota * (last - first))
        share = quota.refused / (quota.admitted + quota.refused)
    return used, share, wall, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quota", type=float, default=40.0, help="requests per second")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=300, help="tasks per process")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per task")
    parser.add_argument("--round-seconds", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--modes", default="memory,postgresql,redis")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--api-key", help=argparse.SUPPRESS)
    parser.add_argument("--limiter", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args))
        return

    sys.path.insert(0, str(ROOT))
    from tests.servers import fresh_database, postgres_server, redis_server

    print(
        f"{args.processes} processes x {args.tasks} tasks, quota {args.quota:g}/s, "
        f"{args.rounds} rounds of {args.round_seconds:g} s"
    )
    print("| limiter | quota used | 429 share | wall s | failed |")
    print("|---|---|---|---|---|")
    with contextlib.ExitStack() as stack:
        for mode in args.modes.split(","):
            if mode == "memory":
                uri = "memory"
            elif mode == "postgresql":
                uri = fresh_database(stack.enter_context(postgres_server()))
            else:
                uri = stack.enter_context(redis_server())
            used, share, wall, failed = run_fleet(args, uri)
            label = "one per process" if mode == "memory" else f"shared, {mode}"
            print(f"| {label} | {used:.3f} | {share:.2%} | {wall:.1f} | {failed} |", flush=True)


if __name__ == "__main__":
    main()
