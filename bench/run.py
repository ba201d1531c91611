"""Run the benchmark suite and print its tables (Markdown), as pasted into bench/README.md.

    python bench/run.py            # everything, a few minutes on 2 CPUs
    python bench/run.py --quick    # smaller and one repeat: a smoke test
    python bench/run.py --only schedules,second,plot

The emulator runs in its own process (``bench/_server.py``) and the client in
another (``bench/_client.py``); with two CPUs or more they are pinned apart with
``taskset`` (emulator on CPU 1, client on CPU 0). Each figure is the median over
``--repeats`` repeats; each ratio is taken inside one repeat, then the median of
those ratios is reported. Raw results go to ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PY = sys.executable
#: The command line's console script, installed next to the interpreter (``.[cli]``).
CLI = str(Path(PY).parent / "spo-async")
PIN = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def pinned(cpu: int, argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if PIN else list(argv)


@contextmanager
def emulator(**settings: float) -> Iterator[tuple[str, str]]:
    """A fresh emulator process (``bench/_server.py``) for one measurement."""
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
    if "schedules" in results:
        tables.append("### Poll schedules\n\n" + schedules_table(results["schedules"]))
        cold = cold_table(results["schedules"])
        tables.append("The default's first wave, every repeat:\n\n" + cold)
    if "second" in results:
        tables.append("### A second process\n\n" + second_process_table(results["second"]))
    if "cli" in results:
        tables.append("### `spo-async optimize`, again and again\n\n" + cli_table(results["cli"]))
    if "overhead" in results:
        tables.append("### Client overhead\n\n" + overhead_table(results["overhead"]))
        tables.append("Per task:\n\n" + per_task_table(results["overhead"]))
    return tables


# -- schedules ------------------------------------------------------------------------------

#: The emulator: rounds of 1 s real time, each task's pace drawn within ±30 % (all its
#: rounds keep it; round 1 takes a third of a round), no queue, 4 rounds per task.
SCHED_TASK = {"round_seconds": 1.0, "queue_seconds": 0.0, "jitter": 0.0, "task_jitter": 0.3}
SCHED_ROUNDS, SCHED_TASKS, SCHED_WAVES = 4, 20, 3
#: The client's clock runs this many times faster than real time, so the same 1 s rounds
#: look like rounds of 2 s or 30 s to the schedule (every constant of the SDK included).
SCHED_SCALES = {"2 s": 2.0, "30 s": 30.0}
#: The rows: the client's default schedule (the client fills ``PollState.submitted_at``
#: for the tasks it submitted, so the first look is planned), the round-aware baseline,
#: and the web app's fixed 5 s.
SCHED_ROWS = {
    "default": ["--schedule=default"],
    "baseline: last round + median, then steps": ["--schedule=baseline"],
    "fixed 5 s (302.AI web app)": ["--schedule=fixed"],
}


def lags(records: list[dict[str, Any]], known: dict[str, Any], mode: str) -> list[float]:
    """In rounds: the end to the return of ``await``, or each round to its event."""
    round_time = SCHED_TASK["round_seconds"]
    if mode == "completion":
        return [(r["returned_at"] - known[r["task_id"]]["ends_at"]) / round_time for r in records]
    out = []
    for r in records:
        finishes = known[r["task_id"]]["rounds"]
        out += [(r["seen"][str(k + 1)] - f) / round_time for k, f in enumerate(finishes)]
    return out


def summarize(records: list[dict[str, Any]], known: dict[str, Any], mode: str) -> dict[str, Any]:
    by_wave: dict[str, Any] = {}
    for wave in sorted({r["wave"] for r in records}):
        chosen = [r for r in records if r["wave"] == wave]
        by_wave[str(wave)] = {
            "gets": statistics.fmean(known[r["task_id"]]["gets"] for r in chosen),
            "lag": statistics.fmean(lags(chosen, known, mode)),
            "tasks": len(chosen),
        }
    return by_wave


def clients_at_once(argvs: list[list[str]]) -> list[Any]:
    """Run several client processes side by side (all on CPU 0) and read their results."""
    procs = [
        subprocess.Popen(  # noqa: S603 - our own interpreter and script
            pinned(0, [PY, str(HERE / "_client.py"), *argv]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"client failed: {stderr[-3000:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def bench_schedules(repeats: int, tasks: int, cells: set[str]) -> dict[str, Any]:
    """Every row, side by side on one emulator, per time scale and mode, ``repeats`` times.

    ``cells`` names the time scales and modes to run (``"30 s progress"``, say).
    """
    runs: dict[str, Any] = {}
    for scale_name, scale in SCHED_SCALES.items():
        for mode in ("completion", "progress"):
            key = f"{scale_name} {mode}"
            if key not in cells:
                continue
            runs[key] = []
            for r in range(repeats):
                with emulator(seed=200 + r, **SCHED_TASK) as (base, truth_url):
                    common = [
                        "schedules",
                        f"--base-url={base}",
                        f"--scale={scale}",
                        f"--mode={mode}",
                        f"--tasks={tasks}",
                        f"--waves={SCHED_WAVES}",
                        f"--rounds={SCHED_ROUNDS}",
                    ]
                    results = clients_at_once([common + extra for extra in SCHED_ROWS.values()])
                    known = truth(truth_url)
                summary = {
                    row: summarize(records, known, mode)
                    for row, records in zip(SCHED_ROWS, results, strict=True)
                }
                runs[key].append(summary)
                print(f"  schedules {key} repeat {r + 1}: {json.dumps(summary)}", file=sys.stderr)
    return {"runs": runs, "task": SCHED_TASK, "rounds": SCHED_ROUNDS, "tasks": tasks}


def schedules_table(data: dict[str, Any]) -> str:
    """One table per time scale: cold (first wave) and warm (last wave), both modes."""
    tables = []
    last = str(SCHED_WAVES - 1)
    for scale_name in SCHED_SCALES:
        rows = [
            f"**Rounds of {scale_name}** (GETs per task / mean lag in rounds)\n",
            "| schedule | completion, cold | completion, warm | progress, cold | progress, warm |",
            "|---|---|---|---|---|",
        ]
        for row in SCHED_ROWS:
            cells = []
            for mode in ("completion", "progress"):
                runs = data["runs"].get(f"{scale_name} {mode}")
                if runs is None:
                    cells += ["not run", "not run"]
                    continue
                for wave in ("0", last):
                    gets = median([run[row][wave]["gets"] for run in runs])
                    lag = median([run[row][wave]["lag"] for run in runs])
                    cells.append(f"{gets:.2f} / {lag:.3f}")
            rows.append(f"| {row} | " + " | ".join(cells) + " |")
        tables.append("\n".join(rows))
    return "\n\n".join(tables)


def cold_table(data: dict[str, Any]) -> str:
    """The default schedule's first wave in each cell run: the mean and span of the repeats.

    The tables above give medians; a first wave varies most from repeat to repeat (how
    its first looks fall decides when the others learn), so its mean over many repeats
    (``--repeats``) is the figure to set against a target.
    """
    rows = [
        "| cell | repeats | GETs per task, mean (min to max) | lag in rounds, mean (min to max) |",
        "|---|---|---|---|",
    ]
    for key, runs in data["runs"].items():
        gets = [run["default"]["0"]["gets"] for run in runs]
        lag = [run["default"]["0"]["lag"] for run in runs]
        rows.append(
            f"| {key}, cold | {len(runs)} "
            f"| {statistics.fmean(gets):.2f} ({min(gets):.2f} to {max(gets):.2f}) "
            f"| {statistics.fmean(lag):.3f} ({min(lag):.3f} to {max(lag):.3f}) |"
        )
    return "\n".join(rows)


# -- a second process with the same cache ---------------------------------------------------


#: The columns of the second-process table: what the cache file held, and the heading.
SECOND_KINDS = {
    "cached": f"cache from a batch of {SCHED_TASKS} tasks",
    "after_one": "cache from one earlier task",
    "after_two": "cache from two earlier tasks",
    "alone": "no cache",
}


def bench_second_process(repeats: int, tasks: int, cells: set[str]) -> dict[str, Any]:
    """What the first task of a new process costs, by what the cache file holds.

    Each single task is what one ``spo-async optimize`` is: a new process, one task.
    ``cached``: one process learns a wave of ``tasks`` (a batch run), then three single
    tasks, one after the other, each reuse its file. ``alone``, ``after_one`` and
    ``after_two``: a chain of single tasks on a file of their own, the first with
    nothing learnt, the next after one earlier task, the last after two (what running
    ``spo-async optimize`` again and again gives).
    """
    out: dict[str, Any] = {}
    for scale_name, scale in SCHED_SCALES.items():
        for mode in ("completion", "progress"):
            key = f"{scale_name} {mode}"
            if key not in cells:
                continue
            out[key] = {kind: [] for kind in SECOND_KINDS}
            for r in range(repeats):
                with (
                    tempfile.TemporaryDirectory() as folder,
                    emulator(seed=300 + r, **SCHED_TASK) as (base, truth_url),
                ):
                    cache = str(Path(folder) / "schedule.json")
                    chain = str(Path(folder) / "chain.json")
                    common = [
                        "schedules",
                        f"--base-url={base}",
                        f"--scale={scale}",
                        f"--mode={mode}",
                        f"--rounds={SCHED_ROUNDS}",
                    ]
                    client(*common, f"--cache={cache}", f"--tasks={tasks}", "--waves=1")
                    cached = [
                        client(*common, f"--cache={cache}", "--tasks=1", "--waves=1")[0]
                        for _ in range(3)
                    ]
                    alone, after_one, after_two = (
                        client(*common, f"--cache={chain}", "--tasks=1", "--waves=1")[0]
                        for _ in range(3)
                    )
                    known = truth(truth_url)
                runs = {
                    "cached": cached,
                    "after_one": [after_one],
                    "after_two": [after_two],
                    "alone": [alone],
                }
                for kind, records in runs.items():
                    for record in records:
                        out[key][kind].append(
                            {
                                "gets": known[record["task_id"]]["gets"],
                                "lag": statistics.fmean(lags([record], known, mode)),
                            }
                        )
            print(f"  second process {key}: {json.dumps(out[key])}", file=sys.stderr)
    return out


def second_process_table(data: dict[str, Any]) -> str:
    rows = [
        "| rounds, mode | " + " | ".join(SECOND_KINDS.values()) + " |",
        "|---" * (len(SECOND_KINDS) + 1) + "|",
    ]
    for key, entry in data.items():
        cells = []
        for kind in SECOND_KINDS:
            records = entry.get(kind)
            if not records:
                cells.append("")
                continue
            gets = statistics.fmean(x["gets"] for x in records)
            lag = statistics.fmean(x["lag"] for x in records)
            cells.append(f"{gets:.2f} GETs / {lag:.3f} rounds (n = {len(records)})")
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


# -- the command line, run again and again ----------------------------------------------------

#: The runs of one chain: ``spo-async optimize`` with nothing learnt, then after one
#: earlier run, then after two, each a new process on the chain's own cache folder.
CLI_RUNS = ("nothing learnt", "after one run", "after two runs")
#: Chains side by side (each on its own cache folder, all on one emulator).
CLI_AT_ONCE = 4


def _cli_chain(base: str, folder: Path, settings: Path, runs: int) -> list[dict[str, Any]]:
    """One chain's ``spo-async optimize`` runs, one after the other: their task ids."""
    from spo_async.testing import DEFAULT_API_KEY  # here: --tables needs no SDK

    env = {**os.environ, "XDG_CACHE_HOME": str(folder), "AI302_API_KEY": DEFAULT_API_KEY}
    out = []
    for _ in range(runs):
        done = subprocess.run(  # noqa: S603 - our own console script and arguments
            pinned(0, [CLI, "optimize", str(settings), f"--base-url={base}", "--json"]),
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
            env=env,
        )
        if done.returncode != 0:
            raise RuntimeError(f"spo-async optimize failed: {done.stderr[-3000:]}")
        out.append({"task_id": json.loads(done.stdout)["task_id"]})
    return out


