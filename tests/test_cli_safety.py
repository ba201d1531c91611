"""The command line never loses a billed task, never destroys its input, never trusts server text.

Each test runs the installed ``spo-async`` script against the emulator (issue 14, the
command line's part, and issue 15's small truths): files a batch could not use safely
are refused before anything is sent; a full disk or a journal that cannot be written
ends the batch with every existing task id printed; text from the service reaches the
terminal with its control sequences escaped; a huge task id is shortened in prose.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from spo_async import AsyncSPOClient, OptimizationRequest, QAPair
from spo_async.cli._safe import is_database, shown_argument, without_passwords
from spo_async.testing import EmulatorConfig, Fault, FaultKind, TaskOutcome, ThreadedEmulator

from tests.cli_helpers import EXAMPLES, ROOT, cli, cli_env, run_cli, sigint_not_ignored
from tests.servers import pg_database, postgres_uri

__all__ = ["pg_database", "postgres_uri"]  # fixtures, imported for pytest

QA = [{"question": "A text", "answer": "A line"}]
#: Terminal control a hostile or broken service could send: retitle the window, clear
#: the screen, write the clipboard, reverse the text, and a C1 CSI.
EVIL = "Be kind.\x1b]0;pwned\x07\x1b[2J\x1b]52;c;ZXZpbA==\x07 \u202eevil\u202c \x9b31m"
CONTROL = ("\x1b", "\x07", "\x9b", "\u202e")


def marked(body: Mapping[str, Any]) -> TaskOutcome | None:
    if "FAIL" in body["prompt"]:
        return TaskOutcome(fail_at_round=2, error="judge exploded")
    if "SLOW" in body["prompt"]:
        return TaskOutcome(round_seconds=30)
    return None


@pytest.fixture
def spo_emulator_config() -> EmulatorConfig:
    return EmulatorConfig(round_seconds=0.02, outcome_for=marked)


def service(emu: ThreadedEmulator) -> tuple[list[str], dict[str, str]]:
    return ["--base-url", emu.base_url, "--poll-interval", "0.02"], {"AI302_API_KEY": emu.api_key}


def write_rows(path: Path, prompts: list[str]) -> None:
    rows = [{"id": f"r{i}", "prompt": p, "qa": QA, "max_rounds": 2} for i, p in enumerate(prompts)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def created_ids(emu: ThreadedEmulator) -> set[str]:
    return {record.task_id for record in emu.submits if record.task_id is not None}


# -- files a batch could not use safely ---------------------------------------------------


@pytest.mark.parametrize("name", ["same", "symlink", "hard-link", "journal"])
def test_an_output_that_is_the_input_or_the_journal_is_refused_before_sending(
    spo_emulator: ThreadedEmulator, tmp_path: Path, name: str
) -> None:
    """-o naming the input (under any name) or the journal would destroy it: refused, exit 2."""
    source = tmp_path / "in.jsonl"
    write_rows(source, ["Summarize."])
    original = source.read_text()
    journal = tmp_path / "j.db"
    output = {
        "same": source,
        "symlink": tmp_path / "link.jsonl",
        "hard-link": tmp_path / "hard.jsonl",
        "journal": journal,
    }[name]
    if name == "symlink":
        output.symlink_to(source)
    elif name == "hard-link":
        output.hardlink_to(source)
    flags, env = service(spo_emulator)
    done = run_cli("batch", str(source), "-o", str(output), "--journal", str(journal), *flags,
                   env=env)  # fmt: skip

    assert done.returncode == 2, done.stderr
    assert ("is the journal" if name == "journal" else "is the input file") in done.stderr
    assert source.read_text() == original
    assert spo_emulator.submits == []


def test_a_journal_with_the_in_process_emulator_is_refused_with_the_reason(tmp_path: Path) -> None:
    """Its tasks die with the command, so a rerun could not resume them: say so, exit 2."""
    done = run_cli("batch", "--emulator", str(EXAMPLES / "batch.jsonl"), "-o",
                   str(tmp_path / "out.jsonl"), "--journal", str(tmp_path / "j.db"))  # fmt: skip

    assert done.returncode == 2
    assert "--journal cannot be used with --emulator" in done.stderr
    assert "tasks that no longer exist" in done.stderr
    assert "spo-async emulator" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_journal_in_a_missing_directory_is_refused_and_no_file_is_made(tmp_path: Path) -> None:
    """The command line creates nothing next to a journal path it refuses (no .lock either)."""
    done = run_cli("batch", str(EXAMPLES / "batch.jsonl"), "-o", str(tmp_path / "out.jsonl"),
                   "--journal", str(tmp_path / "nowhere" / "j.db"),
                   env={"AI302_API_KEY": "sk-unused"})  # fmt: skip

    assert done.returncode == 2
    assert "no such directory" in done.stderr
    assert list(tmp_path.iterdir()) == []


# -- a batch that cannot go on ------------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_under_the_output_exits_4_and_prints_every_task_id(
    spo_emulator: ThreadedEmulator, tmp_path: Path
) -> None:
    """No traceback: a clear line, exit 4, and the ids of the tasks that exist."""
    source = tmp_path / "in.jsonl"
    write_rows(source, ["Summarize."] + [f"SLOW {i}" for i in range(3)])
    flags, env = service(spo_emulator)
    done = run_cli("batch", str(source), "-o", "/dev/full", "--json", *flags, env=env)

    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr
    assert "error: cannot write /dev/full: No space left on device" in done.stderr
    body = json.loads(done.stdout)
    assert body["exit_code"] == 4
    assert body["error"]["type"] == "OutputError"
    listed = set(body["unfinished_task_ids"]) | set(body["unwritten_task_ids"])
    assert listed == created_ids(spo_emulator)
    assert all(task_id in done.stderr for task_id in listed)
    assert "still running on the service" in done.stderr


def _limit_file_size() -> None:
    """In the child: files may not grow past 40 kB (writes beyond fail with EFBIG)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))


