"""What the journal's durable writes cost: intent + task id pairs, and opening a big journal.

Usage: python bench/journal.py [--pairs N] [--items M] [--repeats R] [--dir DIR]

* sequential: one item at a time, ``await intent(k)`` then ``await task_id(k, id)``,
  as a batch with ``concurrency=1`` does: every pair pays its own flushes.
* concurrent: 50 workers doing the same at once, so group commit shares the flushes.
* open: opening (and checking) a journal of M finished items, then ``start_batch``;
  and SQLite's ``PRAGMA integrity_check`` alone on that file, which opening now runs.

Each figure is the median of R runs, each in a fresh journal file in DIR (default: a
temporary directory; give one on the disk you care about, the cost is the disk's fsync).
Runs against whatever ``spo_async`` is importable, so the same script measures two versions.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from spo_async._convert import task_from_wire
from spo_async._journal import Journal

CONCURRENCY = 50


def items(n: int) -> list[tuple[str | int, str]]:
    return [(f"item-{i}", f"{i:064x}") for i in range(n)]


async def pairs(path: Path, n: int, concurrency: int) -> float:
    batch = items(n)
    async with Journal(path) as journal:
        await journal.start_batch(batch)
        todo: asyncio.Queue[str | int] = asyncio.Queue()
        for key, _ in batch:
            todo.put_nowait(key)

        async def worker() -> None:
            while not todo.empty():
                key = todo.get_nowait()
                await journal.intent(key)
                await journal.task_id(key, f"task-{key}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


def integrity_check(path: Path) -> float:
    conn = sqlite3.connect(path)
    try:
        start = time.perf_counter()
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return time.perf_counter() - start
    finally:
        conn.close()


async def open_big(path: Path, n: int) -> float:
    batch = items(n)
    body = {
        "status": "success",
        "best_prompt": "a better prompt " * 40,
        "best_round": 3,
        "round_data_list": [
            {
                "round": r,
                "prompt": "p " * 200,
                "success": True,
                "sample": [{"question": "q " * 20, "answer": "a " * 100}],
            }
            for r in range(1, 4)
        ],
    }
    async with Journal(path) as journal:
        await journal.start_batch(batch)
        for key, _ in batch:
            await journal.intent(key)
            await journal.task_id(key, f"task-{key}")
            await journal.finished(key, task_from_wire(body, task_id=f"task-{key}", max_rounds=3))
    start = time.perf_counter()
    async with Journal(path) as journal:
        await journal.start_batch(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        runs = iter(range(1_000_000))

        def fresh() -> Path:
            return Path(tmp) / f"bench-{next(runs)}.journal"

        seq = [asyncio.run(pairs(fresh(), args.pairs, 1)) for _ in range(args.repeats)]
        con = [asyncio.run(pairs(fresh(), args.pairs, CONCURRENCY)) for _ in range(args.repeats)]
        big = [asyncio.run(open_big(fresh(), args.items)) for _ in range(args.repeats)]
        biggest = max(Path(tmp).glob("*.journal"), key=lambda p: p.stat().st_size)
        size = biggest.stat().st_size
        check = statistics.median(integrity_check(biggest) for _ in range(args.repeats))
    per_pair = statistics.median(seq) / args.pairs * 1000
    per_pair_c = statistics.median(con) / args.pairs * 1000
    print(f"sequential: {per_pair:.3f} ms per intent+task_id pair ({args.pairs} pairs)")
    print(f"concurrent ({CONCURRENCY} workers): {per_pair_c:.3f} ms per pair")
    print(
        f"open + check + start_batch of {args.items} finished items "
        f"({size / 1e6:.1f} MB): {statistics.median(big) * 1000:.1f} ms"
    )
    print(f"of which PRAGMA integrity_check alone: {check * 1000:.1f} ms")


if __name__ == "__main__":
    main()
