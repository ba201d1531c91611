"""The command line's pure parts, in process: settings loading, diffs, exit codes."""

from __future__ import annotations

import argparse
import ast
import io
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
from rich.console import Console
from spo_async import (
    AuthenticationError,
    ConfigurationError,
    InsufficientBalanceError,
    InvalidRequestError,
    JournalError,
    NotFoundError,
    OptimizationRequest,
    ProtocolError,
    QAPair,
    QuotaExceededError,
    RateLimitError,
    RequestValidationError,
    Round,
    TaskFailedError,
    TaskResult,
    TaskStatus,
    TransientError,
    TransportError,
    WaitTimeoutError,
)
from spo_async.cli._commands import _follow
from spo_async.cli._diff import best_before, change_summary, word_diff
from spo_async.cli._exit import (
    EPILOG,
    ERROR,
    FAILED,
    INTERRUPTED,
    OK,
    REFUSED,
    TIMEOUT,
    USAGE,
    InputError,
    UsageError,
    batch_exit_code,
    exit_code_for,
)
from spo_async.cli._parser import build_parser, library_default
from spo_async.cli._render import final_report
from spo_async.cli._report import RunState
from spo_async.cli._runtime import API_KEY_VARIABLES, Output
from spo_async.cli._safe import printable, short_id
from spo_async.cli._settings import Overrides, load_batch, load_settings
from spo_async.polling import PollState

from tests.cli_helpers import EXAMPLES, ROOT
from tests.conftest import ClientFactory

NAVIGATE = """\
prompt: |
  Please solve the following problem.
requirements: |
  <answer>Yes or No</answer>
count: 40
qa:
  - question: |
      Always face forward. Take 2 steps left. Take 2 steps right. Options:
      - Yes
      - No
    answer: Yes
  - question: Is 7 prime?
    answer:
  - question: 42
    answer: no
"""


def test_navigate_style_yes_no_answers_stay_text_and_count_is_dropped_with_a_warning(
    tmp_path: Path,
) -> None:
    path = tmp_path / "Navigate.yaml"
    path.write_text(NAVIGATE)
    warnings: list[str] = []

    request, _ = load_settings(path, Overrides(), warnings.append)

    assert [(p.question[:6], p.answer) for p in request.qa] == [
        ("Always", "Yes"),
        ("Is 7 p", ""),
        ("42", "no"),
    ]
    assert request.requirements == "<answer>Yes or No</answer>"
    assert (request.model, request.max_rounds) == ("claude-3-5-sonnet-20240620", 5)
    assert warnings == [f"{path}: 'count' (a word limit) has no 302.AI API field; it is ignored"]


def test_poem_example_reads_none_as_the_text_none_without_a_warning() -> None:
    warnings: list[str] = []

    request, _ = load_settings(EXAMPLES / "poem.yaml", Overrides(), warnings.append)

    assert request.requirements == "None"
    assert {p.answer for p in request.qa} == {"None"}
    assert len(request.qa) == 3
    assert warnings == []


def test_a_flag_wins_over_the_file_and_the_file_over_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(
        '{"prompt": "p", "qa": [{"question": "q"}], "model": "gpt-4o", "max_rounds": 3}'
    )

    request, origin = load_settings(path, Overrides(max_rounds=7, language="en"), print)

    assert (request.model, request.max_rounds, request.language) == ("gpt-4o", 7, "en")
    assert request.temperature == 0.7
    assert origin == "from --language"


def test_batch_keys_are_the_id_column_or_else_the_line_number(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"id": 10, "prompt": "a", "qa": [{"question": "q"}]}\n\n'
        '{"prompt": "b", "qa": [{"question": "q"}]}\n'
    )

    rows = load_batch(path, Overrides(model="gpt-4o"), print)

    assert [(r.key, r.line, r.request.model) for r in rows] == [
        ("10", 1, "gpt-4o"),
        ("3", 3, "gpt-4o"),
    ]