def _without_coverage(env: dict[str, str]) -> dict[str, str]:
    """The environment without coverage's subprocess hook.

    Its data file would hit the same file-size limit at exit, and that traceback is
    coverage's, not the command's.
    """
    return {name: value for name, value in env.items() if not name.startswith("COVERAGE_")}


def test_a_journal_that_cannot_be_written_exits_4_and_no_task_id_is_lost(
    spo_emulator: ThreadedEmulator, tmp_path: Path
) -> None:
    """The journal's disk fills up mid-run: every task created is printed, with how to resume."""
    source, journal = tmp_path / "in.jsonl", tmp_path / "j.db"
    write_rows(source, [f"Summarize, take {i}." for i in range(30)])
    flags, env = service(spo_emulator)
    done = subprocess.run(  # noqa: S603 - our own command line, its file size limited
        cli("batch", str(source), "-o", str(tmp_path / "out.jsonl"), "--journal", str(journal),
            "--concurrency", "2", *flags),
        env=_without_coverage(cli_env(env)), cwd=ROOT, capture_output=True, text=True,
        timeout=60, check=False, preexec_fn=_limit_file_size,
    )  # fmt: skip

    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr
    written = set()
    if (tmp_path / "out.jsonl").exists():
        lines = (tmp_path / "out.jsonl").read_text().splitlines()
        written = {json.loads(line)["task_id"] for line in lines if line.endswith("}")}
    created = created_ids(spo_emulator)
    assert created, "the run was meant to submit before the journal filled up"
    assert all(task_id in done.stderr for task_id in created - written)
    assert "resume with:" in done.stderr


def test_ctrl_c_in_the_first_moments_of_a_batch_never_shows_a_traceback(
    spo_emulator: ThreadedEmulator, tmp_path: Path
) -> None:
    """Whenever the first Ctrl-C lands after the library is loaded, the batch exits 130 cleanly.

    Each run loads the library first (Ctrl-C while Python imports it is outside the command
    line's reach), then has a timer interrupt the command line a little later each time:
    while it loads, reads the input, opens the journal, submits.
    """
    flags, env = service(spo_emulator)
    source = tmp_path / "in.jsonl"
    write_rows(source, [f"SLOW {i}" for i in range(4)])
    args = ["batch", str(source), "-o", str(tmp_path / "out.jsonl"), "--journal",
            str(tmp_path / "j.db"), *flags]  # fmt: skip
    driver = (
        "import os, signal, sys\n"
        "import spo_async\n"
        "from spo_async.cli import main\n"
        "signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGINT))\n"
        "signal.setitimer(signal.ITIMER_REAL, float(sys.argv[1]))\n"
        "sys.exit(main(sys.argv[2:]))\n"
    )
    for delay in (0.001, 0.05, 0.15, 0.3, 0.6):
        with sigint_not_ignored():  # a test run started in the background ignores SIGINT
            done = subprocess.run(  # noqa: S603 - our own interpreter
                [sys.executable, "-c", driver, str(delay), *args],
                env=cli_env(env), cwd=ROOT, capture_output=True, text=True, timeout=60,
                check=False,
            )  # fmt: skip
        assert done.returncode == 130, (delay, done.stderr)
        assert "Traceback" not in done.stderr, (delay, done.stderr)
        assert "interrupted" in done.stderr, (delay, done.stderr)


