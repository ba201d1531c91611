"""Optimize a JSON Lines file of prompts with a journal; kill the run; resume it.

``run_batch`` is the part to copy: it reads one request per line, runs them all with
:meth:`AsyncSPOClient.optimize_many` and a journal, and writes one outcome per line (a
success with its whole result, in :meth:`TaskResult.to_dict`'s JSON form).

Run as a script, it shows a crash and a resume against the emulator: a child process
runs the batch and is killed with SIGKILL (no cleanup of any kind) after its first
outcomes; then the same batch runs again with the same journal. Finished rows come
back from the journal, running tasks are polled instead of submitted again, and the
emulator confirms that no row was submitted twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from spo_async import (
    AsyncSPOClient,
    Errored,
    Failed,
    OptimizationRequest,
    OutcomeUnknown,
    Succeeded,
)
from spo_async.testing import Emulator, EmulatorConfig


def read_requests(path: Path) -> Iterator[tuple[str, OptimizationRequest]]:
    """``(id, request)`` for each line of a JSON Lines file."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                yield row.pop("id"), OptimizationRequest(**row)


async def run_batch(client: AsyncSPOClient, source: Path, output: Path, journal: Path) -> None:
    """Optimize every line of ``source``; append each outcome to ``output`` as it lands."""
    requests = list(read_requests(source))  # read (and validate) all before sending any
    batch = client.optimize_many(requests, journal=journal, concurrency=3)
    with output.open("a", encoding="utf-8") as out:
        async with batch:  # leaving it, even by an exception, stops the batch
            async for outcome in batch:
                match outcome:
                    case Succeeded(result=result):
                        line = {"status": "succeeded", "result": result.to_dict()}
                    case Failed(result=result):
                        line = {"status": "failed", "error": str(result.error)}
                    case OutcomeUnknown():
                        line = {"status": "unknown: a task may exist, not resubmitted"}
                    case Errored(error=error, task_id=task_id):
                        line = {"status": "errored", "error": str(error), "task_id": task_id}
                line |= {"id": outcome.key, "from_journal": outcome.from_journal}
                out.write(json.dumps(line) + "\n")
                out.flush()
                origin = " (from the journal)" if outcome.from_journal else ""
                print(f"{outcome.key}: {line['status']}{origin}", flush=True)


# -- the demo -----------------------------------------------------------------------------

QUESTIONS = [
    "My order #123 never arrived.",
    "I was charged twice this month.",
    "The app logs me out every five minutes.",
    "How do I change my delivery address?",
    "Your courier left the parcel in the rain.",
    "I want to cancel my subscription.",
]


def write_input(path: Path) -> None:
    """Six tickets to summarize, one request per line."""
    with path.open("w", encoding="utf-8") as lines:
        for number, question in enumerate(QUESTIONS, start=1):
            row = {
                "id": f"ticket-{number}",
                "prompt": "Summarize the customer's ticket in one sentence.",
                "qa": [{"question": question, "answer": "[who][what went wrong][ask]"}],
                "model": "gpt-4o-mini",
                "max_rounds": 2 + number % 3,
            }
            lines.write(json.dumps(row) + "\n")


async def child(base_url: str, api_key: str, folder: Path) -> None:
    """The first run: killed by the parent partway through."""
    async with AsyncSPOClient(api_key=api_key, base_url=base_url) as client:
        await run_batch(client, folder / "tickets.jsonl", folder / "out.jsonl", folder / "j.db")


async def demo(folder: Path) -> None:
    """Run the batch in a child process, kill it, then resume it here."""
    write_input(folder / "tickets.jsonl")
    async with Emulator(EmulatorConfig(round_seconds=0.4, seed=5)) as emu:
        print("-- first run (killed after two outcomes)")
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--child", emu.base_url, emu.api_key, str(folder),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        for _ in range(2):
            line = await process.stdout.readline()  # type: ignore[union-attr]
            print("  " + line.decode().strip())
        process.send_signal(signal.SIGKILL)  # no cleanup, no finally: a crash
        await process.wait()

        first_run = len(emu.submits)

        print("-- second run, same journal")
        async with AsyncSPOClient(api_key=emu.api_key, base_url=emu.base_url) as client:
            await run_batch(client, folder / "tickets.jsonl", folder / "out.jsonl", folder / "j.db")

        print("-- what the service saw")
        second_run = len(emu.submits) - first_run
        print(f"  submits: {first_run} in the first run, {second_run} in the second")
        submitted = [record.body["qa"][0]["question"] for record in emu.submits]
        if len(submitted) != len(set(submitted)):
            raise SystemExit("a row was submitted twice")
        print(f"  no row submitted twice; {len(set(submitted))} of {len(QUESTIONS)} rows sent")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        asyncio.run(child(sys.argv[2], sys.argv[3], Path(sys.argv[4])))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(tmp)
            asyncio.run(demo(Path(tmp)))
