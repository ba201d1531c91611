"""Run one command line: parse it, dispatch, and turn every outcome into an exit code.

Bad input and every error the SDK raises on purpose end as one line on stderr (plus,
when a task is involved, its id and the command that resumes the wait), never as a
traceback. Ctrl-C ends a wait at once: the task keeps running on the service.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Final

from spo_async import AuthenticationError, NotFoundError, SPOError

from ._commands import RunState, optimize, run_emulator, status, wait
from ._exit import INTERRUPTED, USAGE, InputError, exit_code_for
from ._parser import build_parser
from ._runtime import Output

__all__ = ["run"]

Command = Callable[..., Coroutine[object, object, int]]
_COMMANDS: Final[dict[str, Command]] = {"optimize": optimize, "status": status, "wait": wait}


def _command(name: str) -> Command:
    if name == "batch":  # imported on demand: the batch layer is the heaviest part
        from ._batch_command import batch  # noqa: PLC0415

        return batch
    return _COMMANDS[name]


def _say(message: str) -> None:
    print(f"spo-async: {message}", file=sys.stderr, flush=True)


def _after_task(state: RunState, *, interrupted: bool) -> None:
    """Tell where the task being waited for stands, and how to pick it up again."""
    if state.task_id is None:
        if interrupted and state.submitting:
            _say("interrupted before the task id arrived: a task may exist on the service")
        return
    if state.emulated:
        _say(f"task {state.task_id} ran in the in-process emulator, which stopped with us")
        return
    _say(f"task {state.task_id} keeps running on the service")
    if state.resume:
        _say(f"resume with: {state.resume}")


def run(argv: Sequence[str] | None = None) -> int:
    """Run ``spo-async`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(emulator_options=argv[:1] == ["emulator"]).parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else USAGE
    state = RunState(argv)
    try:
        if args.command == "emulator":
            return run_emulator(args)
        output = Output.from_args(args)
        return asyncio.run(_command(args.command)(args, output, state))
    except KeyboardInterrupt:
        _say("interrupted")
        _after_task(state, interrupted=True)
        return INTERRUPTED
    except (InputError, SPOError) as exc:
        _say(f"error: {exc}")
        if not isinstance(exc, NotFoundError | AuthenticationError):
            _after_task(state, interrupted=False)
        return exit_code_for(exc)
    except BrokenPipeError:
        # The reader went away (``| head``): no traceback, and none at exit either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
