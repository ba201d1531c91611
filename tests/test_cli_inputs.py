"""Bad input of every kind ends in one clear line on stderr and its exit code, never a traceback.

The kinds the command line promises to handle run it as a subprocess, all at once (each
run is mostly interpreter start-up), against one emulator that must see no submit at
all: an invalid row anywhere stops the whole batch before anything is sent. The other
cases call :func:`spo_async.cli.main` in this process, the console script's entry point.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from spo_async.cli import main
from spo_async.testing import EmulatorConfig, ThreadedEmulator

from tests.cli_helpers import EXAMPLES, start_cli

USAGE, REFUSED = 2, 3

ROW = {"prompt": "Summarize.", "qa": [{"question": "A text", "answer": "A line"}]}


def rows(*items: object) -> str:
    return "".join((json.dumps(i) if not isinstance(i, str) else i) + "\n" for i in items)


@attrs.frozen
class Case:
    """One bad invocation: the files it needs, its arguments, what it must say."""

    id: str
    args: tuple[str, ...]
    code: int
    says: str
    files: tuple[tuple[str, str], ...] = ()
    #: Point it at the emulator, with a valid key.
    service: bool = True
    key: str | None = None
    #: ``says`` is a regular expression, not plain text.
    regex: bool = False
    #: Run as a subprocess (the kinds of bad input the issue lists), else in process.
    subprocess: bool = False


CASES = [
    # -- optimize: the settings file ----------------------------------------------------
    Case("missing-file", ("optimize", "absent.yaml"), USAGE, "absent.yaml: no such file",
         subprocess=True),
    Case("yaml-syntax-error", ("optimize", "s.yaml"), USAGE, r"invalid YAML at line 4, column \d+",
         files=(("s.yaml", "prompt: hi\nqa:\n  - question: [one\n    answer: two\n"),),
         regex=True, subprocess=True),
    Case("json-syntax-error", ("optimize", "s.json"), USAGE, "invalid JSON at line 2, column 9",
         files=(("s.json", '{"prompt": "hi",\n "qa": [}\n'),), subprocess=True),
    Case("missing-prompt", ("optimize", "s.yaml"), USAGE, "s.yaml: missing 'prompt'",
         files=(("s.yaml", "qa:\n  - question: q\n    answer: a\n"),)),
    Case("empty-qa", ("optimize", "s.yaml"), USAGE, "qa: needs at least one",
         files=(("s.yaml", "prompt: hi\nqa: []\n"),)),
    Case("qa-item-without-question", ("optimize", "s.yaml"), USAGE, "qa[1]: missing 'question'",
         files=(("s.yaml", "prompt: hi\nqa:\n  - question: q\n  - answer: a\n"),)),
    Case("unknown-key", ("optimize", "s.yaml"), USAGE, "unknown key 'promt'",
         files=(("s.yaml", "promt: hi\nqa:\n  - question: q\n"),)),
    Case("not-a-mapping", ("optimize", "s.yaml"), USAGE, "expected a mapping",
         files=(("s.yaml", "- prompt: hi\n"),)),
    Case("max-rounds-flag-below-2", ("optimize", str(EXAMPLES / "poem.yaml"), "--max-rounds", "1"),
         USAGE, "--max-rounds: must be between 2 and 100, got 1", subprocess=True),
    Case("max-rounds-in-file-below-2", ("optimize", "s.yaml"), USAGE,
         "max_rounds: must be between 2 and 100, got 1",
         files=(("s.yaml", "prompt: hi\nmax_rounds: 1\nqa:\n  - question: q\n"),)),
    # -- batch: every row is checked before anything is sent ----------------------------
    Case("batch-row-without-prompt", ("batch", "in.jsonl", "-o", "out.jsonl"), USAGE,
         "in.jsonl, line 3: missing 'prompt'",
         files=(("in.jsonl", rows(ROW, ROW, {"qa": ROW["qa"]}, ROW)),), subprocess=True),
    Case("batch-json-syntax-error", ("batch", "in.jsonl", "-o", "out.jsonl"), USAGE,
         "in.jsonl, line 2: invalid JSON at column",
         files=(("in.jsonl", rows(ROW, '{"prompt": "x",')),)),
    Case("batch-duplicate-id", ("batch", "in.jsonl", "-o", "out.jsonl"), USAGE,
         "line 2: duplicate id 'a' (first on line 1)",
         files=(("in.jsonl", rows({**ROW, "id": "a"}, {**ROW, "id": "a"})),)),
    Case("batch-max-rounds-below-2", ("batch", "in.jsonl", "-o", "out.jsonl"), USAGE,
         "line 2: max_rounds: must be between 2",
         files=(("in.jsonl", rows(ROW, {**ROW, "max_rounds": 1})),)),
    Case("batch-empty-input", ("batch", "in.jsonl", "-o", "out.jsonl"), USAGE, "no rows",
         files=(("in.jsonl", "\n"),)),
    Case("batch-without-output", ("batch", str(EXAMPLES / "batch.jsonl")), USAGE,
         "the following arguments are required: -o/--output"),
    Case("batch-concurrency-0", ("batch", str(EXAMPLES / "batch.jsonl"), "-o", "o.jsonl",
                                 "--concurrency", "0"), USAGE, "--concurrency: must be >= 1"),
    Case("batch-output-in-missing-directory",
         ("batch", str(EXAMPLES / "batch.jsonl"), "-o", "nowhere/out.jsonl"), USAGE,
         "no such directory"),
    # -- the command line itself --------------------------------------------------------
    Case("no-command", (), USAGE, "the following arguments are required: COMMAND"),
    Case("unknown-command", ("optimise",), USAGE, "invalid choice: 'optimise'"),
    Case("status-without-task-id", ("status",), USAGE, "TASK_ID is required"),
    Case("api-key-file-missing", ("status", "t", "--api-key-file", "nokey"), USAGE,
         "nokey: cannot read the API key"),
    # -- the key and the service --------------------------------------------------------
    Case("no-api-key", ("optimize", str(EXAMPLES / "poem.yaml")), USAGE,
         "no API key: set AI302_API_KEY", key="", subprocess=True),
    Case("wrong-api-key", ("status", "spo-x"), REFUSED,
         "the service rejected the API key (HTTP 401, err_code -10001: Missing 302 API Key); "
         "check the key in AI302_API_KEY (read in this order: AI302_API_KEY, 302AI_API_KEY",
         key="sk-wrong"),
    Case("unknown-task", ("status", "spo-nope"), REFUSED,
         "the service knows no task spo-nope (HTTP 404, err_code -10010"),
]  # fmt: skip


@attrs.frozen
class Ran:
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def emulator() -> Iterator[ThreadedEmulator]:
    with ThreadedEmulator(EmulatorConfig(round_seconds=0.01)) as emu:
        yield emu


def prepare(case: Case, where: Path, emulator: ThreadedEmulator) -> tuple[list[str], str]:
    """Write the case's files into ``where``; return its arguments and API key."""
    for name, text in case.files:
        (where / name).write_text(text, encoding="utf-8")
    args = list(case.args)
    if case.service and case.args:
        args += ["--base-url", emulator.base_url]
    return args, emulator.api_key if case.key is None else case.key


