"""Run one command line: parse it, dispatch, and turn every outcome into an exit code.

Bad input and every error the SDK raises on purpose end as one line on stderr (plus,
when a task is involved, its id and the command that resumes the wait), never as a
traceback; with ``--json`` stdout holds one JSON object whatever happened. Ctrl-C ends
a wait at once: the task keeps running on the service.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Final

from spo_async import SPOError

from ._exit import ERROR, INTERRUPTED, USAGE, InputError, UsageError
from ._parser import build_parser
from ._report import RunState, error_object, print_json, say, silence_stdout
from ._runtime import Output, quiet_library_logs
from ._safe import shown_argument, without_passwords

__all__ = ["run"]

Command = Callable[..., Coroutine[object, object, int]]


def _command(name: str) -> Command:
    # Imported on demand: a command loads only what it uses.
    if name == "batch":
        from ._batch_command import batch  # noqa: PLC0415

        return batch
    from . import _commands  # noqa: PLC0415

    commands: Final[dict[str, Command]] = {
        "optimize": _commands.optimize,
        "status": _commands.status,
        "wait": _commands.wait,
    }
    return commands[name]


#: The keys of ``--json``'s object, by command (see :mod:`._report`, :mod:`._batch_command`).
_SINGLE_KEYS: Final = ("task_id", "status", "best_prompt", "result", "error", "resume")
_BATCH_KEYS: Final = (
    *("total", "succeeded", "failed", "errored", "unknown", "not_run", "seconds"),
    *("output", "journal", "error", "unfinished_task_ids", "unwritten_task_ids", "resume"),
)


def _usage(state: RunState, exc: UsageError) -> int:
    """A command line the parser refused: its line, and with --json the usual object.

    The parser may quote an argument (``ambiguous option: --j=postgresql://...``):
    any URI in its message is shown without its password. The arguments given are
    masked whole first, since a password may hold a space, where a URI found in free
    text would end.
    """
    text = str(exc)
    for argument in sorted(state.argv, key=len, reverse=True):
        if "://" in argument:
            text = text.replace(argument, shown_argument(argument))
    exc = UsageError(without_passwords(text))
    print(exc, file=sys.stderr, flush=True)
    if state.json:
        keys = _BATCH_KEYS if state.argv[:1] == ["batch"] else _SINGLE_KEYS
        body: dict[str, object] = dict.fromkeys(keys)
        if "unfinished_task_ids" in body:
            body["unfinished_task_ids"] = body["unwritten_task_ids"] = []
        print_json({**body, "error": error_object(exc), "exit_code": USAGE})
    return USAGE


def _run(argv: list[str], state: RunState) -> int:
    try:
        args = build_parser(emulator_options=argv[:1] == ["emulator"]).parse_args(argv)
    except SystemExit as exc:  # --help or --version, already printed
        return exc.code if isinstance(exc.code, int) else USAGE
    except UsageError as exc:
        return _usage(state, exc)
    state.json = bool(getattr(args, "json", False))
    quiet_library_logs()
    try:
        if args.command == "emulator":
            from ._commands import run_emulator  # noqa: PLC0415

            return run_emulator(args)
        output = Output.from_args(args)
        return asyncio.run(_command(args.command)(args, output, state))
    except (KeyboardInterrupt, InputError, SPOError) as exc:
        return state.end(exc)
    except BrokenPipeError:
        # The reader went away (``| head``): no traceback, and none at exit either.
        silence_stdout()
        return ERROR
    except OSError as exc:
        # Most often stdout on a full disk: say so on stderr, with the task's id.
        silence_stdout()
        state.json = False
        return state.end(exc)


def run(argv: Sequence[str] | None = None) -> int:
    """Run ``spo-async`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    state = RunState(argv)
    try:
        return _run(argv, state)
    except KeyboardInterrupt:  # a second Ctrl-C, while the first was being reported
        say("interrupted")
        return INTERRUPTED
