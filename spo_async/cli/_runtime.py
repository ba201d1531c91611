"""What every command needs: where output goes, and a client for the service or an emulator.

Results go to stdout, diagnostics (warnings, progress lines, errors) to stderr. Colour
and animation are used only when stdout is a terminal and ``NO_COLOR`` is unset; then
progress is a live view on stdout, otherwise one plain line per change on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
from rich.console import Console

from spo_async import AsyncSPOClient, OptimizationRequest, QAPair, RequestLimiter
from spo_async.polling import AdaptiveSchedule, FixedSchedule

from ._exit import InputError
from ._report import API_KEY_VARIABLES, RunState, say
from ._safe import printable
from ._settings import DEFAULT_MODEL

__all__ = [
    "API_KEY_VARIABLES",
    "DEMO_REQUEST",
    "Output",
    "open_client",
    "quiet_library_logs",
    "read_api_key",
]

#: The service's documented example: what ``status``/``wait --emulator`` start without an id.
DEMO_REQUEST = OptimizationRequest(
    prompt="Act as the user's girlfriend",
    requirements="Act as the user's girlfriend and reply in Chinese",
    qa=[
        QAPair("Good morning", "[Rich thoughts, actions, or others][Reply]"),
        QAPair("Do you love me?", "[Rich thoughts, actions, or others][Reply]"),
        QAPair("What are you doing?", "[Rich thoughts, actions, or others][Reply]"),
    ],
    model=DEFAULT_MODEL,
)


@attrs.frozen
class Output:
    """The two consoles and how to use them."""

    out: Console
    err: Console
    #: Draw live views and progress bars on stdout.
    animate: bool
    json: bool
    quiet: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Output:
        """Consoles for the parsed arguments and the environment."""
        no_color = bool(os.environ.get("NO_COLOR"))
        out = Console(no_color=no_color or None, highlight=False)
        err = Console(stderr=True, no_color=no_color or None, highlight=False, soft_wrap=True)
        json = bool(getattr(args, "json", False))
        quiet = bool(getattr(args, "quiet", False))
        animate = out.is_terminal and not no_color and not json and not quiet
        return cls(out=out, err=err, animate=animate, json=json, quiet=quiet)

    def note(self, message: str) -> None:
        """A diagnostic line on stderr, unless ``--quiet``."""
        if not self.quiet:
            say(message)

    def warn(self, message: str) -> None:
        """A warning on stderr, even with ``--quiet``."""
        say(f"warning: {message}")


class _OneLine(logging.Handler):
    """The library's warnings and errors as one escaped line each, without tracebacks."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = printable(record.getMessage())
        except Exception:  # a record that cannot be formatted is not worth a traceback
            return
        say(f"[{record.levelname.lower()}] {text}")


def quiet_library_logs() -> None:
    """Show the library's log records at WARNING and above as one line each on stderr.

    The command reports every outcome itself; the records (a task the journal could not
    record, an answer the library does not believe) add context, but their tracebacks
    would look like a crash. ``SPO_ASYNC_LOG=debug`` keeps the library's own handler.
    """
    logger = logging.getLogger("spo_async")
    if not logger.handlers:
        logger.addHandler(_OneLine(logging.WARNING))
        logger.propagate = False


def read_api_key(args: argparse.Namespace, state: RunState) -> str:
    """The key from ``--api-key-file``, else from the environment, else a usage error.

    ``state.key_source`` records where it came from, for the message if the service
    rejects it.
    """
    if args.api_key_file:
        path = Path(args.api_key_file)
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InputError(f"{path}: cannot read the API key: {exc.strerror or exc}") from None
        if not key:
            raise InputError(f"{path}: the API key file is empty")
        state.key_source = f"--api-key-file {path}"
        return key
    for name in API_KEY_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            state.key_source = name
            return value
    raise InputError(
        "no API key: set AI302_API_KEY, or pass --api-key-file FILE (or try --emulator)"
    )


def _wait_options(args: argparse.Namespace) -> list[str]:
    """The options a ``wait`` needs to reach the same service with the same key."""
    options = []
    if args.base_url:
        options += ["--base-url", args.base_url]
    if args.api_key_file:
        options += ["--api-key-file", args.api_key_file]
    if args.allow_insecure_http:
        options.append("--allow-insecure-http")
    return options


@contextlib.asynccontextmanager
async def open_client(args: argparse.Namespace, state: RunState) -> AsyncIterator[AsyncSPOClient]:
    """A client for the service, or for an in-process emulator with ``--emulator``.

    ``--rate`` (batch) holds its requests to that many per second; ``--limiter URI``
    draws them from a budget shared with every other process on that store and key
    (``--rate`` is then its cap). The emulator is imported only here, when
    ``--emulator`` asks for it.
    """
    interval = args.poll_interval
    rate = getattr(args, "rate", None)
    if args.limiter:
        limiter: RequestLimiter | None = RequestLimiter.shared(args.limiter, rate=rate)
    else:
        limiter = RequestLimiter(rate=rate) if rate else None
    if not args.emulator:
        # What the schedule learns of each model's round times is kept between runs, so
        # a second ``spo-async optimize`` of a model starts warm (not for --emulator,
        # whose made-up timings would mislead the next real run).
        schedule = FixedSchedule(interval=interval) if interval else AdaptiveSchedule(persist=True)
        key = read_api_key(args, state)
        state.wait_options = _wait_options(args)
        async with AsyncSPOClient(
            api_key=key,
            base_url=args.base_url,
            schedule=schedule,
            limiter=limiter,
            allow_insecure_http=args.allow_insecure_http,
        ) as client:
            yield client
        return
    from spo_async.testing import Emulator, EmulatorConfig  # noqa: PLC0415 (only for --emulator)

    state.emulated = True
    seconds = args.emulator_round_seconds
    config = EmulatorConfig(
        round_seconds=seconds,
        queue_seconds=seconds / 2,
        jitter=0.2,
        win_probability=0.7,
        seed=args.emulator_seed,
        record_requests=False,
    )
    if interval is None:
        interval = min(max(seconds / 4, 0.01), 1.0)
    async with (
        Emulator(config) as emulator,
        AsyncSPOClient(
            api_key=emulator.api_key,
            base_url=emulator.base_url,
            schedule=FixedSchedule(interval=interval),
            limiter=limiter,
        ) as client,
    ):
        yield client
