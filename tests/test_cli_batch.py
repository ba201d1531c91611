"""``spo-async batch``: outcomes per row, a summary, and resuming after a kill or Ctrl-C.

The emulator runs in this process (a :class:`ThreadedEmulator`), so it outlives the
command line when the test kills it, and counts every task ever created: a resumed
batch must finish without a single duplicate.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from spo_async.testing import EmulatorConfig, TaskOutcome, ThreadedEmulator

from tests.cli_helpers import EXAMPLES, ROOT, cli_env, run_cli, start_cli
from tests.conftest import wait_until

QA = [{"question": "A text", "answer": "A line"}]


def write_rows(path: Path, count: int, **fields: Any) -> list[str]:
    """Write ``count`` rows with ids ``r0``... and return the ids."""
    ids = [f"r{i}" for i in range(count)]
    rows = [{"id": i, "prompt": f"Summarize, take {i}.", "qa": QA, **fields} for i in ids]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ids


def read_output(path: Path) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    by_key = {line["key"]: line for line in lines}
    assert len(by_key) == len(lines), "a row was written twice"
    return by_key


def service(emu: ThreadedEmulator) -> tuple[list[str], Mapping[str, str]]:
    return ["--base-url", emu.base_url, "--poll-interval", "0.05"], {"AI302_API_KEY": emu.api_key}


def fail_marked(body: Mapping[str, Any]) -> TaskOutcome | None:
    return (
        TaskOutcome(fail_at_round=2, error="judge exploded") if "FAIL" in body["prompt"] else None
    )


@pytest.fixture
def spo_emulator_config() -> EmulatorConfig:
    return EmulatorConfig(round_seconds=0.02, outcome_for=fail_marked)


def test_batch_on_the_emulator_writes_one_line_per_row_and_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    done = run_cli(
        "batch", "--emulator", "--emulator-round-seconds", "0.02", str(EXAMPLES / "batch.jsonl"),
        "-o", str(out),
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    lines = read_output(out)
    assert set(lines) == {"girlfriend", "poem", "navigate", "support", "summary"}
    for line in lines.values():
        assert set(line) == {
            "key", "line", "status", "task_id", "best_prompt", "result", "error", "from_journal",
        }  # fmt: skip
        assert (line["status"], line["error"]) == ("succeeded", None)
        assert line["result"]["best_prompt"] == line["best_prompt"]
    assert lines["navigate"]["line"] == 3
    assert len(lines["navigate"]["result"]["round_data_list"]) == 3  # its own max_rounds
    assert "succeeded" in done.stdout
    assert "batch: 5 rows" in done.stdout


def test_failed_rows_are_written_with_their_error_and_exit_1(
    spo_emulator: ThreadedEmulator, tmp_path: Path
) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(
        json.dumps({"prompt": "Summarize.", "qa": QA}) + "\n\n"
        + json.dumps({"id": 7, "prompt": "FAIL here", "qa": QA, "max_rounds": 3}) + "\n"
    )  # fmt: skip
    flags, env = service(spo_emulator)
    done = run_cli(
        "batch", str(source), "-o", str(out), "--json", "--rate", "50", "--concurrency", "2",
        *flags, env=env,
    )  # fmt: skip

    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["total"] == 2
    assert (summary["succeeded"], summary["failed"], summary["errored"]) == (1, 1, 0)
    lines = read_output(out)
    assert lines["1"]["status"] == "succeeded"  # no id: the key is the line number
    assert lines["7"]["status"] == "failed"
    assert lines["7"]["line"] == 3
    assert lines["7"]["error"] == {"type": "TaskFailedError", "message": "judge exploded"}
    assert lines["7"]["result"]["status"] == "fail"


@pytest.mark.parametrize(
    "spo_emulator", [{"round_seconds": 1.2, "outcome_for": None}], indirect=True
)
def test_a_batch_killed_halfway_resumes_to_completion_without_duplicates(
    spo_emulator: ThreadedEmulator, tmp_path: Path
) -> None:
    source, out, journal = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "j.db"
    ids = write_rows(source, 6, max_rounds=2)
    flags, env = service(spo_emulator)
    args = ("batch", str(source), "-o", str(out), "--journal", str(journal), "--concurrency", "3")
    first = start_cli(*args, *flags, env=env)

    def polled_all_six() -> bool:
        # A batch writes a task id to the journal (durably) before it first polls the task.
        ids = [s.task_id for s in spo_emulator.submits if s.task_id is not None]
        return len(ids) == 6 and all(spo_emulator.task_gets[i] for i in ids)

    try:
        # Wave one (3 tasks) finishes; wave two is submitted, and its ids journaled.
        wait_until(lambda: out.exists() and len(out.read_text().splitlines()) >= 3, what="wave one")
        wait_until(polled_all_six, what="every task id journaled and polled")
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.communicate(timeout=10)
    assert first.returncode == -signal.SIGKILL
    assert len(out.read_text().splitlines()) < 6

    second = run_cli(*args, *flags, env=env)

    assert second.returncode == 0, second.stderr
    lines = read_output(out)
    assert set(lines) == set(ids)
    assert all(line["status"] == "succeeded" for line in lines.values())
    assert sum(line["from_journal"] for line in lines.values()) >= 3
    assert spo_emulator.tasks_created == 6
    assert sorted(s.body["prompt"] for s in spo_emulator.submits) == sorted(
        f"Summarize, take {i}." for i in ids
    )


@pytest.mark.parametrize(
    "spo_emulator", [{"round_seconds": 1.2, "outcome_for": None}], indirect=True
)
def test_ctrl_c_stops_submitting_and_prints_the_command_that_resumes(
    spo_emulator: ThreadedEmulator, tmp_path: Path
) -> None:
    source, out, journal = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "j.db"
    ids = write_rows(source, 6, max_rounds=2)
    flags, env = service(spo_emulator)
    args = ("batch", str(source), "-o", str(out), "--journal", str(journal), "--concurrency", "3")
    first = start_cli(*args, *flags, env=env)
    try:
        wait_until(lambda: spo_emulator.tasks_created == 3, what="wave one submitted")
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=10)
    finally:
        first.kill()
    assert first.returncode == 130, err
    assert spo_emulator.tasks_created == 3  # nothing more was submitted
    assert "3 tasks still running on the service" in err, err
    resume = err.split("resume with:\n")[1].splitlines()[0].strip()

    second = subprocess.run(  # noqa: S603 - the command the first run printed
        shlex.split(resume), env=cli_env(env), cwd=ROOT, capture_output=True, text=True,
        timeout=15, check=False,
    )  # fmt: skip

    assert second.returncode == 0, second.stderr
    assert set(read_output(out)) == set(ids)
    assert spo_emulator.tasks_created == 6
