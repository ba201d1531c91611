"""Does the simulator poll as the real client does? The second process, task by task.

``bench/simulate.py`` stands in for ``bench/run.py`` while tuning; this checks the
stand-in where the bench is least sure of it, a second process in progress mode.
Per emulator seed, as ``bench/run.py`` does: one real client process learns a wave of
20 tasks into a cache file, then single tasks run one after another, each in a new
process on that file (as ``spo-async optimize`` would). Each single task is then
replayed on the simulator: a schedule reading a copy of the file as the real client
found it, the task's true rounds from the emulator, the same mode and clock scale.
It prints both GET counts per task, and how many agree.

The schedule draws a tenth of its tasks as explorers at random (unseeded in the real
client): such a task may look differently in the replay, as may one whose look came
within a request's time of a round's end.

    python bench/replay.py                       # rounds of 2 s, seeds 300 to 307
    python bench/replay.py --scale 30 --seeds 4
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import simulate
from run import SCHED_ROUNDS, SCHED_TASK, client, emulator, truth
from spo_async.polling import AdaptiveSchedule, PollMode


def real_singles(seed: int, scale: float, singles: int, folder: Path) -> list[tuple[Path, Any]]:
    """The bench's second process for one seed: each single task and its cache as found."""
    cache = folder / "schedule.json"
    common = [
        "schedules",
        f"--scale={scale}",
        "--mode=progress",
        f"--rounds={SCHED_ROUNDS}",
        f"--cache={cache}",
        "--waves=1",
    ]
    with emulator(seed=seed, **SCHED_TASK) as (base, truth_url):
        client(*common, f"--base-url={base}", "--tasks=20")
        found = []
        for k in range(singles):
            before = folder / f"before-{k}.json"
            shutil.copyfile(cache, before)
            record = client(*common, f"--base-url={base}", "--tasks=1")[0]
            found.append((before, record["task_id"]))
        known = truth(truth_url)
    return [(before, known[task_id]) for before, task_id in found]


def replayed_gets(cache: Path, true: dict[str, Any], scale: float) -> int:
    """The GETs of the same task on the simulator, from the same cache file."""
    submitted = true["submitted_at"]
    started = true.get("queue_ends_at") or submitted
    task = simulate.Task(0.0, 1.0, SCHED_ROUNDS, (started - submitted) * scale)
    task.finishes = [(end - submitted) * scale for end in true["rounds"]]
    copy = cache.with_suffix(".replay.json")
    shutil.copyfile(cache, copy)
    schedule = AdaptiveSchedule(persist=copy, rng=random.Random(0))
    record = simulate.run_wave(
        schedule,
        [task],
        ["replayed"],
        mode=PollMode.PROGRESS,
        latency=0.002 * scale,
        budget=simulate.NoBudget(),
    )[0]
    gets: int = record["gets"]
    return gets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=2.0, help="the client's clock speed-up")
    parser.add_argument("--seeds", type=int, default=8, help="emulator seeds from 300 on")
    parser.add_argument("--singles", type=int, default=3, help="single tasks per seed")
    args = parser.parse_args()
    real, replayed = [], []
    for seed in range(300, 300 + args.seeds):
        with tempfile.TemporaryDirectory() as folder:
            for cache, true in real_singles(seed, args.scale, args.singles, Path(folder)):
                real.append(true["gets"])
                replayed.append(replayed_gets(cache, true, args.scale))
                print(f"seed {seed}: real {real[-1]} GETs, replayed {replayed[-1]}", flush=True)
    same = sum(a == b for a, b in zip(real, replayed, strict=True))
    print(
        f"{len(real)} tasks: real {statistics.fmean(real):.2f} GETs a task, replayed "
        f"{statistics.fmean(replayed):.2f}; {same} of {len(real)} the same"
    )


if __name__ == "__main__":
    main()
