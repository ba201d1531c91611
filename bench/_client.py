"""The client side of the benchmarks, run in its own process by ``bench/run.py``.

``overhead``: submit and poll ``--tasks`` tasks, ``--inflight`` at a time (0: all at
once), either with the SDK or with the raw-aiohttp floor: one session, the same
pool size, the same fixed poll interval, minimal code. Prints one JSON line with
the client's CPU seconds, wall seconds, peak RSS and the most file descriptors open.

``schedules``: run ``--waves`` waves of ``--tasks`` tasks at once on one client with
one schedule (the default, the round-aware baseline or a fixed 5 s), the client's
clock and sleep running ``--scale`` times faster than real time, so that the
emulator's rounds look ``--scale`` times longer to the client; print, per task,
when the caller's ``await`` returned and when each round's event came.

``trace``: warm one schedule up on a few waves, then record the times of every
look at one more task, for the plot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]
from _baseline import RoundAware
from spo_async import AsyncSPOClient, OptimizationRequest, QAPair, RoundCompleted, TaskResult
from spo_async.polling import AdaptiveSchedule, FixedSchedule, PollState

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


# -- schedules ------------------------------------------------------------------------------


#: The baseline's settings per mode, picked on simulated tasks for a mean lag near the
#: default's (about 0.1 round): steps of a tenth of a round from half way to the due
#: time in completion mode, a fifth from 30 % before it in progress mode.
BASELINE = {"completion": {"step": 0.1, "early": 0.5}, "progress": {"step": 0.2, "early": 0.3}}


def schedule_named(name: str, cache: str | None, mode: str = "completion") -> Any:
    """The schedule a row of the table runs; ``None`` leaves the client's own default."""
    if name == "default":
        return AdaptiveSchedule(persist=cache) if cache else None
    if name == "baseline":
        return RoundAware(**BASELINE[mode])
    if name == "fixed":
        return FixedSchedule(interval=5.0)  # 302.AI's web app, on the client's clock
    raise ValueError(name)


async def wait(client: AsyncSPOClient, task_id: str, schedule: Any, on_event: Any) -> TaskResult:
    """The one place the bench waits for a task: the SDK's wait API, with ``schedule``."""
    view = client if schedule is None else client.with_options(schedule=schedule)
    return await view.wait_for_result(task_id, on_event=on_event)


async def schedules(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Waves of tasks on one client, its clock running ``--scale`` times faster than real."""
    scale = args.scale

    def clock() -> float:
        return time.monotonic() * scale

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds / scale)

    chosen = schedule_named(args.schedule, args.cache or None, args.mode)
    progress = args.mode == "progress"
    out: list[dict[str, Any]] = []
    client = AsyncSPOClient(
        api_key=KEY, base_url=args.base_url, clock=clock, sleep=sleep, timeout=None
    )
    async with client:

        async def one(wave: int, i: int) -> None:
            task_id = await client.submit(request(f"{args.schedule} {wave}.{i}", args.rounds))
            seen: dict[int, float] = {}

            def on_event(event: Any) -> None:
                if isinstance(event, RoundCompleted):
                    seen.setdefault(event.number, time.monotonic())

            await wait(client, task_id, chosen, on_event if progress else None)
            out.append(
                {"task_id": task_id, "wave": wave, "returned_at": time.monotonic(), "seen": seen}
            )

        for wave in range(args.waves):
            await asyncio.gather(*(one(wave, i) for i in range(args.tasks)))
    return out


async def trace(args: argparse.Namespace) -> dict[str, Any]:
    """Warm a schedule up on a few tasks, then record every look at one more task."""
    scale = args.scale

    def clock() -> float:
        return time.monotonic() * scale

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds / scale)

    inner = schedule_named(args.schedule, None, args.mode) or AdaptiveSchedule()
    looks: list[float] = []
    plotted = ""

    class Recording:
        def next_delay(self, state: PollState) -> float:
            if state.task_id == plotted and state.polls > 0:  # polls == 0: before any look
                looks.append(time.monotonic())
            delay: float = inner.next_delay(state)
            return delay

        def task_finished(self, state: PollState) -> None:
            finished = getattr(inner, "task_finished", None)
            if finished is not None:
                finished(state)

    recording = Recording()
    progress = args.mode == "progress"
    async with AsyncSPOClient(
        api_key=KEY, base_url=args.base_url, clock=clock, sleep=sleep, timeout=None
    ) as client:

        async def run(name: str) -> str:
            task_id = await client.submit(request(name, args.rounds))
            await wait(client, task_id, recording, (lambda _e: None) if progress else None)
            return task_id

        for _ in range(args.warmup):
            await asyncio.gather(*(run("warm-up") for _ in range(args.tasks)))
        plotted = await client.submit(request("plotted task", args.rounds))
        await wait(client, plotted, recording, (lambda _e: None) if progress else None)
        looks.append(time.monotonic())
    return {"task_id": plotted, "looks": looks}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["overhead", "schedules", "trace"])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--kind", choices=["sdk", "floor"], default="sdk")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--inflight", type=int, default=0)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", default="")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--schedule", default="default")
    parser.add_argument("--mode", choices=["completion", "progress"], default="completion")
    parser.add_argument("--waves", type=int, default=3)
    parser.add_argument("--cache", default="")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    command = {"overhead": overhead, "schedules": schedules, "trace": trace}[args.command]
    result = asyncio.run(command(args))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: it is not what is measured


if __name__ == "__main__":
    main()