def bench_cli(chains: int) -> dict[str, Any]:
    """``spo-async optimize`` of one model run three times in a row, as a user would.

    The real command, in a new process each time, its output piped (so it prints plain
    lines and looks for the end): on rounds of 2 s real time (the command cannot scale
    its clock), each task's pace within ±30 %, four rounds. A chain has a cache folder
    of its own (``XDG_CACHE_HOME``); ``chains`` chains run, ``CLI_AT_ONCE`` at a time.
    The lag is from the task's true end to the GET that saw it.
    """
    task = {**SCHED_TASK, "round_seconds": 2.0}
    records: dict[str, list[dict[str, Any]]] = {run: [] for run in CLI_RUNS}
    with tempfile.TemporaryDirectory() as folder:
        settings = Path(folder) / "settings.json"
        settings.write_text(
            json.dumps(
                {
                    "prompt": "Summarize the ticket in one sentence.",
                    "qa": [{"question": "I want my money back for order #9.", "answer": "[ask]"}],
                    "model": "bench-model",
                    "max_rounds": SCHED_ROUNDS,
                    "language": "en",
                }
            )
        )
        with (
            emulator(seed=500, **task) as (base, truth_url),
            concurrent.futures.ThreadPoolExecutor(CLI_AT_ONCE) as pool,
        ):
            homes = [Path(folder) / f"chain-{n}" for n in range(chains)]
            ran = list(pool.map(lambda h: _cli_chain(base, h, settings, len(CLI_RUNS)), homes))
            known = truth(truth_url)
    for chain in ran:
        for run, record in zip(CLI_RUNS, chain, strict=True):
            facts = known[record["task_id"]]
            if facts["last_get_at"] is None:
                raise RuntimeError(f"task {record['task_id']} was never looked at")
            records[run].append(
                {
                    "gets": facts["gets"],
                    "lag": (facts["last_get_at"] - facts["ends_at"]) / task["round_seconds"],
                }
            )
    print(f"  cli: {json.dumps(records)}", file=sys.stderr)
    return {"task": task, "rounds": SCHED_ROUNDS, "runs": records}