def test_a_boolean_answer_asks_to_be_quoted(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("prompt: p\nqa:\n  - question: q\n    answer: true\n")

    with pytest.raises(InputError, match=r"qa\[0\]\.answer: expected text, got bool \(quote it\)"):
        load_settings(path, Overrides(), print)


@pytest.mark.parametrize(
    ("before", "after", "shown"),
    [
        ("Be kind.", "Be kind.\n- be brief.", "Be kind.{+\n- be brief.+}"),
        ("Be kind and warm.", "Be warm.", "Be [-kind and -]warm."),
        ("Reply in English.", "Reply in Chinese.", "Reply in [-English-]{+Chinese+}."),
        ("same", "same", "same"),
    ],
    ids=["added", "removed", "replaced", "unchanged"],
)
def test_word_diff_marks_changes_git_style(before: str, after: str, shown: str) -> None:
    assert word_diff(before, after).plain == shown


def result(*success: bool) -> TaskResult:
    rounds = tuple(
        Round(number=i, prompt=f"p{i}", success=ok) for i, ok in enumerate(success, start=1)
    )
    return TaskResult(
        task_id="t", status=TaskStatus.SUCCESS, raw_status="success", rounds=rounds, best_round=3
    )


def test_each_round_is_compared_with_the_latest_successful_round_before_it() -> None:
    rounds = result(True, False, True, False).rounds

    assert [getattr(best_before(rounds, n), "number", None) for n in (1, 2, 3, 4)] == [
        None,
        1,
        1,
        3,
    ]


def test_the_final_report_ends_with_the_best_prompt() -> None:
    """The best prompt is the report's last renderable, whole."""
    last = final_report(result(True, False, True, False)).renderables[-1]

    assert getattr(last, "plain", None) == "p3"


@pytest.mark.parametrize(
    ("before", "after", "shown"),
    [
        ("Reply in English.", "Reply in Chinese.", "+1 -1 words: Reply in [-English-]{+Chinese+}."),
        ("Be kind.", "Be kind.", "no change"),
        ("Be kind.", "Be  kind.\n", "white space only"),
        (
            "You help travellers. Answer in one short paragraph, then stop.",
            "You help travellers. Answer in one short paragraph with a map link, then stop.",
            "+4 -0 words: …one short paragraph{+ with a map link+}, then stop.",
        ),
    ],
    ids=["replaced", "same", "white-space", "in-the-middle"],
)
def test_a_change_summary_shows_the_counts_and_the_first_change_in_context(
    before: str, after: str, shown: str
) -> None:
    """Rounds that start alike are told apart by what changed, on one line."""
    assert change_summary(before, after).plain == shown


def test_a_change_summary_is_one_line_of_at_most_the_width_asked() -> None:
    """A long change is cut with an ellipsis, and its newlines are shown as spaces."""
    summary = change_summary("Be kind.", "Be kind.\n" + "- be very brief and polite. " * 20, 60)

    assert len(summary.plain) == 60
    assert summary.plain.endswith("…")
    assert "\n" not in summary.plain


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InputError("bad"), USAGE),
        (RequestValidationError("qa", "empty"), USAGE),
        (ConfigurationError("bad base URL"), USAGE),
        (JournalError("locked by another run"), USAGE),
        (AuthenticationError("no", status=401, err_code=-10001), REFUSED),
        (InsufficientBalanceError("broke", status=402, err_code=-10004), REFUSED),
        (QuotaExceededError("quota", status=429, err_code=-10006), REFUSED),
        (InvalidRequestError("bad model", status=400, err_code=-10011), REFUSED),
        (NotFoundError("no task", status=404, err_code=-10010), REFUSED),
        (TaskFailedError("t", result(True)), FAILED),
        (WaitTimeoutError("t", 1.0, None), TIMEOUT),
        (ProtocolError("html"), ERROR),
        (TransientError("busy", status=503), ERROR),
        (RateLimitError("slow down", status=429), ERROR),
        (TransportError("no connection"), ERROR),
        (KeyboardInterrupt(), INTERRUPTED),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_exit_codes(error: BaseException, code: int) -> None:
    """Each error ends the command with the code of the table in --help."""
    assert exit_code_for(error) == code


def test_a_batch_exits_with_its_most_serious_rows_code() -> None:
    """Refused beats failed service, which beats timeout, which beats a failed task."""
    assert batch_exit_code([]) == OK
    assert batch_exit_code([OK, FAILED, TIMEOUT]) == TIMEOUT
    assert batch_exit_code([FAILED, ERROR, OK]) == ERROR
    assert batch_exit_code([ERROR, REFUSED, TIMEOUT]) == REFUSED


