"""The command line's grammar: ``spo-async COMMAND [options]``, built on :mod:`argparse`.

argparse, not click or typer: it is in the standard library (the ``cli`` extra stays
rich + PyYAML), its sub-commands and help cover everything here, and the emulator's own
command line (:func:`spo_async.testing.__main__.build_parser`) is an argparse parser
that ``spo-async emulator`` reuses as it is, flags and help included. Errors are one
line (``spo-async optimize: error: ...``) and exit with :data:`~._exit.USAGE`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

from spo_async import MAX_ROUNDS_LIMIT, __version__
from spo_async.testing.__main__ import build_parser as build_emulator_parser

from ._exit import EPILOG, USAGE
from ._settings import DEFAULT_LANGUAGE, DEFAULT_MAX_ROUNDS, DEFAULT_MODEL, DEFAULT_TEMPERATURE

__all__ = ["DEFAULT_EMULATOR_ROUND_SECONDS", "build_parser"]

#: Round duration of the ``--emulator`` service: quick, yet slow enough to watch.
DEFAULT_EMULATOR_ROUND_SECONDS = 0.3
DEFAULT_WAIT_TIMEOUT = 900.0

_JSON_HELP = (
    "print the result as JSON: the task as the service reports it, keyed task_id, "
    "status, best_prompt, best_round, round_data_list [{round, prompt, success, sample}], "
    "error, max_rounds"
)


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line and exit with the usage code."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message`` and exit with :data:`USAGE`."""
        self.exit(USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(
    kind: Callable[[str], float], *, least: float, strict: bool, what: str
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < least or (strict and value == least):
            bound = f"> {least:g}" if strict else f">= {least:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


def _max_rounds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 2 <= value <= MAX_ROUNDS_LIMIT:
        raise argparse.ArgumentTypeError(
            f"must be between 2 and {MAX_ROUNDS_LIMIT}, got {value} "
            "(round 1 only re-runs the original prompt)"
        )
    return value


_seconds = _number(float, least=0.0, strict=True, what="a number of seconds")
_not_negative = _number(float, least=0.0, strict=False, what="a number >= 0")
_count = _number(int, least=1, strict=False, what="an integer >= 1")


def _connection_options() -> _Parser:
    parent = _Parser(add_help=False)
    group = parent.add_argument_group("service")
    add = group.add_argument
    add(
        "--emulator",
        action="store_true",
        help="run against an in-process emulator: no API key, no network",
    )
    add(
        "--emulator-round-seconds",
        type=_not_negative,
        default=DEFAULT_EMULATOR_ROUND_SECONDS,
        metavar="S",
        help="round duration of --emulator (default %(default)s)",
    )
    add(
        "--emulator-seed",
        type=int,
        default=7,
        metavar="N",
        help="seed of --emulator's rounds and votes (default %(default)s)",
    )
    add("--base-url", metavar="URL", help="service URL (default: AI302_BASE_URL, else 302.AI)")
    add(
        "--api-key-file",
        metavar="FILE",
        help="read the API key from FILE (default: the AI302_API_KEY variable)",
    )
    add(
        "--poll-interval",
        type=_seconds,
        metavar="S",
        help="poll every S seconds (default: adaptive, from 1 s)",
    )
    return parent


def _output_options(*, wait: bool) -> _Parser:
    parent = _Parser(add_help=False)
    group = parent.add_argument_group("output")
    group.add_argument("--json", action="store_true", help=_JSON_HELP)
    group.add_argument(
        "-q", "--quiet", action="store_true", help="no progress, only the result and errors"
    )
    if wait:
        group.add_argument(
            "--timeout",
            type=_seconds,
            default=DEFAULT_WAIT_TIMEOUT,
            metavar="S",
            help="give up waiting after S seconds; the task keeps running (default %(default)g)",
        )
    return parent


def _request_options() -> _Parser:
    parent = _Parser(add_help=False)
    group = parent.add_argument_group("request (a flag wins over the file)")
    add = group.add_argument
    add("--model", metavar="ID", help=f"302.AI model id (default {DEFAULT_MODEL})")
    add(
        "--max-rounds",
        type=_max_rounds,
        metavar="N",
        help=f"rounds to run, 2 to {MAX_ROUNDS_LIMIT} (default {DEFAULT_MAX_ROUNDS})",
    )
    add("--language", metavar="LANG", help=f"working language (default {DEFAULT_LANGUAGE})")
    add(
        "--temperature",
        type=_not_negative,
        metavar="T",
        help=f"optimizer temperature (default {DEFAULT_TEMPERATURE})",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``spo-async`` and its sub-commands."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="spo-async",
        description="Optimize prompts with 302.AI's SPO service.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"spo-async {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    conn, req = _connection_options(), _request_options()

    def command(name: str, help_text: str, *parents: _Parser) -> _Parser:
        sub: _Parser = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=list(parents),
            epilog=EPILOG,
            formatter_class=formatter,
        )
        return sub

    optimize = command(
        "optimize",
        "optimize one prompt from a MetaGPT SPO settings file (YAML or JSON)",
        req, conn, _output_options(wait=True),
    )  # fmt: skip
    optimize.add_argument("settings", metavar="SETTINGS", help="prompt, requirements, qa[, count]")

    batch = command(
        "batch",
        "optimize one prompt per line of a JSON Lines file, resumably",
        req, conn, _output_options(wait=True),
    )  # fmt: skip
    batch.add_argument("input", metavar="INPUT.jsonl", help="one request per line (id optional)")
    batch.add_argument("-o", "--output", required=True, metavar="OUTPUT.jsonl",
                       help="where each row's outcome goes, one JSON line per row")  # fmt: skip
    batch.add_argument("--concurrency", type=_count, default=8, metavar="N",
                       help="tasks running at once (default %(default)s)")  # fmt: skip
    batch.add_argument("--rate", type=_seconds, metavar="R",
                       help="at most R requests per second (default: no limit)")  # fmt: skip
    batch.add_argument("--journal", metavar="FILE",
                       help="record progress in FILE; rerun to resume, never resubmit")  # fmt: skip

    for name, text in (
        ("status", "print one snapshot of a task"),
        ("wait", "wait for a task's result, with the live view"),
    ):
        sub = command(name, text, conn, _output_options(wait=name == "wait"))
        sub.add_argument(
            "task_id",
            metavar="TASK_ID",
            nargs="?",
            help="the task (with --emulator and none given: a demo task started here)",
        )
        sub.add_argument(
            "--max-rounds", type=_max_rounds, metavar="N", help="the task's rounds, for 'k of N'"
        )

    emulator = commands.add_parser(
        "emulator",
        help="serve the built-in emulator of the SPO API until Ctrl-C",
        description="Serve the built-in emulator of the SPO API until Ctrl-C; "
        "it prints 'serving on <url> (api key: <key>)'.",
        parents=[_Parser(add_help=False, parents=[build_emulator_parser("spo-async emulator")])],
        add_help=False,
        epilog=EPILOG,
        formatter_class=formatter,
    )
    emulator.add_argument("--emulator", action="store_true", help="accepted and ignored")
    return parser
