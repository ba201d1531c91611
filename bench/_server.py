"""The emulator for the benchmarks, in its own process, with a side door for the truth.

``python bench/_server.py --round-seconds S --queue-seconds Q --jitter J --task-jitter T --seed N``
serves :class:`spo_async.testing.Emulator` on a free loopback port, plus a second
port that answers ``GET /truth`` with every task's true timeline (when it left
the queue, when each round finished, when it ended, how many GETs it got and when
the last one came).
``--jitter`` draws every duration on its own (±J); ``--task-jitter`` draws one pace
per task (±T) that all its rounds keep, as a task on a busy or a quiet backend
would (round 1 still takes the emulator's third of a round).
Times are the emulator's ``time.monotonic()``, which on Linux is one clock for
every process of the machine, so the client can compare them with its own.
It prints ``READY <emulator url> <truth url>`` and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import signal
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from spo_async.testing import Emulator, EmulatorConfig, TaskOutcome


class _TimedCounter(collections.Counter[str]):
    """The emulator's GET counter, noting when each task was last looked at.

    A finished task's last GET is the one that saw its end: the lag of a client
    whose own end time cannot be read (the command line, in a process of its own).
    """

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, float] = {}

    def __setitem__(self, key: str, value: int) -> None:
        self.last[key] = time.monotonic()
        super().__setitem__(key, value)

    def clear(self) -> None:
        self.last.clear()
        super().clear()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--round-seconds", type=float, default=0.3)
    parser.add_argument("--queue-seconds", type=float, default=0.0)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--task-jitter", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paces = random.Random(args.seed)

    def pace(_body: Mapping[str, Any]) -> TaskOutcome | None:
        if not args.task_jitter:
            return None
        scale = paces.uniform(1 - args.task_jitter, 1 + args.task_jitter)
        return TaskOutcome(round_seconds=args.round_seconds * scale)

    config = EmulatorConfig(
        round_seconds=args.round_seconds,
        queue_seconds=args.queue_seconds,
        jitter=args.jitter,
        seed=args.seed,
        record_requests=False,
        outcome_for=pace,
    )
    emulator = Emulator(config)
    emulator.task_gets = _TimedCounter()
    await emulator.start()

    async def truth(_request: web.Request) -> web.Response:
        body: dict[str, Any] = {
            task_id: {
                "submitted_at": task.submitted_at,
                "queue_ends_at": task.queue_ends_at,
                "rounds": [r.finishes_at for r in task.rounds],
                "ends_at": task.ends_at,
                "gets": emulator.task_gets[task_id],
                "last_get_at": emulator.task_gets.last.get(task_id),
            }
            for task_id, task in emulator.tasks.items()
        }
        return web.json_response(body)

    side = web.Application()
    side.router.add_get("/truth", truth)
    runner = web.AppRunner(side, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"READY {emulator.base_url} http://{host}:{port}/truth", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await emulator.close()


if __name__ == "__main__":
    asyncio.run(main())