def test_every_exit_code_is_in_the_help_and_the_reference() -> None:
    """The table in --help and the one in docs/reference/cli.md list the same codes."""
    page = (ROOT / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    for code in (OK, FAILED, USAGE, REFUSED, ERROR, TIMEOUT, INTERRUPTED):
        assert f"\n  {code:<3}  " in EPILOG
        assert f"| {code} |" in page


PUBLIC_MODULES = {"spo_async", "spo_async.polling", "spo_async.testing", "spo_async.cli"}


def test_the_command_line_imports_only_the_public_api() -> None:
    """Every ``spo_async`` import of the CLI is a public module (the emulator's CLI only lazily)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "spo_async" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("spo_async"):
                    found.setdefault(node.module, set()).add(path.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("spo_async"):
                        found.setdefault(alias.name, set()).add(path.name)

    private = {m: files for m, files in found.items() if m not in PUBLIC_MODULES}
    assert private == {
        # The emulator's own command line, loaded inside the functions that serve it.
        "spo_async.testing.__main__": {"_commands.py", "_parser.py"},
        # How a store URI is shown without its password: security logic the library's
        # reprs and errors use too, kept in one place so that the two cannot drift apart.
        "spo_async._store_uri": {"_safe.py"},
    }


def test_commands_other_than_the_emulator_never_load_the_emulator() -> None:
    """``spo-async --help`` and the parser of every other command leave spo_async.testing alone."""
    code = (
        "import sys\n"
        "from spo_async.cli import _app, _batch_command\n"
        "from spo_async.cli._parser import build_parser\n"
        "build_parser(emulator_options=False).parse_args(['status', 't'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('spo_async.testing')))\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )

    assert done.stdout.strip() == "[]"


def test_the_cli_reads_the_api_key_from_the_libraries_variables_in_its_order() -> None:
    """The CLI's list of key variables (for its messages) is the library's own."""
    from spo_async._settings import API_KEY_ENV_VARS  # pinning a private name

    assert API_KEY_VARIABLES == API_KEY_ENV_VARS


def test_options_left_out_take_the_librarys_defaults(tmp_path: Path) -> None:
    """A settings file with no max_rounds, language or temperature gets the request's defaults."""
    path = tmp_path / "s.yaml"
    path.write_text("prompt: Réponds poliment.\nqa:\n  - question: Bonjour\n")

    request, origin = load_settings(path, Overrides(), print)

    defaults = attrs.fields_dict(OptimizationRequest)
    assert request.max_rounds == defaults["max_rounds"].default
    assert request.temperature == defaults["temperature"].default
    assert request.language == "en"  # "auto", resolved from the Latin script
    assert origin.startswith("detected")
    assert library_default("concurrency") == 16
    assert library_default("timeout") == 900.0


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),  # OSC: retitle the window
        ("\x1b[2J", "\\x1b[2J"),  # CSI: clear the screen
        ("\x9b31m", "\\x9b31m"),  # C1 CSI
        ("a\u202eb\u2066c", "a\\u202eb\\u2066c"),  # bidi override and isolate
        ("tab\tkept", "tab\tkept"),
        ("line\nbreak", "line\\x0abreak"),
        ("中文 prompt", "中文 prompt"),
    ],
    ids=["osc", "csi", "c1", "bidi", "tab", "newline", "plain"],
)
def test_printable_shows_control_characters_as_escapes(text: str, shown: str) -> None:
    """Nothing from the service can drive the terminal: controls become visible escapes."""
    assert printable(text) == shown


def test_printable_keeps_newlines_of_a_block_and_short_ids_stay_whole() -> None:
    """A prompt shown as a block keeps its lines; a normal id is shown as it is."""
    assert printable("one\ntwo\x1b", multiline=True) == "one\ntwo\\x1b"
    assert short_id("spo-4f1c9a") == "spo-4f1c9a"
    long = short_id("spo-" + "x" * 10_000)
    assert long.endswith("(10004 characters)")
    assert len(long) < 60


@pytest.mark.parametrize(
    ("animate", "flag", "expected"),
    [
        (True, None, "progress"),
        (False, None, "completion"),
        (False, "progress", "progress"),
        (True, "completion", "completion"),
    ],
)
async def test_optimize_looks_at_every_round_only_while_it_draws_the_live_view(
    make_client: ClientFactory, animate: bool, flag: str | None, expected: str
) -> None:
    """Plain lines, ``--quiet`` and ``--json`` need the result on time; ``--poll-mode`` wins."""
    modes: set[str] = set()

    def schedule(state: PollState) -> float:
        modes.add(state.mode.value)
        return 0.001

    quiet = Console(file=io.StringIO())
    output = Output(out=quiet, err=quiet, animate=animate, json=False, quiet=False)
    args = argparse.Namespace(timeout=None, max_rounds=None, poll_mode=flag)
    request = OptimizationRequest(
        prompt="Answer briefly.", qa=[QAPair("q", "a")], model="gpt-4o-mini", max_rounds=3
    )
    client = make_client(schedule=schedule)
    assert await _follow(client, args, output, RunState(), request=(request, "given")) == OK
    assert modes == {expected}


def test_poll_mode_is_an_option_of_every_command_that_waits() -> None:
    """``--poll-mode`` on ``optimize``, ``wait`` and ``batch``; any other word is refused."""
    parser = build_parser(emulator_options=False)
    for argv in (["optimize", "s.yaml"], ["wait", "spo-1"], ["batch", "in.jsonl", "-o", "o"]):
        assert parser.parse_args(argv).poll_mode is None
        assert parser.parse_args([*argv, "--poll-mode", "progress"]).poll_mode == "progress"
        with pytest.raises(UsageError, match="invalid choice: 'rounds'"):
            parser.parse_args([*argv, "--poll-mode", "rounds"])
    assert not hasattr(parser.parse_args(["status", "spo-1"]), "poll_mode")