# -- passwords in URIs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "shown"),
    [
        ("postgresql://spo:hunter2@db/app", "postgresql://spo@db/app"),
        ("--journal=postgresql://spo:hunter2@db/app", "--journal=postgresql://spo@db/app"),
        ("--jour=POSTGRES://spo:hunter2@db/app", "--jour=POSTGRES://spo@db/app"),  # abbreviated
        ("--limiter=Redis://:hunter2@cache:6379/0", "--limiter=Redis://cache:6379/0"),
        ("valkeys://:hunter2@valkey.internal/0", "valkeys://valkey.internal/0"),
        ("--limiter=redis://u:12345/hunter2@cache/0", "--limiter=<a malformed URI>"),
        ("--base-url=https://me:hunter2@gateway.example", "--base-url=https://me@gateway.example"),
        ("rows.jsonl", "rows.jsonl"),
        ("--journal=j.db", "--journal=j.db"),
    ],
)
def test_every_form_of_a_uri_argument_is_shown_without_its_password(
    argument: str, shown: str
) -> None:
    """Its own token or after '=', in any case, of any scheme: only the password goes."""
    assert shown_argument(argument) == shown


def test_a_parser_message_quoting_a_uri_drops_its_password() -> None:
    """argparse repeats arguments it refuses (an ambiguous abbreviation, say): not the password."""
    message = "error: ambiguous option: --j=postgresql://spo:hunter2@db/app could match --journal"
    assert without_passwords(message) == (
        "error: ambiguous option: --j=postgresql://spo@db/app could match --journal"
    )


@pytest.mark.parametrize(
    "value", ["postgresql://db", "POSTGRES://db", "redis://c", "Rediss://c", "VALKEY://c",
              "valkeys://c"],
)  # fmt: skip
def test_every_store_scheme_names_a_database_in_any_case(value: str) -> None:
    """A --journal or --limiter value in any accepted scheme is a database, not a file name."""
    assert is_database(value)


def with_password(uri: str) -> str:
    """``uri`` (the test server's, which trusts its users) with a password it ignores."""
    scheme, _, rest = uri.partition("://")
    user, _, where = rest.partition("@")
    return f"{scheme}://{user}:hunter2@{where}"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("as_json", [False, True])
def test_the_resume_command_never_shows_a_password_in_any_form_of_uri(
    spo_emulator: ThreadedEmulator, pg_database: str, tmp_path: Path, as_json: bool
) -> None:
    """--journal=URI and --limiter=URI (any case) are printed without the password, human or JSON.

    The output is a full disk, so the batch ends with the command that resumes it.
    """
    source = tmp_path / "in.jsonl"
    write_rows(source, ["Summarize."] + [f"SLOW {i}" for i in range(2)])
    uri = with_password(pg_database)
    limiter = "POSTGRESQL" + uri[uri.index("://") :]
    flags, env = service(spo_emulator)
    json_flag = ["--json"] if as_json else []
    done = run_cli("batch", str(source), "-o", "/dev/full", f"--journal={uri}",
                   f"--limiter={limiter}", *json_flag, *flags, env=env, timeout=60)  # fmt: skip

    assert done.returncode == 4, done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    shown = pg_database.partition("://")[2]
    resume = json.loads(done.stdout)["resume"] if as_json else done.stderr
    assert f"--journal=postgresql://{shown}" in resume
    assert f"--limiter=POSTGRESQL://{shown}" in resume


def test_a_refused_argument_with_a_uri_is_repeated_without_its_password() -> None:
    """The parser's message names the argument it refused, on stderr and in --json, unhidden."""
    args = ("batch", str(EXAMPLES / "batch.jsonl"), "--j=postgresql://spo:hunter2@db/app")
    human = run_cli(*args)
    machine = run_cli(*args, "--json")

    assert (human.returncode, machine.returncode) == (2, 2)
    assert "ambiguous option: --j=postgresql://spo@db/app" in human.stderr
    assert "hunter2" not in human.stdout + human.stderr + machine.stdout + machine.stderr
    assert "--j=postgresql://spo@db/app" in json.loads(machine.stdout)["error"]["message"]


# -- text from the service ----------------------------------------------------------------


def finished_task(emu: ThreadedEmulator, prompt: str) -> str:
    """Run one task with ``prompt`` on ``emu`` to its end; its id."""
    request = OptimizationRequest(prompt=prompt, qa=[QAPair("q\x1b[5m", "a")], model="gpt-4o",
                                  max_rounds=2)  # fmt: skip

    async def start() -> str:
        async with AsyncSPOClient(api_key=emu.api_key, base_url=emu.base_url) as client:
            task_id = await client.submit(request)
            await client.wait_for_result(task_id)
            return task_id

    return asyncio.run(start())


