"""How a command ends: the exit code, one line saying why, and how to carry on.

:class:`RunState` is what a command has done so far (the task it started or waits for,
its last snapshot, where the key came from); :func:`end_single` turns the end of a
single-task command into the lines a person reads on stderr and, with ``--json``, the
one JSON object a program reads on stdout, whatever the outcome:

.. code-block:: text

    {"task_id": ..., "status": ..., "best_prompt": ..., "result": {...} | null,
     "error": {"type": ..., "message": ...} | null, "resume": "spo-async wait ..." | null,
     "exit_code": 0}

``status`` is the task's as last seen (``null`` when it never was), ``result`` the last
snapshot (:meth:`~spo_async.TaskResult.to_dict`), ``error`` the exception's class name
and message, and ``resume`` the command that waits for the task again. Messages for a
person go through :mod:`._safe`; the JSON keeps every text exact.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

from spo_async import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    SubmitOutcomeUnknownError,
    TaskResult,
    WaitTimeoutError,
)

from ._exit import ERROR, FAILED, INTERRUPTED, OK, REFUSED, TIMEOUT, exit_code_for
from ._safe import printable, short_id, shorten, shown_argument

__all__ = [
    "API_KEY_VARIABLES",
    "MESSAGE_LIMIT",
    "RunState",
    "describe",
    "end_single",
    "error_object",
    "print_json",
    "program",
    "say",
    "show_command",
]

#: Characters of an error message shown on the terminal; --json has it whole.
MESSAGE_LIMIT: Final = 1000
#: Where the library looks for the API key, in its order (a test pins it to the library's).
API_KEY_VARIABLES: Final = (
    "AI302_API_KEY",
    "302AI_API_KEY",
    "AI302_KEY",
    "NEXT_PUBLIC_302_API_KEY",
)


def program() -> str:
    """How this program was started: ``spo-async`` or ``python -m <package>``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name.endswith(".__main__"):
        return f"{shlex.quote(sys.executable)} -m {spec.name.removesuffix('.__main__')}"
    return "spo-async"