def cli_table(data: dict[str, Any]) -> str:
    rows = ["| `spo-async optimize` | GETs per task | lag, rounds | tasks |", "|---|---|---|---|"]
    for run, records in data["runs"].items():
        gets = statistics.fmean(x["gets"] for x in records)
        lag = statistics.fmean(x["lag"] for x in records)
        rows.append(f"| {run} | {gets:.2f} | {lag:.3f} | {len(records)} |")
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


PLOT_ROWS = {
    "default, completion": ["--schedule=default", "--mode=completion"],
    "default, progress": ["--schedule=default", "--mode=progress"],
    "baseline, completion": ["--schedule=baseline", "--mode=completion"],
    "fixed 5 s": ["--schedule=fixed", "--mode=completion"],
}


def bench_plot() -> dict[str, Any]:
    """The looks at one task (30 s rounds) after two warm-up waves, per schedule."""
    traces = {}
    for name, extra in PLOT_ROWS.items():
        with emulator(seed=7, **SCHED_TASK) as (base, truth_url):
            result = client(
                "trace",
                f"--base-url={base}",
                f"--rounds={SCHED_ROUNDS}",
                f"--scale={SCHED_SCALES['30 s']}",
                "--tasks=10",
                "--warmup=2",
                *extra,
            )
            task = truth(truth_url)[result["task_id"]]
        traces[name] = {"looks": result["looks"], "task": task}
    draw(traces, RESULTS / "polling.png")
    return traces


