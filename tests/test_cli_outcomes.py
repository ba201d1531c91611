"""How every outcome ends, as a user meets it: ``--json``, exit codes, language, plain http.

Each test runs the installed ``spo-async`` script against the emulator (issue 15: what a
new user hit). ``--json`` must print one object on stdout whatever happens, the exit
code must be the one the table in ``--help`` gives, and the messages on stderr must say
what a person can act on, once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from spo_async import AsyncSPOClient, OptimizationRequest, QAPair
from spo_async._journal import Journal
from spo_async.testing import EmulatorConfig, TaskOutcome, ThreadedEmulator

from tests.cli_helpers import EXAMPLES, run_cli, start_cli
from tests.conftest import wait_until

KEYS = {"task_id", "status", "best_prompt", "result", "error", "resume", "exit_code"}


@pytest.fixture
def spo_emulator_config() -> EmulatorConfig:
    return EmulatorConfig(round_seconds=0.02, seed=3, insufficient_balance_keys={"sk-broke"})


def service(emu: ThreadedEmulator, key: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The flags and environment that point the command line at ``emu``."""
    flags = ["--base-url", emu.base_url, "--poll-interval", "0.02"]
    return flags, {"AI302_API_KEY": key or emu.api_key}


def submit(emu: ThreadedEmulator, outcome: TaskOutcome | None = None) -> str:
    """Create one task on ``emu`` with the SDK and return its id."""
    if outcome is not None:
        emu.script_next(outcome)
    request = OptimizationRequest(
        prompt="Act as a tour guide", qa=[QAPair("What should I see?", "[a plan]")], model="gpt-4o"
    )

    async def go() -> str:
        async with AsyncSPOClient(api_key=emu.api_key, base_url=emu.base_url) as client:
            return await client.submit(request)

    return asyncio.run(go())


def one_object(stdout: str) -> dict[str, Any]:
    """The single JSON object stdout must hold."""
    body: dict[str, Any] = json.loads(stdout)
    assert set(body) == KEYS
    return body


def test_a_timeout_gives_exit_5_one_object_and_says_keeps_running_once(
    spo_emulator: ThreadedEmulator,
) -> None:
    """--timeout: the object carries the task, its last status, the error and the resume command."""
    task_id = submit(spo_emulator, TaskOutcome(round_seconds=30))
    flags, env = service(spo_emulator)
    done = run_cli("wait", task_id, "--timeout", "0.5", "--json", *flags, env=env)

    assert done.returncode == 5
    body = one_object(done.stdout)
    assert (body["task_id"], body["exit_code"]) == (task_id, 5)
    assert body["status"] in {"queue", "processing"}
    assert body["error"]["type"] == "WaitTimeoutError"
    assert body["resume"] == f"spo-async wait {task_id} --base-url {spo_emulator.base_url}"
    assert done.stderr.count("keeps running on the service") == 1
    assert body["resume"] in done.stderr
    assert "Traceback" not in done.stderr


def test_a_rejected_key_gives_exit_3_and_names_the_variables_to_check(
    spo_emulator: ThreadedEmulator,
) -> None:
    """A wrong key is the service rejecting the key, not a "missing" one; --json says so too."""
    flags, env = service(spo_emulator, key="sk-wrong")
    done = run_cli("optimize", str(EXAMPLES / "poem.yaml"), "--json", *flags, env=env)

    assert done.returncode == 3
    body = one_object(done.stdout)
    assert (body["task_id"], body["status"], body["resume"]) == (None, None, None)
    assert body["error"]["type"] == "AuthenticationError"
    assert "the service rejected the API key (HTTP 401" in done.stderr
    assert "check the key in AI302_API_KEY" in done.stderr
    assert "302AI_API_KEY, AI302_KEY, NEXT_PUBLIC_302_API_KEY" in done.stderr
    assert spo_emulator.submits[0].task_id is None


def test_an_empty_balance_is_a_refusal_exit_3(spo_emulator: ThreadedEmulator) -> None:
    """The service refusing the task (-10004, HTTP 402) exits 3, not 4: retrying will not help."""
    flags, env = service(spo_emulator, key="sk-broke")
    done = run_cli("optimize", str(EXAMPLES / "poem.yaml"), "--json", "-q", *flags, env=env)

    assert done.returncode == 3
    assert one_object(done.stdout)["error"]["type"] == "InsufficientBalanceError"
    assert "the service refused it (HTTP 402, err_code -10004" in done.stderr


def test_no_connection_gives_exit_4_and_the_command_to_try_again(tmp_path: Path) -> None:
    """A network failure exits 4; the object names the task and how to look again."""
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    done = run_cli("status", "spo-123", "--json", "--base-url", url, env={"AI302_API_KEY": "k"})

    assert done.returncode == 4
    body = one_object(done.stdout)
    assert body["task_id"] == "spo-123"
    assert "Error" in body["error"]["type"]
    assert body["resume"] == f"spo-async wait spo-123 --base-url {url}"
    assert "was not reached; try again with:" in done.stderr
    assert "keeps running" not in done.stderr  # nothing says it does


def test_a_usage_error_with_json_still_prints_one_object() -> None:
    """Even a command line the parser refuses gives the object, with exit code 2."""
    done = run_cli("optimize", str(EXAMPLES / "poem.yaml"), "--json", "--max-rounds", "1")

    assert done.returncode == 2
    body = one_object(done.stdout)
    assert (body["error"]["type"], body["exit_code"]) == ("UsageError", 2)
    assert "--max-rounds: must be between 2 and" in done.stderr