def say(message: str) -> None:
    """One line on stderr, even with ``--quiet``: errors and what to do next."""
    print(f"spo-async: {message}", file=sys.stderr, flush=True)


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that the flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def show_command(command: str) -> None:
    """A command to copy, on a line of its own on stderr."""
    print(f"  {command}", file=sys.stderr, flush=True)


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout.

    Used at the end of a command, even after an error: if stdout cannot take it (a
    closed pipe, a full disk), the command ends all the same, with stderr's lines.
    """
    try:
        print(json.dumps(value, ensure_ascii=False, indent=2), flush=True)
    except OSError:
        silence_stdout()


class RunState:
    """What a command has done so far, for the messages after an interrupt or an error."""

    def __init__(self, argv: Sequence[str] = ()) -> None:
        #: The command line's arguments, to repeat them in a resume hint.
        self.argv = list(argv)
        #: How the command ends when an error escapes it (a batch sets its own).
        self.ender: Callable[[RunState, BaseException], int] = end_single
        #: Whether the one JSON object goes to stdout (known before the parser runs).
        self.json = "--json" in self.argv
        #: The task being waited for, once known.
        self.task_id: str | None = None
        #: Its last snapshot.
        self.last: TaskResult | None = None
        #: Whether a submit may be on its way, and whether this run's submit made the task.
        self.submitting = False
        self.submitted = False
        #: Whether the task lives in the in-process emulator (and dies with this process).
        self.emulated = False
        #: Where the API key came from: a variable's name, or ``--api-key-file FILE``.
        self.key_source: str | None = None
        #: The ``wait`` options that reach the same task: base URL, key file, rounds.
        self.wait_options: list[str] = []

    def waiting_for(self, task_id: str, max_rounds: int | None) -> None:
        """Remember the task being waited for, and its number of rounds."""
        self.task_id = task_id
        if max_rounds:
            self.wait_options += ["--max-rounds", str(max_rounds)]

    def end(self, exc: BaseException) -> int:
        """End the command after ``exc``: say why and what to do, return the exit code."""
        return self.ender(self, exc)

    def resume(self) -> str | None:
        """The command that waits for the task again, when it is worth printing."""
        if self.task_id is None or self.emulated or not _queryable(self.task_id):
            return None
        options = [shown_argument(option) for option in self.wait_options]  # a --base-url's
        return f"{program()} {shlex.join(['wait', self.task_id, *options])}"


def _queryable(task_id: str) -> bool:
    """Whether ``spo-async wait`` would accept the id (the library's limits)."""
    return len(task_id) <= 256 and task_id.isprintable() and task_id.strip() == task_id


def error_object(exc: BaseException) -> dict[str, str]:
    """``{"type": class name, "message": text}``, exact, for ``--json``."""
    if isinstance(exc, KeyboardInterrupt):
        return {"type": "KeyboardInterrupt", "message": "interrupted by Ctrl-C"}
    return {"type": type(exc).__name__, "message": str(exc)}


def _api_detail(exc: APIError) -> str:
    code = f", err_code {exc.err_code}" if exc.err_code is not None else ""
    return f"HTTP {exc.status}{code}: {exc.message}"


def describe(exc: BaseException, state: RunState) -> str:
    """One line for a person: what went wrong, in the command line's words."""
    task = short_id(state.task_id) if state.task_id else None
    if isinstance(exc, AuthenticationError):
        source = state.key_source or "AI302_API_KEY"
        text = (
            f"the service rejected the API key ({_api_detail(exc)}); check the key in "
            f"{source} (read in this order: {', '.join(API_KEY_VARIABLES)}; or pass "
            "--api-key-file FILE)"
        )
    elif isinstance(exc, NotFoundError) and task is not None:
        text = f"the service knows no task {task} ({_api_detail(exc)})"
    elif isinstance(exc, WaitTimeoutError):
        if exc.task_id is None:
            text = f"--timeout ({exc.timeout:g} s) passed before the submit left: no task exists"
        else:
            seen = exc.last_result.raw_status if exc.last_result is not None else "never seen"
            text = (
                f"--timeout passed: task {short_id(exc.task_id)} did not finish within "
                f"{exc.timeout:g} s (last status: {seen})"
            )
    elif isinstance(exc, ConfigurationError):
        text = str(exc).replace("pass allow_insecure_http=True", "pass --allow-insecure-http")
    elif isinstance(exc, APIError) and exit_code_for(exc) == REFUSED:
        text = f"the service refused it ({_api_detail(exc)})"
    else:
        text = str(exc) or type(exc).__name__
        for known in {state.task_id, getattr(exc, "task_id", None)}:
            if known is not None and len(known) > 64:
                text = text.replace(repr(known), short_id(known)).replace(known, short_id(known))
    return shorten(printable(text), MESSAGE_LIMIT)


def _after_task(state: RunState, exc: BaseException, code: int) -> None:
    """Say where the task stands, and how to pick it up again."""
    if isinstance(exc, SubmitOutcomeUnknownError):
        if exc.task_id is not None:
            say(f"the service sent a task id that cannot be queried: {short_id(exc.task_id)}")
            say("(--json prints it exactly)")
        return
    if state.task_id is None:
        if code == INTERRUPTED and state.submitting:
            say("interrupted before the task id arrived: a task may exist on the service")
        return
    if code not in (ERROR, TIMEOUT, INTERRUPTED):
        return
    task = short_id(state.task_id)
    if state.emulated:
        say(f"task {task} ran in the in-process emulator, which stopped with us")
        return
    last = state.last
    if isinstance(exc, WaitTimeoutError) and exc.last_result is not None:
        last = exc.last_result
    if last is not None and last.is_terminal:
        say(f"task {task} had finished ({printable(last.raw_status)}); see it again with:")
    elif last is not None or state.submitted:
        say(f"task {task} keeps running on the service; resume with:")
    elif code == INTERRUPTED:
        say(f"wait for task {task} again with:")
    else:
        say(f"task {task} was not reached; try again with:")
    resume = state.resume()
    show_command(resume if resume is not None else "(--json prints the id exactly)")


def _envelope(state: RunState, exc: BaseException | None, code: int) -> dict[str, Any]:
    last = state.last
    if isinstance(exc, WaitTimeoutError) and exc.last_result is not None:
        last = exc.last_result  # the newest: events may not all have been handled
    task_id = state.task_id or getattr(exc, "task_id", None)
    error: dict[str, str] | None = None if exc is None else error_object(exc)
    if exc is None and last is not None and last.failed:
        error = {"type": "TaskFailedError", "message": str(last.error or "the task failed")}
    return {
        "task_id": task_id,
        "status": last.raw_status if last is not None else None,
        "best_prompt": last.best_prompt if last is not None else None,
        "result": last.to_dict() if last is not None else None,
        "error": error,
        "resume": state.resume() if code in (ERROR, TIMEOUT, INTERRUPTED) else None,
        "exit_code": code,
    }


def end_single(state: RunState, exc: BaseException | None = None) -> int:
    """End a single-task command: its code, its lines on stderr, its JSON on stdout.

    ``exc`` is the error that ended it; ``None`` means the command got its snapshot
    (``state.last``) and the caller has shown it to a person already.
    """
    if exc is None:
        last = state.last
        code = FAILED if last is not None and last.failed else OK
    else:
        code = exit_code_for(exc)
        say(
            "interrupted"
            if isinstance(exc, KeyboardInterrupt)
            else f"error: {describe(exc, state)}"
        )
        _after_task(state, exc, code)
    if state.json:
        print_json(_envelope(state, exc, code))
    return code
