"""The client side of the benchmarks, run in its own process by ``bench/run.py``.

``overhead``: submit and poll ``--tasks`` tasks, ``--inflight`` at a time (0: all at
once), either with the SDK or with the raw-aiohttp floor: one session, the same
pool size, the same fixed poll interval, minimal code. Prints one JSON line with
the client's CPU seconds, wall seconds, peak RSS and the most file descriptors open.

``polling``: run tasks under several poll schedules side by side in one process
(each schedule its own client, so the adaptive one learns only from its own
tasks) and print, per task, when the caller's ``await`` returned.

``trace``: warm one schedule up on a few tasks, then record the times of every
look at one more task, for the plot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]
from spo_async import (
    AdaptiveSchedule,
    AsyncSPOClient,
    ExponentialSchedule,
    FixedSchedule,
    OptimizationRequest,
    PollState,
    QAPair,
    TaskResult,
)

KEY = "sk-spo-emulator"
MODEL = "claude-3-5-sonnet-20240620"
QA = [
    {"question": "Good morning", "answer": "[thoughts][reply]"},
    {"question": "Do you love me?", "answer": "[thoughts][reply]"},
    {"question": "What are you doing?", "answer": "[thoughts][reply]"},
]


def body(prompt: str, rounds: int) -> dict[str, Any]:
    return {"qa": QA, "prompt": prompt, "max_rounds": rounds, "model": MODEL}


def request(prompt: str, rounds: int) -> OptimizationRequest:
    return OptimizationRequest(
        prompt=prompt, qa=[QAPair(**qa) for qa in QA], max_rounds=rounds, model=MODEL
    )


# -- overhead -------------------------------------------------------------------------------


async def run_sdk(base: str, tasks: int, inflight: int, interval: float, rounds: int) -> list[str]:
    schedule = FixedSchedule(interval=interval)
    async with AsyncSPOClient(api_key=KEY, base_url=base, schedule=schedule) as client:

        async def one(i: int) -> str:
            return (await client.optimize(request(f"prompt {i}", rounds))).task_id

        return await bounded(one, tasks, inflight)


async def run_floor(
    base: str, tasks: int, inflight: int, interval: float, rounds: int
) -> list[str]:
    connector = aiohttp.TCPConnector(limit=100, limit_per_host=100)
    headers = {"Authorization": f"Bearer {KEY}"}
    post_headers = {**headers, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> str:
            data = json.dumps(body(f"prompt {i}", rounds)).encode()
            url = base + "/302/prompt/spo/submit"
            async with session.post(url, data=data, headers=post_headers) as resp:
                task_id: str = (await resp.json())["task_id"]
            url = f"{base}/302/prompt/spo/tasks/{task_id}"
            while True:
                async with session.get(url, headers=headers) as resp:
                    status = (await resp.json())["status"]
                if status in ("success", "fail"):
                    return task_id
                await asyncio.sleep(interval)

        return await bounded(one, tasks, inflight)


#: Why tasks did not finish, by exception type (a task that fails is counted, not fatal).
ERRORS: dict[str, int] = {}


async def bounded(one: Callable[[int], Awaitable[str]], tasks: int, inflight: int) -> list[str]:
    gate = asyncio.Semaphore(inflight if inflight > 0 else tasks)

    async def gated(i: int) -> str | None:
        async with gate:
            try:
                return await one(i)
            except Exception as exc:  # counted and reported, not fatal
                name = type(exc).__name__
                cause = exc.__cause__
                if cause is not None:
                    name += f" ({type(cause).__name__})"
                ERRORS[name] = ERRORS.get(name, 0) + 1
                return None

    done = await asyncio.gather(*(gated(i) for i in range(tasks)))
    return [task_id for task_id in done if task_id is not None]


async def overhead(args: argparse.Namespace) -> dict[str, Any]:
    me = psutil.Process()
    most_fds = me.num_fds()
    stop = asyncio.Event()

    async def watch_fds() -> None:
        nonlocal most_fds
        while not stop.is_set():
            most_fds = max(most_fds, me.num_fds())
            await asyncio.sleep(0.05)

    runner = run_sdk if args.kind == "sdk" else run_floor
    watcher = asyncio.create_task(watch_fds())
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005, async_mode="disabled")
        profiler.start()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ids = await runner(args.base_url, args.tasks, args.inflight, args.interval, args.rounds)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if profiler is not None:
        profiler.stop()
        save(args.profile, profiler.output_text(unicode=False, color=False, show_all=False))
    stop.set()
    await watcher
    return {
        "kind": args.kind,
        "finished": len(ids),
        "errors": ERRORS,
        "cpu_s": cpu,
        "wall_s": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "max_fds": most_fds,
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "task_ids": ids,
    }


def save(path: str, text: str) -> None:
    with open(path, "w") as out:
        out.write(text)


# -- polling --------------------------------------------------------------------------------


def schedules(scale: float, seed: int) -> dict[str, tuple[Any, bool]]:
    """Name -> (schedule, progress mode?); every time constant scaled by ``scale``."""

    def google(state: PollState) -> float:
        # google-api-core's polling default: 1 s, x1.5 per poll, at most 20 s; the first
        # look at once.
        if state.polls == 0:
            return 0.0
        return min(1.0 * scale * 1.5 ** max(state.polls - 1, 0), 20.0 * scale)

    def adaptive(offset: int, **settings: Any) -> AdaptiveSchedule:
        rng = random.Random(seed + offset)
        fallback = ExponentialSchedule(initial=1.0 * scale, maximum=15.0 * scale, rng=rng)
        return AdaptiveSchedule(
            rng=rng,
            fallback=fallback,
            min_delay=0.05 * scale,
            max_delay=60.0 * scale,
            **settings,
        )

    # The fixed and exponential schedules ignore the mode, so they run with a progress
    # hook too: that records when each middle round was seen, at no change to their looks.
    return {
        "fixed 5 s (302.AI web app)": (FixedSchedule(interval=5.0 * scale), True),
        "exponential 1 s x1.5 to 20 s (google-api-core)": (google, True),
        "adaptive, progress mode": (adaptive(1), True),
        "adaptive, progress mode, rounds + 2 settings": (
            adaptive(3, progress_lag=0.7, completion_lag=0.03),
            True,
        ),
        "adaptive, completion mode": (adaptive(2), False),
    }


async def polling(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, list[dict[str, Any]]] = {}

    async def run(name: str, schedule: Any, progress: bool) -> None:
        records = out.setdefault(name, [])
        async with AsyncSPOClient(api_key=KEY, base_url=args.base_url, schedule=schedule) as c:

            async def one(i: int) -> None:
                await asyncio.sleep(i * args.stagger)
                task_id = await c.submit(request(f"{name} {i}", args.rounds))
                # When each round was first seen (progress mode only).
                seen: list[float] = []

                def hook(snapshot: TaskResult) -> None:
                    now = time.monotonic()
                    while len(seen) < len(snapshot.completed_rounds):
                        seen.append(now)

                await c.wait_for_result(task_id, on_progress=hook if progress else None)
                records.append(
                    {"task_id": task_id, "i": i, "returned_at": time.monotonic(), "seen": seen}
                )

            await asyncio.gather(*(one(i) for i in range(args.tasks)))

    await asyncio.gather(*(run(n, s, p) for n, (s, p) in schedules(args.scale, args.seed).items()))
    return out


async def trace(args: argparse.Namespace) -> dict[str, Any]:
    schedule, progress = schedules(args.scale, args.seed)[args.schedule]
    looks: list[float] = []
    wrapped = schedule.next_delay if hasattr(schedule, "next_delay") else schedule

    def recording(state: PollState) -> float:
        if state.task_id == plotted and state.polls > 0:  # polls == 0: before any look
            looks.append(time.monotonic())
        delay: float = wrapped(state)
        return delay

    plotted = ""
    hook = (lambda _r: None) if progress else None
    async with AsyncSPOClient(api_key=KEY, base_url=args.base_url, schedule=recording) as c:

        async def warm(i: int) -> None:
            await asyncio.sleep(i * args.stagger)
            await c.wait_for_result(
                await c.submit(request("warm-up", args.rounds)), on_progress=hook
            )

        await asyncio.gather(*(warm(i) for i in range(args.warmup)))
        plotted = await c.submit(request("plotted task", args.rounds))
        await c.wait_for_result(plotted, on_progress=hook)
        looks.append(time.monotonic())
    return {"task_id": plotted, "looks": looks}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["overhead", "polling", "trace"])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--kind", choices=["sdk", "floor"], default="sdk")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--inflight", type=int, default=0)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", default="")
    parser.add_argument("--scale", type=float, default=1 / 30)
    parser.add_argument("--stagger", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schedule", default="")
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    command = {"overhead": overhead, "polling": polling, "trace": trace}[args.command]
    result = asyncio.run(command(args))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: it is not what is measured


if __name__ == "__main__":
    main()
