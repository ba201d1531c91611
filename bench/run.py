"""Run the benchmark suite and print its tables (Markdown), as pasted into bench/README.md.

    python bench/run.py            # everything, a few minutes on 2 CPUs
    python bench/run.py --quick    # smaller and one repeat: a smoke test
    python bench/run.py --only polling,plot

The emulator runs in its own process (``bench/_server.py``) and the client in
another (``bench/_client.py``); with two CPUs or more they are pinned apart with
``taskset`` (emulator on CPU 1, client on CPU 0). Each figure is the median over
``--repeats`` repeats; each ratio is taken inside one repeat, then the median of
those ratios is reported. Raw results go to ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PY = sys.executable
PIN = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def pinned(cpu: int, argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if PIN else list(argv)


@contextmanager
def emulator(**settings: float) -> Iterator[tuple[str, str]]:
    argv = [PY, str(HERE / "_server.py")]
    for name, value in settings.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    proc = subprocess.Popen(pinned(1, argv), stdout=subprocess.PIPE, text=True)  # noqa: S603
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if not line or line[0] != "READY":
            raise RuntimeError(f"the emulator did not start: {line!r}")
        yield line[1], line[2]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def client(*args: str) -> Any:
    argv = pinned(0, [PY, str(HERE / "_client.py"), *args])
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)  # noqa: S603
    if done.returncode != 0:
        raise RuntimeError(f"client failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def truth(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 - loopback only
        result: dict[str, Any] = json.load(resp)
        return result


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# -- client overhead --------------------------------------------------------------------------

OVERHEAD_SCENARIOS = [("small", 1000, 100), ("large", 10000, 1000), ("unbounded", 10000, 0)]
#: Each task: round 1 (0.1 s) and round 2 (0.3 s), looked at every 0.15 s by both clients.
OVERHEAD_TASK = {"round_seconds": 0.3, "queue_seconds": 0.0, "jitter": 0.0}
OVERHEAD_ROUNDS, OVERHEAD_INTERVAL = 2, 0.15


def bench_overhead(repeats: int, shrink: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _, full_tasks, full_inflight in OVERHEAD_SCENARIOS:
        tasks, inflight = full_tasks // shrink, full_inflight // shrink
        name = f"{tasks:,} tasks, " + (f"{inflight:,} in flight" if inflight else "unbounded")
        runs: list[dict[str, Any]] = []
        for r in range(repeats):
            with emulator(seed=r, **OVERHEAD_TASK) as (base, truth_url):
                pair = {}
                for kind in ("sdk", "floor") if r % 2 == 0 else ("floor", "sdk"):
                    pair[kind] = client(
                        "overhead",
                        f"--base-url={base}",
                        f"--kind={kind}",
                        f"--tasks={tasks}",
                        f"--inflight={inflight}",
                        f"--interval={OVERHEAD_INTERVAL}",
                        f"--rounds={OVERHEAD_ROUNDS}",
                    )
                known = truth(truth_url)
            for result in pair.values():
                ids = result.pop("task_ids")
                result["requests"] = len(ids) + sum(known[i]["gets"] for i in ids)
                result["cpu_us_per_request"] = result["cpu_s"] / result["requests"] * 1e6
            runs.append(pair)
            print(f"  overhead {name} repeat {r + 1}: {json.dumps(pair)}", file=sys.stderr)
        out[name] = {"tasks": tasks, "inflight": inflight, "runs": runs}
    return out


def overhead_table(data: dict[str, Any]) -> str:
    rows = [
        "| scenario | CPU µs/request SDK | floor | ratio | wall s SDK | floor | peak RSS MB SDK"
        " | floor | ratio | max fds SDK | floor | finished SDK | floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in data.items():
        runs = entry["runs"]

        def med(kind: str, key: str, runs: list[dict[str, Any]] = runs) -> float:
            return median([run[kind][key] for run in runs])

        def ratio(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return median([run["sdk"][key] / run["floor"][key] for run in runs])

        def failed(
            kind: str, runs: list[dict[str, Any]] = runs, tasks: int = entry["tasks"]
        ) -> str:
            lost = [tasks - run[kind]["finished"] for run in runs]
            return "all" if not any(lost) else f"{sum(lost)} failed in {len(runs)} runs"

        rows.append(
            f"| {name} | {med('sdk', 'cpu_us_per_request'):.0f} "
            f"| {med('floor', 'cpu_us_per_request'):.0f} | {ratio('cpu_us_per_request'):.2f} "
            f"| {med('sdk', 'wall_s'):.1f} | {med('floor', 'wall_s'):.1f} "
            f"| {med('sdk', 'peak_rss_mb'):.0f} | {med('floor', 'peak_rss_mb'):.0f} "
            f"| {ratio('peak_rss_mb'):.2f} | {med('sdk', 'max_fds'):.0f} "
            f"| {med('floor', 'max_fds'):.0f} | {failed('sdk')} | {failed('floor')} |"
        )
    return "\n".join(rows)


def per_task_table(data: dict[str, Any]) -> str:
    """CPU per finished task, next to how many requests each client made per task.

    The two clients do the same work per task (a submit, then looks until it ends),
    but not always the same number of looks: how long a request queues for a pooled
    connection decides how many looks a task gets, and the SDK's own FIFO queue
    gives different queueing than aiohttp's. CPU per request then compares
    different mixes (a submit costs more than a look), so this table shows CPU per
    task as well; the true per-request ratio lies between the two.
    """
    rows = [
        "| scenario | requests/task SDK | floor | CPU ms/task SDK | floor | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in data.items():
        runs = entry["runs"]

        def per_task(run: dict[str, Any], key: str) -> float:
            finished: int = run["finished"]
            return float(run[key]) / finished if finished else float("nan")

        def med(kind: str, key: str, runs: list[dict[str, Any]] = runs) -> float:
            return median([per_task(run[kind], key) for run in runs])

        ratio = median([per_task(r["sdk"], "cpu_s") / per_task(r["floor"], "cpu_s") for r in runs])
        rows.append(
            f"| {name} | {med('sdk', 'requests'):.2f} | {med('floor', 'requests'):.2f} "
            f"| {med('sdk', 'cpu_s') * 1e3:.2f} | {med('floor', 'cpu_s') * 1e3:.2f} "
            f"| {ratio:.2f} |"
        )
    return "\n".join(rows)


def tables_of(results: dict[str, Any]) -> list[str]:
    """The Markdown tables of whatever sections ``results`` holds."""
    tables = []
    if "import" in results:
        tables.append("### Import time\n\n" + import_table(results["import"]))
    if "polling" in results:
        tables.append("### Polling\n\n" + polling_table(results["polling"]))
    if "overhead" in results:
        tables.append("### Client overhead\n\n" + overhead_table(results["overhead"]))
        tables.append("Per task:\n\n" + per_task_table(results["overhead"]))
    return tables


# -- polling ------------------------------------------------------------------------------

#: A round of 30 s and a queue of 15 s, both ±30 %, run 30 times faster (a round: 1 s).
POLL_SCALE = 1 / 30
POLL_TASK = {"round_seconds": 30 * POLL_SCALE, "queue_seconds": 15 * POLL_SCALE, "jitter": 0.3}
POLL_ROUNDS = 5
#: Seconds between two submits of one schedule: the second half of the tasks starts
#: after the first ones ended (a task takes about 5 s), so the learning shows.
POLL_STAGGER = 0.25


def bench_polling(repeats: int, tasks: int) -> dict[str, Any]:
    runs = []
    for r in range(repeats):
        with emulator(seed=100 + r, **POLL_TASK) as (base, truth_url):
            result = client(
                "polling",
                f"--base-url={base}",
                f"--tasks={tasks}",
                f"--rounds={POLL_ROUNDS}",
                f"--scale={POLL_SCALE}",
                f"--stagger={POLL_STAGGER}",
                f"--seed={r}",
            )
            known = truth(truth_url)
        round_time = POLL_TASK["round_seconds"]
        summary = {}
        for name, records in result.items():
            gets = [known[rec["task_id"]]["gets"] for rec in records]
            lags = sorted(
                (rec["returned_at"] - known[rec["task_id"]]["ends_at"]) / round_time
                for rec in records
            )
            # Middle rounds (not the last, which is the end): seen how long after they
            # finished, and how many were first seen together with the next one.
            middle: list[float] = []
            together = 0
            for rec in records:
                if not rec["seen"]:  # completion mode: middle rounds are not looked for
                    continue
                finishes = known[rec["task_id"]]["rounds"][:-1]
                seen = rec["seen"][: len(finishes)]
                middle += [(s - f) / round_time for s, f in zip(seen, finishes, strict=True)]
                together += sum(a == b for a, b in itertools.pairwise(rec["seen"]))
            # Warm: the second half, started once the first tasks had ended.
            warm = [g for g, rec in zip(gets, records, strict=True) if rec["i"] >= tasks // 2]
            summary[name] = {
                "gets": statistics.fmean(gets),
                "gets_warm": statistics.fmean(warm) if warm else float("nan"),
                "lag_mean": statistics.fmean(lags),
                "lag_p95": lags[min(len(lags) - 1, round(0.95 * (len(lags) - 1)))],
                "tasks": len(records),
                "round_lag_mean": statistics.fmean(middle) if middle else None,
                "rounds_together": together / len(middle) if middle else None,
            }
        runs.append(summary)
        print(f"  polling repeat {r + 1}: {json.dumps(summary)}", file=sys.stderr)
    return {"runs": runs, "rounds": POLL_ROUNDS, "task": POLL_TASK, "tasks": tasks}


def polling_table(data: dict[str, Any]) -> str:
    runs = data["runs"]
    fixed = next(name for name in runs[0] if name.startswith("fixed"))
    rows = [
        "| schedule | GETs/task | GETs/task, warm | vs fixed | lag mean (rounds) | lag p95"
        " | lag mean vs fixed | middle-round lag | middle rounds seen with the next |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in runs[0]:

        def med(key: str, name: str = name) -> float:
            return median([run[name][key] for run in runs])

        def rel(key: str, name: str = name) -> float:
            return median([run[name][key] / run[fixed][key] for run in runs])

        middle = "| n/a | n/a |"
        if all(run[name].get("round_lag_mean") is not None for run in runs):
            middle = f"| {med('round_lag_mean'):.3f} | {med('rounds_together'):.0%} |"
        rows.append(
            f"| {name} | {med('gets'):.2f} | {med('gets_warm'):.2f} | {rel('gets'):.2f} "
            f"| {med('lag_mean'):.3f} | {med('lag_p95'):.3f} | {rel('lag_mean'):.2f} {middle}"
        )
    return "\n".join(rows)


# -- import time ---------------------------------------------------------------------------


def import_micros(module: str) -> int:
    done = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        pinned(0, [PY, "-X", "importtime", "-c", f"import {module}"]),
        capture_output=True,
        text=True,
        check=True,
    )
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)$", line)
        if match and match.group(2) == module:
            return int(match.group(1))
    raise RuntimeError(f"no import time for {module}")


def bench_import(repeats: int) -> dict[str, Any]:
    pairs = [(import_micros("spo_async"), import_micros("aiohttp")) for _ in range(repeats)]
    return {"spo_async_us": [a for a, _ in pairs], "aiohttp_us": [b for _, b in pairs]}


def import_table(data: dict[str, Any]) -> str:
    ours, theirs = data["spo_async_us"], data["aiohttp_us"]
    ratio = median([a / b for a, b in zip(ours, theirs, strict=True)])
    return "\n".join(
        [
            "| `import spo_async` ms | `import aiohttp` ms | ratio |",
            "|---|---|---|",
            f"| {median(ours) / 1000:.1f} | {median(theirs) / 1000:.1f} | {ratio:.2f} |",
        ]
    )


# -- plot and profile ----------------------------------------------------------------------


def bench_plot(warmup: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from _client import schedules

    traces = {}
    for name in schedules(POLL_SCALE, 0):
        with emulator(seed=7, **POLL_TASK) as (base, truth_url):
            result = client(
                "trace",
                f"--base-url={base}",
                f"--schedule={name}",
                f"--warmup={warmup}",
                f"--rounds={POLL_ROUNDS}",
                f"--scale={POLL_SCALE}",
                "--stagger=0.05",
            )
            task = truth(truth_url)[result["task_id"]]
        traces[name] = {"looks": result["looks"], "task": task}
    draw(traces, RESULTS / "polling.png")
    return traces


def draw(traces: dict[str, Any], path: Path) -> None:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    round_time = POLL_TASK["round_seconds"]
    names = list(traces)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.4 * len(names)), dpi=100)
    any_task = traces[names[0]]["task"]
    t0 = any_task["submitted_at"]
    ax.axvspan(0, (any_task["queue_ends_at"] - t0) / round_time, color="0.9", label="queue")
    for k, finish in enumerate(any_task["rounds"]):
        ax.axvline((finish - t0) / round_time, color="0.6", lw=0.8, ls="--" if k else ":")
    for row, name in enumerate(names):
        task = traces[name]["task"]
        looks = [(t - task["submitted_at"]) / round_time for t in traces[name]["looks"]]
        ax.plot(looks, [row] * len(looks), "|", ms=12, mew=2)
        ax.text(looks[-1] + 0.1, row, f"{len(looks)} GETs", va="center", fontsize=8)
    ax.set_yticks(range(len(names)), [n.split(" (")[0] for n in names], fontsize=8)
    ax.set_xlabel("time since submit (rounds of 30 s); dashed: a round ends")
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_title("When each schedule looks at one 5-round task", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def bench_profile(shrink: int) -> str:
    path = RESULTS / "profile.txt"
    _, tasks, inflight = OVERHEAD_SCENARIOS[1]
    with emulator(seed=0, **OVERHEAD_TASK) as (base, _truth):
        client(
            "overhead",
            f"--base-url={base}",
            "--kind=sdk",
            f"--tasks={tasks // shrink // 5}",
            f"--inflight={inflight // shrink}",
            f"--interval={OVERHEAD_INTERVAL}",
            f"--rounds={OVERHEAD_ROUNDS}",
            f"--profile={path}",
        )
    return str(path)


def spo_async_version() -> str:
    """Where ``spo_async`` comes from and at which commit, so a table can be traced back."""
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [PY, "-c", "import os, spo_async; print(os.path.dirname(spo_async.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    )
    head = subprocess.run(  # noqa: S603
        ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{done.stdout.strip()} (repository HEAD {head})"


def save(results: dict[str, Any]) -> None:
    """Merge ``results`` into ``bench/results/latest.json`` (kept after each section)."""
    path = RESULTS / "latest.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(results)
    path.write_text(json.dumps(merged, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--only", default="overhead,polling,import,plot,profile")
    parser.add_argument(
        "--tables", action="store_true", help="print the tables of results/latest.json, run nothing"
    )
    args = parser.parse_args()
    if args.tables:
        saved = json.loads((RESULTS / "latest.json").read_text())
        print(f"<!-- {json.dumps(saved['header'])} -->\n")
        print("\n\n".join(tables_of(saved)))
        return
    only = set(args.only.split(","))
    repeats = args.repeats or (1 if args.quick else 3)
    shrink = 10 if args.quick else 1
    RESULTS.mkdir(exist_ok=True)
    started = time.perf_counter()
    header = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "bench/run.py", *sys.argv[1:]]),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "pinned": PIN,
        "load_average_before": os.getloadavg(),
        "spo_async": spo_async_version(),
        "repeats": repeats,
    }
    results: dict[str, Any] = {"header": header}
    if "import" in only:
        results["import"] = bench_import(max(repeats * 4, 5))
        save(results)
    if "polling" in only:
        results["polling"] = bench_polling(repeats, 16 if args.quick else 60)
        save(results)
    if "overhead" in only:
        results["overhead"] = bench_overhead(repeats, shrink)
        save(results)
    if "plot" in only:
        results["plot"] = bench_plot(3 if args.quick else 10)
        save(results)
    if "profile" in only:
        results["profile"] = bench_profile(shrink)
        save(results)
    header["load_average_after"] = os.getloadavg()
    header["seconds"] = round(time.perf_counter() - started)
    save(results)
    print(f"<!-- {json.dumps(header)} -->\n")
    print("\n\n".join(tables_of(results)))


if __name__ == "__main__":
    main()
