"""The single-task commands: ``optimize``, ``status``, ``wait`` and ``emulator``.

Each async command takes the parsed arguments, the :class:`~._runtime.Output` and a
:class:`~._report.RunState` it fills in as it goes (the task id, its last snapshot), so
that an interrupt or an error can say where the task stands and how to carry on. A
command that gets its snapshot shows it and ends through :func:`~._report.end_single`;
one that fails raises, and :mod:`._app` ends it the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.live import Live

from spo_async import (
    AsyncSPOClient,
    Event,
    Failed,
    OptimizationRequest,
    RoundCompleted,
    Succeeded,
    TaskQueued,
    TaskResult,
)
from spo_async.polling import PollMode

from ._exit import OK, InputError
from ._render import LiveView, final_report, round_line, snapshot_report
from ._report import RunState, end_single
from ._runtime import DEMO_REQUEST, Output, open_client
from ._safe import printable, short_id
from ._settings import Overrides, load_settings

__all__ = ["optimize", "overrides", "run_emulator", "status", "timeout_option", "wait"]

Watch = Callable[[TaskResult], None]


def overrides(args: argparse.Namespace) -> Overrides:
    """The request fields given as flags."""
    return Overrides(
        model=args.model,
        max_rounds=args.max_rounds,
        language=args.language,
        temperature=args.temperature,
    )


def poll_mode(args: argparse.Namespace, *, watched: bool) -> PollMode:
    """``--poll-mode``, else every round while someone watches them go by, else the end.

    Plain lines, a log or ``--quiet`` need the result on time, and each round only when a
    look sees it.
    """
    if args.poll_mode is not None:
        return PollMode(args.poll_mode)
    return PollMode.PROGRESS if watched else PollMode.COMPLETION


def timeout_option(args: argparse.Namespace) -> dict[str, Any]:
    """``--timeout`` as a keyword argument, only when given: else the library's default."""
    return {} if args.timeout is None else {"timeout": args.timeout}


class _Lines:
    """Progress as plain lines on stderr: each status change and each finished round."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.status: str | None = None
        self.rounds = 0

    def __call__(self, snapshot: TaskResult) -> None:
        done = snapshot.completed_rounds
        for round_ in done[self.rounds :]:
            self.output.note(round_line(done, round_, snapshot.max_rounds))
        self.rounds = max(self.rounds, len(done))
        if snapshot.raw_status != self.status:
            self.status = snapshot.raw_status
            status = printable(snapshot.raw_status)
            self.output.note(f"task {short_id(snapshot.task_id)}: {status}")


def _on_event(watch: Watch, state: RunState) -> Callable[[Event], None]:
    """An ``on_event`` callback: each snapshot an event carries goes to ``watch``."""

    def on_event(event: Event) -> None:
        if isinstance(event, TaskQueued | RoundCompleted | Succeeded | Failed):
            state.last = event.result
            watch(event.result)

    return on_event


@contextlib.contextmanager
def _watching(output: Output, state: RunState) -> Iterator[tuple[Watch, LiveView | None]]:
    """A progress hook: the live view on a terminal, plain lines otherwise.

    The live view is redrawn in place and cleared at the end, when the report takes its
    place; if the command ends otherwise (Ctrl-C, a timeout, an error), its last frame
    stays on screen, with the rounds seen so far.
    """
    if not output.animate:
        yield _Lines(output), None
        return
    view = LiveView()
    live = Live(view, console=output.out, refresh_per_second=8, transient=True)
    with live:
        try:
            yield view.update, view
        except BaseException:
            view.note = "stopped"
            live.transient = False
            raise


def _announce(output: Output, request: OptimizationRequest, origin: str) -> str:
    """Say what is about to run: the model, the rounds, and the language (and why)."""
    language = f"language {request.language} ({origin})"
    output.note(f"optimizing with {request.model}, {request.max_rounds} rounds, {language}")
    return f"language {request.language}"


async def _follow(
    client: AsyncSPOClient,
    args: argparse.Namespace,
    output: Output,
    state: RunState,
    *,
    request: tuple[OptimizationRequest, str] | None = None,
    task_id: str | None = None,
) -> int:
    """Submit ``request`` (or take ``task_id``) and wait for the result, showing progress."""
    started = time.monotonic()
    with _watching(output, state) as (watch, view):
        if request is not None:
            language = _announce(output, *request)
            if view is not None:
                view.language = language
            state.submitting = True
            task_id = await client.submit(request[0])
            state.submitting, state.submitted = False, True
            max_rounds: int | None = request[0].max_rounds
            if view is None:
                output.note(f"submitted task {short_id(task_id)}")
        else:
            max_rounds = args.max_rounds
        assert task_id is not None  # noqa: S101 - one of the two is given
        state.waiting_for(task_id, max_rounds)
        if view is not None:
            view.task_id, view.note = task_id, "waiting"
        result = await client.wait_for_result(
            task_id,
            on_event=_on_event(watch, state),
            max_rounds=max_rounds,
            raise_on_failure=False,
            poll_mode=poll_mode(args, watched=view is not None),
            **timeout_option(args),
        )
    state.last = result
    if not output.json:
        output.out.print(final_report(result, time.monotonic() - started))
    return end_single(state)


async def optimize(args: argparse.Namespace, output: Output, state: RunState) -> int:
    """``spo-async optimize SETTINGS``: submit one prompt and wait for the best one."""
    # Read the file before starting anything, so a bad one costs no emulator or session.
    loaded = load_settings(Path(args.settings), overrides(args), output.warn)
    async with open_client(args, state) as client:
        return await _follow(client, args, output, state, request=loaded)


async def _task_id(args: argparse.Namespace, client: AsyncSPOClient, output: Output) -> str:
    """The TASK_ID argument; with ``--emulator`` and none, a demo task started now."""
    if args.task_id or not args.emulator:  # _check_task_id ran first
        return str(args.task_id)
    if args.max_rounds is None:
        args.max_rounds = DEMO_REQUEST.max_rounds
    task_id = await client.submit(DEMO_REQUEST)
    output.note(f"started demo task {short_id(task_id)} in the in-process emulator")
    return task_id


def _check_task_id(args: argparse.Namespace) -> None:
    if not args.task_id and not args.emulator:
        raise InputError("TASK_ID is required (it may be left out only with --emulator)")


async def status(args: argparse.Namespace, output: Output, state: RunState) -> int:
    """``spo-async status TASK_ID``: one snapshot (exit 1 if the task failed)."""
    _check_task_id(args)
    async with open_client(args, state) as client:
        task_id = await _task_id(args, client, output)
        state.waiting_for(task_id, args.max_rounds)
        state.last = await client.get_task(task_id, max_rounds=args.max_rounds)
    if not output.json:
        output.out.print(snapshot_report(state.last))
    return end_single(state)


async def wait(args: argparse.Namespace, output: Output, state: RunState) -> int:
    """``spo-async wait TASK_ID``: wait for the result with the live view."""
    _check_task_id(args)
    async with open_client(args, state) as client:
        task_id = await _task_id(args, client, output)
        return await _follow(client, args, output, state, task_id=task_id)


def run_emulator(args: argparse.Namespace) -> int:
    """``spo-async emulator``: serve the emulator until Ctrl-C or SIGTERM.

    The emulator's own command line does the work (its parser, its configuration, its
    server); it is imported only for this command.
    """
    from spo_async.testing.__main__ import config_from_args, serve  # noqa: PLC0415

    try:
        config = config_from_args(args)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
    return OK