@pytest.fixture(scope="module")
def results(emulator: ThreadedEmulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Ran]:
    """Run every subprocess case at once; their outcomes by case id."""
    started: dict[str, subprocess.Popen[str]] = {}
    for case in CASES:
        if case.subprocess:
            where = tmp_path_factory.mktemp(case.id)
            args, key = prepare(case, where, emulator)
            env = {"AI302_API_KEY": key} if key else {}
            started[case.id] = start_cli(*args, env=env, cwd=where)
    ran = {}
    for name, process in started.items():
        out, err = process.communicate(timeout=60)
        ran[name] = Ran(process.returncode, out, err)
    return ran


def run_in_process(
    case: Case,
    emulator: ThreadedEmulator,
    where: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Ran:
    args, key = prepare(case, where, emulator)
    monkeypatch.chdir(where)
    for name in ("AI302_API_KEY", "302AI_API_KEY", "AI302_KEY", "NEXT_PUBLIC_302_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    if key:
        monkeypatch.setenv("AI302_API_KEY", key)
    code = main(args)
    out, err = capsys.readouterr()
    return Ran(code, out, err)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_gets_one_line_and_its_exit_code(
    case: Case,
    *,
    request: pytest.FixtureRequest,
    emulator: ThreadedEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if case.subprocess:
        ran = request.getfixturevalue("results")[case.id]
    else:
        ran = run_in_process(case, emulator, tmp_path, monkeypatch, capsys)

    assert "Traceback" not in ran.stderr
    assert ran.stdout == ""
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, ran.stderr
    assert re.search(case.says if case.regex else re.escape(case.says), lines[0]), lines[0]
    assert ran.code == case.code, ran.stderr


def test_nothing_was_submitted(emulator: ThreadedEmulator, results: dict[str, Ran]) -> None:
    assert len(results) == sum(case.subprocess for case in CASES)
    assert emulator.submits == []
