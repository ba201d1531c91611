"""The command line's grammar: ``spo-async COMMAND [options]``, built on :mod:`argparse`.

argparse, not click or typer: it is in the standard library (the ``cli`` extra stays
rich + PyYAML), its sub-commands and help cover everything here, and the emulator's own
command line (:func:`spo_async.testing.__main__.build_parser`) is an argparse parser
that ``spo-async emulator`` reuses as it is, flags and help included. Errors are one
line (``spo-async optimize: error: ...``) and exit with :data:`~._exit.USAGE`.

Defaults are the library's: an option left out is not passed on, and its help reads
the default from the library's signatures, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import inspect
import math
from collections.abc import Callable
from typing import Any, NoReturn

import attrs

from spo_async import AsyncSPOClient, OptimizationRequest, QAPair, RequestValidationError
from spo_async import __version__ as version
from spo_async.polling import PollMode

from ._exit import EPILOG, UsageError
from ._settings import DEFAULT_MODEL

__all__ = ["DEFAULT_EMULATOR_ROUND_SECONDS", "build_parser", "library_default"]

#: Round duration of the ``--emulator`` service: quick, yet slow enough to watch.
DEFAULT_EMULATOR_ROUND_SECONDS = 0.3


def library_default(name: str) -> Any:
    """The library's default for ``name``: a request field, a client or a batch option."""
    fields = attrs.fields_dict(OptimizationRequest)
    if name in fields:
        return fields[name].default
    for function in (AsyncSPOClient, AsyncSPOClient.optimize_many):
        parameter = inspect.signature(function).parameters.get(name)
        if parameter is not None:
            return parameter.default
    raise KeyError(name)


_JSON_HELP = (
    "print one JSON object on stdout, whatever the outcome: task_id, status (the task's, as "
    "last seen), best_prompt, result (the task as the service reports it: round_data_list, "
    "best_round, error, ...), error ({type, message} of what went wrong, or null), resume "
    "(the command that waits for the task again), exit_code"
)
_BATCH_JSON_HELP = (
    "print one JSON object on stdout, whatever the outcome: total, succeeded, failed, "
    "errored, unknown, not_run, seconds, output, journal, error ({type, message} or null), "
    "unfinished_task_ids (tasks that keep running), unwritten_task_ids (finished tasks "
    "whose line could not be written), resume, exit_code"
)


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line and exit with the usage code."""

    def error(self, message: str) -> NoReturn:
        """Raise :class:`UsageError` with ``prog: error: message``, for the caller to print."""
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


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


def _request_field(name: str, kind: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    """Parse a request field and check it the way :class:`OptimizationRequest` does."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        try:
            OptimizationRequest(prompt="p", qa=[QAPair("q", "")], model="m", **{name: value})
        except RequestValidationError as exc:
            raise argparse.ArgumentTypeError(exc.problem) from None
        return value

    parse.__name__ = what
    return parse


_max_rounds = _request_field("max_rounds", int, "an integer")
_temperature = _request_field("temperature", float, "a number")


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
        "--allow-insecure-http",
        action="store_true",
        help="allow a plain http:// URL to another machine, such as 'spo-async emulator "
        "--allow-remote' elsewhere (the API key then travels unencrypted)",
    )
    add(
        "--api-key-file",
        metavar="FILE",
        help="read the API key from FILE (default: the AI302_API_KEY variable)",
    )
    add(
        "--limiter",
        metavar="URI",
        help="share one rate budget with every process using URI: postgresql://... "
        "(pip install 'spo-async[postgres]') or redis://... (pip install 'spo-async[redis]')",
    )
    add(
        "--poll-interval",
        type=_seconds,
        metavar="S",
        help="poll every S seconds (default: the library's adaptive schedule)",
    )
    return parent


def _seconds_default(seconds: float | None) -> str:
    if seconds is None:
        return "none"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _output_options(*, wait: bool, batch: bool = False) -> _Parser:
    parent = _Parser(add_help=False)
    group = parent.add_argument_group("output")
    group.add_argument(
        "--json", action="store_true", help=_BATCH_JSON_HELP if batch else _JSON_HELP
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", help="no progress, only the result and errors"
    )
    if wait:
        default = (
            "completion" if batch else "progress while the live view is drawn, else completion"
        )
        group.add_argument(
            "--poll-mode",
            choices=[mode.value for mode in PollMode],
            help="look for every round (progress) or only for the end (completion); "
            f"default: {default}",
        )
        group.add_argument(
            "--timeout",
            type=_seconds,
            metavar="S",
            help="give up waiting after S seconds; the task keeps running "
            f"(default {_seconds_default(library_default('timeout'))})",
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
        help=f"rounds to run (default {library_default('max_rounds')})",
    )
    add(
        "--language",
        metavar="LANG",
        help="working language, such as en or zh "
        f"(default {library_default('language')}: from the prompt's script)",
    )
    add(
        "--temperature",
        type=_temperature,
        metavar="T",
        help=f"optimizer temperature (default {library_default('temperature')})",
    )
    return parent


def build_parser(*, emulator_options: bool = True) -> argparse.ArgumentParser:
    """Return the parser of ``spo-async`` and its sub-commands.

    ``emulator_options=False`` leaves the options of ``spo-async emulator`` out, so
    that the other commands never import the emulator's command line.
    """
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="spo-async",
        description="Optimize prompts with 302.AI's SPO service.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"spo-async {version}")
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
        req, conn, _output_options(wait=True, batch=True),
    )  # fmt: skip
    batch.add_argument("input", metavar="INPUT.jsonl", help="one request per line (id optional)")
    batch.add_argument("-o", "--output", required=True, metavar="OUTPUT.jsonl",
                       help="where each row's outcome goes, one JSON line per row")  # fmt: skip
    concurrency = library_default("concurrency")
    batch.add_argument("--concurrency", type=_count, metavar="N",
                       help=f"tasks running at once (default {concurrency})")  # fmt: skip
    batch.add_argument("--rate", type=_seconds, metavar="R",
                       help="at most R requests per second (default: no limit)")  # fmt: skip
    batch.add_argument("--journal", metavar="FILE|URI",
                       help="record progress in FILE; rerun to resume, never resubmit. A "
                       "postgresql:// URI shares the batch with every worker that uses it "
                       "(pip install 'spo-async[postgres]')")  # fmt: skip

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

    parents: list[_Parser] = []
    if emulator_options:
        from spo_async.testing.__main__ import (  # noqa: PLC0415 (only for this command)
            build_parser as build_emulator_parser,
        )

        parents.append(
            _Parser(add_help=False, parents=[build_emulator_parser("spo-async emulator")])
        )
    emulator = commands.add_parser(
        "emulator",
        help="serve the built-in emulator of the SPO API until Ctrl-C",
        description="Serve the built-in emulator of the SPO API until Ctrl-C; "
        "it prints 'serving on <url> (api key: <key>)'.",
        parents=parents,
        add_help=False,
        epilog=EPILOG,
        formatter_class=formatter,
    )
    emulator.add_argument("--emulator", action="store_true", help="accepted and ignored")
    return parser
