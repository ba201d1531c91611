"""The single-task commands: ``optimize``, ``status``, ``wait`` and ``emulator``.

Each async command takes the parsed arguments, the :class:`~._runtime.Output` and a
:class:`RunState` it fills in as it goes (the task id, the command that resumes the
wait), so that an interrupt or an error can tell the user how to carry on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from rich.live import Live

from spo_async import (
    AsyncSPOClient,
    Event,
    Failed,
    RoundCompleted,
    Succeeded,
    TaskQueued,
    TaskResult,
)

from ._exit import FAILED, OK, InputError
from ._render import LiveView, final_report, round_line, snapshot_report
from ._runtime import DEMO_REQUEST, Output, open_client
from ._settings import Overrides, load_settings

__all__ = [
    "RunState",
    "optimize",
    "overrides",
    "print_json",
    "program",
    "run_emulator",
    "timeout_option",
    "status",
    "wait",
]


def program() -> str:
    """How this program was started: ``spo-async`` or ``python -m <package>``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name.endswith(".__main__"):
        return f"{shlex.quote(sys.executable)} -m {spec.name.removesuffix('.__main__')}"
    return "spo-async"


class RunState:
    """What a command has done so far, for the messages after an interrupt or error."""

    def __init__(self, argv: Sequence[str] = ()) -> None:
        #: The command line's arguments, to repeat them in a resume hint.
        self.argv = list(argv)
        #: The task being waited for, once known.
        self.task_id: str | None = None
        #: The command line that waits for it again.
        self.resume: str | None = None
        #: Whether it lives in the in-process emulator (and dies with this process).
        self.emulated = False
        #: Whether a submit may be on its way.
        self.submitting = False

    def waiting_for(self, args: argparse.Namespace, task_id: str, max_rounds: int | None) -> None:
        """Remember the task being waited for, and the command that waits for it again."""
        self.task_id = task_id
        self.emulated = bool(args.emulator)
        words = ["wait", task_id]
        if args.base_url:
            words += ["--base-url", args.base_url]
        if args.api_key_file:
            words += ["--api-key-file", args.api_key_file]
        if max_rounds:
            words += ["--max-rounds", str(max_rounds)]
        self.resume = f"{program()} {shlex.join(words)}"


def overrides(args: argparse.Namespace) -> Overrides:
    """The request fields given as flags."""
    return Overrides(
        model=args.model,
        max_rounds=args.max_rounds,
        language=args.language,
        temperature=args.temperature,
    )


class _Watch(Protocol):
    def __call__(self, snapshot: TaskResult) -> None: ...


def _snapshots(watch: _Watch) -> Callable[[Event], None]:
    """An ``on_event`` callback that hands each snapshot an event carries to ``watch``."""

    def on_event(event: Event) -> None:
        if isinstance(event, TaskQueued | RoundCompleted | Succeeded | Failed):
            watch(event.result)

    return on_event


class _Lines:
    """Progress as plain lines on stderr: each status change and each finished round."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.status: str | None = None
        self.rounds = 0

    def __call__(self, snapshot: TaskResult) -> None:
        done = snapshot.completed_rounds
        for round_ in done[self.rounds :]:
            self.output.note(round_line(round_, snapshot.max_rounds))
        self.rounds = max(self.rounds, len(done))
        if snapshot.raw_status != self.status:
            self.status = snapshot.raw_status
            self.output.note(f"task {snapshot.task_id}: {snapshot.raw_status}")


@contextlib.contextmanager
def _watching(output: Output) -> Iterator[tuple[_Watch, LiveView | None]]:
    """A progress hook: the live view on a terminal, plain lines otherwise."""
    if not output.animate:
        yield _Lines(output), None
        return
    view = LiveView()
    with Live(view, console=output.out, refresh_per_second=8, transient=True):
        yield view.update, view


def _print_result(output: Output, result: TaskResult, elapsed: float | None) -> int:
    if output.json:
        print_json(result.to_dict())
    else:
        output.out.print(final_report(result, elapsed))
    return FAILED if result.failed else OK


async def _wait(
    client: AsyncSPOClient,
    args: argparse.Namespace,
    output: Output,
    state: RunState,
    task_id: str | None,
) -> int:
    """Submit the settings (when ``task_id`` is ``None``) and wait, showing progress."""
    started = time.monotonic()
    with _watching(output) as (hook, view):
        if task_id is None:
            request = load_settings(Path(args.settings), overrides(args), output.warn)
            state.submitting = True
            task_id = await client.submit(request)
            state.submitting = False
            max_rounds: int | None = request.max_rounds
            if view is None:
                output.note(f"submitted task {task_id}")
        else:
            max_rounds = args.max_rounds
        state.waiting_for(args, task_id, max_rounds)
        if view is not None:
            view.task_id, view.note = task_id, "waiting"
        result = await client.wait_for_result(
            task_id,
            on_event=_snapshots(hook),
            max_rounds=max_rounds,
            raise_on_failure=False,
            **timeout_option(args),
        )
    return _print_result(output, result, time.monotonic() - started)


async def optimize(args: argparse.Namespace, output: Output, state: RunState) -> int:
    """``spo-async optimize SETTINGS``: submit one prompt and wait for the best one."""
    # Check the file before starting anything, so a bad one costs no emulator or session.
    load_settings(Path(args.settings), overrides(args), lambda _: None)
    async with open_client(args) as client:
        return await _wait(client, args, output, state, None)


async def _task_id(args: argparse.Namespace, client: AsyncSPOClient, output: Output) -> str:
    """The TASK_ID argument; with ``--emulator`` and none, a demo task started now."""
    if args.task_id or not args.emulator:  # _check_task_id ran first
        return str(args.task_id)
    if args.max_rounds is None:
        args.max_rounds = DEMO_REQUEST.max_rounds
    task_id = await client.submit(DEMO_REQUEST)
    output.note(f"started demo task {task_id} in the in-process emulator")
    return task_id


def _check_task_id(args: argparse.Namespace) -> None:
    if not args.task_id and not args.emulator:
        raise InputError("TASK_ID is required (it may be left out only with --emulator)")


async def status(args: argparse.Namespace, output: Output, state: RunState) -> int:
    """``spo-async status TASK_ID``: one snapshot (exit 1 if the task failed)."""
    _check_task_id(args)
    async with open_client(args) as client:
        task_id = await _task_id(args, client, output)
        result = await client.get_task(task_id, max_rounds=args.max_rounds)
    if output.json:
        print_json(result.to_dict())
    else:
        output.out.print(snapshot_report(result))
    return FAILED if result.failed else OK


async def wait(args: argparse.Namespace, output: Output, state: RunState) -> int:
    """``spo-async wait TASK_ID``: wait for the result with the live view."""
    _check_task_id(args)
    async with open_client(args) as client:
        task_id = await _task_id(args, client, output)
        return await _wait(client, args, output, state, task_id)


def timeout_option(args: argparse.Namespace) -> dict[str, Any]:
    """``--timeout`` as a keyword argument, only when given: else the library's default."""
    return {} if args.timeout is None else {"timeout": args.timeout}


def _is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_emulator(args: argparse.Namespace) -> int:
    """``spo-async emulator``: serve the emulator until Ctrl-C or SIGTERM."""
    from spo_async.testing.__main__ import config_from_args, serve  # noqa: PLC0415

    if not args.allow_remote and not _is_loopback(args.host):
        raise InputError(f"refusing to serve on {args.host!r}: pass --allow-remote to expose it")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
    return OK


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout."""
    print(json.dumps(value, ensure_ascii=False, indent=2), flush=True)