def test_control_sequences_from_the_service_are_escaped_on_the_terminal_not_in_json(
    spo_emulator: ThreadedEmulator,
) -> None:
    """Prompts and error messages are shown with visible escapes; --json keeps them exact."""
    task_id = finished_task(spo_emulator, EVIL)
    flags, env = service(spo_emulator)
    shown = run_cli("status", task_id, *flags, env=env)
    exact = run_cli("status", task_id, "--json", *flags, env=env)
    hostile = {"error": {"err_code": -10003, "message": "bad\x1b]0;t\x07\x1b[2J gateway"}}
    spo_emulator.inject(
        Fault(FaultKind.STATUS, endpoint="task", status=500, times=1, body=json.dumps(hostile))
    )
    failed = run_cli("status", task_id, *flags, env=env)

    assert shown.returncode == 0, shown.stderr
    assert not any(ch in shown.stdout + shown.stderr for ch in CONTROL)
    assert "\\x1b]0;pwned\\x07" in shown.stdout
    assert "\\u202eevil\\u202c" in shown.stdout
    body = json.loads(exact.stdout)
    assert body["result"]["round_data_list"][0]["prompt"] == EVIL
    assert failed.returncode == 4
    assert "bad\\x1b]0;t\\x07\\x1b[2J gateway" in failed.stderr
    assert not any(ch in failed.stderr for ch in CONTROL)


def test_a_huge_task_id_is_shortened_in_messages_and_exact_in_json(
    spo_emulator: ThreadedEmulator,
) -> None:
    """A megabyte id from the service is not copied into every message."""
    huge = "spo-" + "x" * 1_000_000
    spo_emulator.inject(Fault(FaultKind.STATUS, endpoint="submit", status=200, times=1,
                              body=json.dumps({"task_id": huge})))  # fmt: skip
    flags, env = service(spo_emulator)
    done = run_cli("optimize", str(EXAMPLES / "poem.yaml"), "--json", *flags, env=env)

    assert done.returncode == 4
    assert len(done.stderr) < 2000
    assert "(1000004 characters)" in done.stderr
    body = json.loads(done.stdout)
    assert body["task_id"] == huge
    assert body["error"]["type"] == "SubmitOutcomeUnknownError"


# -- the batch's counters -----------------------------------------------------------------


def test_the_summary_counts_failed_errored_and_unknown_apart_as_the_library_does(
    spo_emulator: ThreadedEmulator, tmp_path: Path
) -> None:
    """A failed task and a timed-out wait are different rows; the exit code is the worst one."""
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_rows(source, ["Summarize.", "FAIL here", "SLOW here"])
    flags, env = service(spo_emulator)
    args = ("batch", str(source), "-o", str(out), "--timeout", "1", *flags)
    human = run_cli(*args, env=env)
    machine = run_cli(*args, "--json", env=env)

    assert (human.returncode, machine.returncode) == (5, 5)  # timeout beats a failed task
    summary = json.loads(machine.stdout)
    counts = {k: summary[k] for k in ("succeeded", "failed", "errored", "unknown", "not_run")}
    assert counts == {"succeeded": 1, "failed": 1, "errored": 1, "unknown": 0, "not_run": 0}
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in human.stdout.splitlines()
        if line.count("│") == 3
    }
    assert {k: rows[k] for k in ("succeeded", "failed", "errored", "unknown")} == {
        "succeeded": "1", "failed": "1", "errored": "1", "unknown": "0",
    }  # fmt: skip
    statuses = sorted(json.loads(line)["status"] for line in out.read_text().splitlines())
    assert statuses == ["errored", "failed", "succeeded"]


def test_a_usage_error_of_a_batch_with_json_has_the_batch_objects_keys(
    spo_emulator: ThreadedEmulator, tmp_path: Path
) -> None:
    """Refused by the parser or run to its end, a batch's --json object has the same keys."""
    source = tmp_path / "in.jsonl"
    write_rows(source, ["Summarize."])
    flags, env = service(spo_emulator)
    ran = run_cli("batch", str(source), "-o", str(tmp_path / "o.jsonl"), "--json", *flags, env=env)
    refused = run_cli("batch", str(source), "--json", "--concurrency", "0")

    assert (ran.returncode, refused.returncode) == (0, 2)
    assert set(json.loads(refused.stdout)) == set(json.loads(ran.stdout))


def test_the_emulator_command_keeps_the_emulators_own_command_line() -> None:
    """``spo-async emulator --help`` is the emulator's own parser, under the command's name."""
    done = run_cli("emulator", "--help")

    assert done.returncode == 0
    assert done.stdout.startswith("usage: spo-async emulator")
    assert "--allow-remote" in done.stdout