def draw(traces: dict[str, Any], path: Path) -> None:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    round_time = SCHED_TASK["round_seconds"]
    names = list(traces)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(names)), dpi=100)
    for row, name in enumerate(names):
        task = traces[name]["task"]
        t0 = task["submitted_at"]
        for k, finish in enumerate(task["rounds"]):
            x = (finish - t0) / round_time
            ax.plot([x, x], [row - 0.35, row + 0.35], color="0.6", lw=0.8, ls="--" if k else ":")
        looks = [(t - t0) / round_time for t in traces[name]["looks"]]
        ax.plot(looks, [row] * len(looks), "|", ms=12, mew=2)
        ax.text(looks[-1] + 0.08, row, f"{len(looks)} GETs", va="center", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("time since submit (rounds); grey: a round ends (dotted: round 1)")
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_title("When each schedule looks at one 4-round task (warm, rounds of 30 s)", fontsize=9)
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
        cwd=HERE,  # as the client processes import it (not from the current directory)
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
    parser.add_argument("--only", default="overhead,schedules,second,cli,import,plot,profile")
    parser.add_argument(
        "--cells",
        default=",".join(f"{s} {m}" for s in SCHED_SCALES for m in ("completion", "progress")),
        help='the schedule cells to run, such as "30 s progress,2 s progress"',
    )
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
    cells = {cell.strip() for cell in args.cells.split(",")}
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
    if "schedules" in only:
        results["schedules"] = bench_schedules(repeats, 8 if args.quick else SCHED_TASKS, cells)
        save(results)
    if "second" in only:
        second_repeats = args.repeats or (1 if args.quick else 2)
        results["second"] = bench_second_process(second_repeats, SCHED_TASKS, cells)
        save(results)
    if "cli" in only:
        results["cli"] = bench_cli(4 if args.quick else CLI_AT_ONCE * repeats)
        save(results)
    if "overhead" in only:
        results["overhead"] = bench_overhead(repeats, shrink)
        save(results)
    if "plot" in only:
        results["plot"] = bench_plot()
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
