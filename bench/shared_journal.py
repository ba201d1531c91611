"""Three worker processes on one PostgreSQL journal; one is killed with SIGKILL halfway.

    python bench/shared_journal.py [--items 1000] [--workers 3] [--lease 2]

Starts a throwaway PostgreSQL on loopback (as tests/servers.py does; fsync off)
and the emulator in this process (a thread, real time), then the workers, each
``optimize_many(..., journal="postgresql://...")`` over the same 1,000 requests.
When the emulator has created half as many tasks as there are items, worker 0
gets SIGKILL. At the end it checks, from the database and the emulator:

* every item is finished or unknown (none left open);
* tasks created <= items (nobody paid twice for an item);
* every task the dead worker had submitted and not finished was finished by a
  survivor (taken over, polling only).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def requests(count: int) -> list[tuple[str, object]]:
    from spo_async import OptimizationRequest, QAPair

    return [
        (
            f"item-{i}",
            OptimizationRequest(
                prompt=f"Summarize ticket {i}",
                qa=[QAPair("Hi", "Hello")],
                max_rounds=3,
                model="claude-3-5-sonnet-20240620",
                language="en",
            ),
        )
        for i in range(count)
    ]


async def worker(base_url: str, api_key: str, journal: str, count: int) -> None:
    from spo_async import AsyncSPOClient
    from spo_async.polling import FixedSchedule

    tally: collections.Counter[str] = collections.Counter()
    async with AsyncSPOClient(
        api_key, base_url=base_url, schedule=FixedSchedule(interval=0.1)
    ) as client:
        batch = client.optimize_many(requests(count), concurrency=40, journal=journal)  # type: ignore[arg-type]
        async for outcome in batch:
            tally[type(outcome).__name__] += 1
    print(json.dumps(dict(tally)), flush=True)


def main() -> None:
    import psycopg
    from spo_async.testing import EmulatorConfig, ThreadedEmulator
    from tests.servers import fresh_database, postgres_server

    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--lease", type=float, default=2.0)
    args = parser.parse_args()

    config = EmulatorConfig(round_seconds=0.2, queue_seconds=0.1, seed=7)
    with postgres_server() as server, ThreadedEmulator(config) as emu:
        uri = fresh_database(server)
        journal = f"{uri}?lease={args.lease}"
        started = time.monotonic()
        n = str(args.items)
        procs = [
            subprocess.Popen(  # noqa: S603 - our own argv
                [sys.executable, __file__, "--worker", emu.base_url, emu.api_key, journal, n],
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            for _ in range(args.workers)
        ]
        while emu.tasks_created < args.items // 2:
            if any(p.poll() is not None for p in procs):
                raise SystemExit("a worker exited early")
            time.sleep(0.01)
        victim = procs[0]
        with psycopg.connect(uri, autocommit=True) as conn:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            killed_at = emu.tasks_created
            orphans = {
                key
                for (key,) in conn.execute(
                    "SELECT key FROM spo_items WHERE owner LIKE %s AND state = 'submitted'",
                    (f"%:{victim.pid}:%",),
                )
            }
            in_flight = conn.execute(
                "SELECT count(*) FROM spo_items WHERE owner LIKE %s AND state = 'submitting'",
                (f"%:{victim.pid}:%",),
            ).fetchone()
        outputs = [p.communicate()[0].strip() for p in procs[1:]]
        elapsed = time.monotonic() - started
        with psycopg.connect(uri, autocommit=True) as conn:
            states = dict(conn.execute("SELECT state, count(*) FROM spo_items GROUP BY state"))
            taken = conn.execute(
                "SELECT count(*) FROM spo_items WHERE key = ANY(%s) AND state = 'finished'",
                (list(orphans),),
            ).fetchone()
        created = emu.tasks_created
    report = {
        "items": args.items,
        "workers": args.workers,
        "lease_seconds": args.lease,
        "killed_after_tasks_created": killed_at,
        "dead_worker_submitted_unfinished": len(orphans),
        "dead_worker_between_intent_and_id": in_flight[0] if in_flight else 0,
        "taken_over_and_finished": taken[0] if taken else 0,
        "states": states,
        "tasks_created": created,
        "survivor_outcomes": [json.loads(o) for o in outputs if o],
        "seconds": round(elapsed, 2),
    }
    print(json.dumps(report, indent=2))
    assert set(states) <= {"finished", "unknown"}, "items left open"
    assert created <= args.items, "an item was paid for twice"
    assert report["taken_over_and_finished"] == len(orphans), "a dead worker's task was dropped"
    print("OK: every item finished or unknown, tasks <= items, the dead worker's tasks taken over")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, key, journal_uri, items = sys.argv[2:6]
        asyncio.run(worker(url, key, journal_uri, int(items)))
    else:
        main()