def test_ctrl_c_during_a_wait_exits_130_with_the_task_and_how_to_resume(
    spo_emulator: ThreadedEmulator,
) -> None:
    """Ctrl-C: the task keeps running, and the object and stderr say how to pick it up."""
    spo_emulator.script_next(TaskOutcome(round_seconds=30))
    flags, env = service(spo_emulator)
    with start_cli("optimize", str(EXAMPLES / "poem.yaml"), "--json", *flags, env=env) as running:
        try:
            # The task id has reached the command once the command polls the task.
            wait_until(lambda: sum(spo_emulator.task_gets.values()) >= 1, what="the first poll")
            running.send_signal(signal.SIGINT)
            out, err = running.communicate(timeout=10)
        finally:
            running.kill()  # on a failure above: no process or pipe outlives the test

    assert running.returncode == 130, err
    body = one_object(out)
    [record] = spo_emulator.submits
    assert body["task_id"] == record.task_id
    assert body["error"]["type"] == "KeyboardInterrupt"
    assert body["resume"] == f"spo-async wait {record.task_id} --base-url " + (
        f"{spo_emulator.base_url} --max-rounds 5"
    )
    assert "keeps running on the service; resume with:" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("prompt", "flags", "language"),
    [
        ("Summarize the text.", (), "en"),
        ("总结这段文字。", (), "zh"),
        ("总结这段文字。", ("--language", "en"), "en"),
    ],
    ids=["english-detected", "chinese-detected", "flag-wins"],
)
def test_the_language_is_the_librarys_choice_unless_given_and_is_shown(
    spo_emulator: ThreadedEmulator,
    tmp_path: Path,
    prompt: str,
    flags: tuple[str, ...],
    language: str,
) -> None:
    """No "zh" by default: the prompt's script decides, --language overrides, the header says."""
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"prompt": prompt, "qa": [{"question": "q"}]}))
    service_flags, env = service(spo_emulator)
    done = run_cli("optimize", str(settings), *flags, *service_flags, env=env)

    assert done.returncode == 0, done.stderr
    [record] = spo_emulator.submits
    assert record.body is not None
    assert record.body["language"] == language
    origin = "from --language" if flags else "detected from the text"
    assert f"language {language} ({origin}" in done.stderr


def test_a_locked_or_foreign_journal_is_a_usage_error_exit_2(
    spo_emulator: ThreadedEmulator, tmp_path: Path
) -> None:
    """A journal that cannot be used is the user's input problem (2), and nothing is sent."""
    foreign, locked = tmp_path / "notes.txt", tmp_path / "j.db"
    foreign.write_text("not a journal\n")
    flags, env = service(spo_emulator)
    batch = ("batch", str(EXAMPLES / "batch.jsonl"), "-o", str(tmp_path / "out.jsonl"))
    not_a_journal = run_cli(*batch, "--journal", str(foreign), *flags, env=env)

    async def while_another_run_holds_it() -> subprocess.CompletedProcess[str]:
        async with Journal(locked):  # another run, holding the journal as a run does
            return await asyncio.to_thread(
                run_cli, *batch, "--journal", str(locked), "--json", *flags, env=env
            )

    busy = asyncio.run(while_another_run_holds_it())

    assert not_a_journal.returncode == 2, not_a_journal.stderr
    assert busy.returncode == 2, busy.stderr
    assert json.loads(busy.stdout)["error"]["type"].endswith("Error")
    assert spo_emulator.submits == []
    assert "Traceback" not in not_a_journal.stderr + busy.stderr


def test_plain_http_to_another_machine_needs_allow_insecure_http(
    spo_emulator: ThreadedEmulator,
) -> None:
    """Refused with a hint naming the flag (not a Python argument), and nothing is sent."""
    env = {"AI302_API_KEY": spo_emulator.api_key}
    done = run_cli("optimize", str(EXAMPLES / "poem.yaml"), "--base-url", "http://spo.invalid:8302",
                   env=env)  # fmt: skip

    assert done.returncode == 2
    assert "refusing plain http:// to spo.invalid" in done.stderr
    assert "pass --allow-insecure-http" in done.stderr
    assert "allow_insecure_http=True" not in done.stderr


def _this_machine_by_name() -> str:
    """A name of this machine that is not 'localhost' (so the http check applies)."""
    name = socket.gethostname()
    try:
        socket.gethostbyname(name)
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if name == "localhost":
        pytest.skip("this machine is only called localhost")
    return name


def test_allow_insecure_http_reaches_an_emulator_served_for_other_machines() -> None:
    """``spo-async emulator --allow-remote`` can be used from another machine's command line."""
    host = _this_machine_by_name()
    server = start_cli("emulator", "--host", "0.0.0.0", "--allow-remote", "--port", "0",  # noqa: S104
                       "--round-seconds", "0.01")  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        port = line.split()[2].rsplit(":", 1)[1]
        key = line.rstrip().rstrip(")").split()[-1]
        url = f"http://{host}:{port}"
        settings = str(EXAMPLES / "poem.yaml")
        env = {"AI302_API_KEY": key}
        refused = run_cli("optimize", settings, "--base-url", url, "-q", env=env)
        allowed = run_cli("optimize", settings, "--base-url", url, "--allow-insecure-http",
                          "--poll-interval", "0.02", "--json", env=env)  # fmt: skip
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=10)

    assert refused.returncode == 2
    assert allowed.returncode == 0, allowed.stderr
    body = one_object(allowed.stdout)
    assert body["status"] == "success"
