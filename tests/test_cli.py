"""``spo-async optimize``, ``status``, ``wait`` and ``emulator``, run as subprocesses."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from spo_async import AsyncSPOClient, OptimizationRequest, QAPair, TaskResult
from spo_async.testing import EmulatorConfig, TaskOutcome, ThreadedEmulator

from tests.cli_helpers import EXAMPLES, cli_env, run_cli, start_cli, strip_ansi

ENVELOPE_KEYS = {"task_id", "status", "best_prompt", "result", "error", "resume", "exit_code"}
TASK_KEYS = {"task_id", "status", "best_prompt", "best_round", "round_data_list", "error"}
ROUND_KEYS = {"round", "prompt", "success", "sample"}


@pytest.fixture
def spo_emulator_config() -> EmulatorConfig:
    return EmulatorConfig(round_seconds=0.02, seed=3)


def service(emu: ThreadedEmulator) -> tuple[list[str], dict[str, str]]:
    """The flags and environment that point the command line at ``emu``."""
    return ["--base-url", emu.base_url, "--poll-interval", "0.02"], {"AI302_API_KEY": emu.api_key}


def check_task_json(envelope: dict[str, Any]) -> dict[str, Any]:
    """``envelope`` has the documented ``--json`` shape; return its ``result``."""
    assert set(envelope) == ENVELOPE_KEYS
    body: dict[str, Any] = envelope["result"]
    assert TASK_KEYS | {"max_rounds"} == set(body)
    assert (envelope["task_id"], envelope["status"]) == (body["task_id"], body["status"])
    assert envelope["best_prompt"] == body["best_prompt"]
    assert TaskResult.from_dict(body).to_dict() == body
    for r in body["round_data_list"]:
        assert set(r) >= ROUND_KEYS
        assert all(set(s) >= {"question", "answer"} for s in r["sample"])
    return body


def test_optimize_json_reads_a_json_settings_file_and_applies_the_flags(
    spo_emulator: ThreadedEmulator, tmp_path: Path
) -> None:
    settings = tmp_path / "s.json"
    settings.write_text(
        json.dumps(
            {
                "prompt": "Summarize.\n",
                "requirements": "None",
                "count": 50,
                "qa": [{"question": "A long text", "answer": "None"}],
            }
        )
    )
    flags, env = service(spo_emulator)
    flags += ["--model", "gpt-4o", "--max-rounds", "3", "--language", "en"]
    done = run_cli("optimize", str(settings), "--json", "--temperature", "0.2", *flags, env=env)

    assert done.returncode == 0, done.stderr
    envelope = json.loads(done.stdout)
    body = check_task_json(envelope)
    assert (envelope["error"], envelope["resume"], envelope["exit_code"]) == (None, None, 0)
    assert body["status"] == "success"
    assert body["max_rounds"] == 3
    assert len(body["round_data_list"]) == 3
    best = next(r for r in body["round_data_list"] if r["round"] == body["best_round"])
    assert body["best_prompt"] == best["prompt"]
    assert "'count'" in done.stderr
    assert "Traceback" not in done.stderr
    [submit] = spo_emulator.submits
    assert submit.body == {
        "prompt": "Summarize.",
        "requirements": "None",
        "qa": [{"question": "A long text", "answer": "None"}],
        "model": "gpt-4o",
        "max_rounds": 3,
        "language": "en",
        "temperature": 0.2,
    }


def test_optimize_emulator_prints_rounds_by_their_change_then_the_best_prompt() -> None:
    """Without a terminal: round lines and a table say what changed; the best prompt is last."""
    done = run_cli(
        "optimize", "--emulator", "--emulator-round-seconds", "0.02", str(EXAMPLES / "poem.yaml")
    )

    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout  # stdout is a pipe: no colour, no animation
    assert "change against" in done.stdout  # the column of what each round changed
    assert "(103 chars)" in done.stdout  # each round's prompt: its first line and length
    assert "{+" in done.stdout  # round 2 adds to the original prompt
    head, _, best = done.stdout.rpartition("best prompt (round ")
    assert "rounds" in head
    assert best.splitlines()[1] == "Create poetry in the requested style and format."
    assert best.count("Create poetry") == 1  # the best prompt, in full, once
    assert "round 1/5: original" in done.stderr
    round_lines = [line for line in done.stderr.splitlines() if "round 2/5" in line]
    assert round_lines == [
        "spo-async: round 2/5: better: +15 -0 words: …style and format.{+ - round 2 (from "
        "round 1): be playf…"
    ]
    assert "warning" not in done.stderr  # count: None is no word limit


def submit(emu: ThreadedEmulator, outcome: TaskOutcome | None = None) -> str:
    """Create one task on ``emu`` with the SDK and return its id."""
    if outcome is not None:
        emu.script_next(outcome)
    request = OptimizationRequest(
        prompt="Act as a tour guide",
        qa=[QAPair("What should I see?", "[a plan]")],
        model="claude-3-5-sonnet-20240620",
        max_rounds=4,
    )

    async def go() -> str:
        async with AsyncSPOClient(api_key=emu.api_key, base_url=emu.base_url) as client:
            return await client.submit(request)

    return asyncio.run(go())


def test_status_prints_a_snapshot_and_wait_waits_for_the_result(
    spo_emulator: ThreadedEmulator,
) -> None:
    slow = submit(spo_emulator, TaskOutcome(round_seconds=30))
    task_id = submit(spo_emulator, TaskOutcome(round_seconds=0.4))
    flags, env = service(spo_emulator)
    waiting = start_cli("wait", task_id, "--max-rounds", "4", "--json", *flags, env=env)
    snapshot = run_cli("status", slow, "--json", *flags, env=env)
    out, err = waiting.communicate(timeout=15)

    assert snapshot.returncode == 0, snapshot.stderr
    first = check_task_json(json.loads(snapshot.stdout))
    assert (first["task_id"], first["status"]) == (slow, "processing")
    assert waiting.returncode == 0, err
    final = check_task_json(json.loads(out))
    assert (final["status"], final["max_rounds"]) == ("success", 4)
    assert len(final["round_data_list"]) == 4
    human = run_cli("status", task_id, *flags, env=env)
    assert human.returncode == 0
    assert human.stdout.startswith(f"task {task_id}  success  round 4/4")
    assert human.stdout.rstrip().endswith(final["best_prompt"].splitlines()[-1])


def test_a_failed_task_exits_1_and_still_prints_its_result(
    spo_emulator: ThreadedEmulator, tmp_path: Path
) -> None:
    spo_emulator.script_next(TaskOutcome(fail_at_round=2, error={"err_code": -1024}))
    flags, _ = service(spo_emulator)
    key_file = tmp_path / "key"
    key_file.write_text(spo_emulator.api_key + "\n")
    settings = str(EXAMPLES / "girlfriend.yaml")
    done = run_cli("optimize", settings, "--json", "--api-key-file", str(key_file), *flags)

    assert done.returncode == 1
    envelope = json.loads(done.stdout)
    body = check_task_json(envelope)
    assert body["status"] == "fail"
    assert body["error"]["err_code"] == -1024
    assert envelope["error"]["type"] == "TaskFailedError"
    assert envelope["exit_code"] == 1


def test_a_wait_past_its_timeout_exits_5_and_says_how_to_resume(
    spo_emulator: ThreadedEmulator,
) -> None:
    task_id = submit(spo_emulator, TaskOutcome(round_seconds=30))
    flags, env = service(spo_emulator)
    done = run_cli("wait", task_id, "--timeout", "0.5", *flags, env=env)

    assert done.returncode == 5
    assert "keeps running" in done.stderr
    resume = f"spo-async wait {task_id} --base-url {spo_emulator.base_url}"
    assert resume in done.stderr
    assert "Traceback" not in done.stderr


def test_status_and_wait_with_emulator_and_no_id_look_at_a_demo_task() -> None:
    done = run_cli("wait", "--emulator", "--emulator-round-seconds", "0.01", "--json")

    assert done.returncode == 0, done.stderr
    body = check_task_json(json.loads(done.stdout))
    assert (body["status"], body["max_rounds"]) == ("success", 5)
    assert "demo task" in done.stderr


def test_emulator_command_serves_other_programs_until_interrupted() -> None:
    server = start_cli("emulator", "--port", "0", "--round-seconds", "0.01", "--seed", "5")
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("serving on http://127.0.0.1:"), line
        base_url = line.split()[2]
        key = line.rstrip().rstrip(")").split()[-1]
        done = run_cli(
            "optimize",
            str(EXAMPLES / "girlfriend.yaml"),
            "--json",
            "--base-url",
            base_url,
            "--poll-interval",
            "0.02",
            env={"AI302_API_KEY": key},
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["status"] == "success"
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=10)
    assert server.returncode == 0


def test_python_m_spo_async_is_the_same_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "spo_async", "--help"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )

    assert done.returncode == 0
    assert "exit codes:" in done.stdout
    for command in ("optimize", "batch", "status", "wait", "emulator"):
        assert command in done.stdout


def test_the_library_imports_without_the_cli_extra_and_the_cli_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['rich'] = sys.modules['yaml'] = None\n"
        "import spo_async, spo_async.testing\n"
        "from spo_async.cli import main\n"
        "sys.exit(main(['--help']))\n"
    )
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )

    assert done.returncode == 2
    assert done.stdout == ""
    assert strip_ansi(done.stderr).strip().splitlines() == [
        "spo-async: the command line needs rich and yaml: pip install 'spo-async[cli]'"
    ]
