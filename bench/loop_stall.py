"""How long one large task answer stalls the client's event loop.

``python bench/loop_stall.py [--size BYTES] [--fetches N]`` serves task answers of the
shapes of ``bench/parse_cost.py`` (each just under the client's default
``max_response_bytes``, 8 MiB) from a second process, then reads each one ``N`` times
with ``AsyncSPOClient.get_task`` while a ticker task on the same loop asks to wake
every millisecond. The *stall* is the longest the ticker waited beyond its
millisecond, i.e. the longest the loop could not run anything else: other tasks'
polls, heartbeats, a web server's requests. *CPU/fetch* is the client process's CPU
time per read. Whether the client reads the answer or refuses it does not matter
here: both happen on the loop, and both are measured.

To compare with another tree of the SDK, put it first on the path:
``PYTHONPATH=/path/to/other/tree python bench/loop_stall.py``; the first line printed
says which ``spo_async`` was measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from parse_cost import CRAFTED, SHAPES, _ascii_escaped, _fill, _plain, _round, _task

TICK = 0.001


def build_bodies(size: int) -> dict[str, bytes]:
    """Every shape of ``parse_cost.py``, plus a typical small answer, by URL-safe name."""
    bodies = {"an ordinary answer (20 KB)": _fill(SHAPES["many rounds"], 20_000)}
    bodies |= {name: _fill(make, size) for name, make in SHAPES.items()}
    bodies["many rounds, every character \\u-escaped"] = _fill(
        SHAPES["many rounds"], size, _ascii_escaped
    )
    bodies |= {name: _plain(make()) for name, make in CRAFTED.items()}
    bodies["100 long rounds (a large real task)"] = _fill(
        lambda n: _task([_round(i + 1, 3, "y" * n) for i in range(100)]), size
    )
    return bodies


def serve(size: int) -> None:
    """Serve every body at ``/302/prompt/spo/tasks/<index>`` until stdin closes."""
    from aiohttp import web

    bodies = list(build_bodies(size).values())

    async def task(request: web.Request) -> web.Response:
        body = bodies[int(request.match_info["task_id"])]
        return web.Response(body=body, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/302/prompt/spo/tasks/{task_id}", task)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        print(f"READY http://{host}:{port}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await runner.cleanup()

    asyncio.run(main())


async def measure(base_url: str, index: int, fetches: int) -> tuple[float, float, str]:
    """(worst stall in ms, CPU per fetch in ms, outcome) of reading answer ``index``."""
    from spo_async import AsyncSPOClient, SPOError

    worst = 0.0
    running = True

    async def ticker() -> None:
        nonlocal worst
        while running:
            started = time.perf_counter()
            await asyncio.sleep(TICK)
            worst = max(worst, time.perf_counter() - started - TICK)

    outcome = "read"
    async with AsyncSPOClient(api_key="sk-bench-key", base_url=base_url) as client:
        with contextlib.suppress(SPOError):
            await client.get_task(str(index))  # warm up: connection, imports, caches
        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        worst = 0.0
        cpu = time.process_time()
        for _ in range(fetches):
            try:
                await client.get_task(str(index))
            except SPOError as exc:
                outcome = f"{type(exc).__name__}: {str(exc)[:50]}"
        cpu = time.process_time() - cpu
        running = False
        await ticking
    return worst * 1000, cpu / fetches * 1000, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=8 * 1024 * 1024 - 1024)
    parser.add_argument("--fetches", type=int, default=5)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.size)
        return
    import spo_async

    print(f"spo_async from {Path(spo_async.__file__).parent}")
    names = list(build_bodies(20_000))  # the names only; the server builds the real ones
    server = subprocess.Popen(  # noqa: S603 - this very script
        [sys.executable, __file__, "--serve", "--size", str(args.size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().split()
        base_url = line[1]
        print("| answer | worst stall (ms) | CPU/fetch (ms) | outcome |")
        print("|---|---:|---:|---|")
        for index, name in enumerate(names):
            stall, cpu, outcome = asyncio.run(measure(base_url, index, args.fetches))
            print(f"| {name} | {stall:.0f} | {cpu:.0f} | {outcome} |", flush=True)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
