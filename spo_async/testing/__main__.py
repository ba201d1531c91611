"""Serve the SPO emulator from the command line: ``python -m spo_async.testing``.

Useful to try a client, a notebook or another language's SDK against a local, fast and
scriptable stand-in for 302.AI: it prints ``serving on <url> (api key: <key>)`` and
serves until Ctrl-C or SIGTERM. :func:`build_parser` and :func:`main` are importable so
another command line can embed them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from spo_async._sansio import is_loopback
from spo_async.testing._config import DEFAULT_API_KEY, DEFAULT_MODELS, EmulatorConfig
from spo_async.testing._emulator import Emulator
from spo_async.testing._faults import Fault, FaultKind

__all__ = ["build_parser", "config_from_args", "main", "serve"]


def build_parser(prog: str = "python -m spo_async.testing") -> argparse.ArgumentParser:
    """Return the argument parser of the emulator's command line."""
    defaults = EmulatorConfig()
    parser = argparse.ArgumentParser(
        prog=prog, description="Serve a local emulator of 302.AI's SPO API."
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (loopback unless --allow-remote)")
    add("--port", type=int, default=8302, help="port to bind; 0 picks a free one (default 8302)")
    add("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    add(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help=f"accepted API key, repeatable (default {DEFAULT_API_KEY})",
    )
    add(
        "--broke-key",
        action="append",
        default=[],
        metavar="KEY",
        help="API key that authenticates but has no balance (-10004), repeatable",
    )
    add(
        "--model",
        action="append",
        default=[],
        metavar="MODEL",
        help="extra model id to accept, repeatable",
    )
    add("--queue-seconds", type=float, default=defaults.queue_seconds)
    add("--round-seconds", type=float, default=defaults.round_seconds)
    add("--jitter", type=float, default=defaults.jitter, help="relative, e.g. 0.3 = ±30%%")
    add("--time-scale", type=float, default=defaults.time_scale)
    add("--win-probability", type=float, default=defaults.win_probability)
    add("--seed", type=int, default=defaults.seed)
    add(
        "--hide-best-while-processing",
        action="store_true",
        help="report best_prompt/best_round only once the task ends",
    )
    add(
        "--show-running-round",
        action="store_true",
        help="report the running round with an empty sample list",
    )
    add(
        "--fault-rate-429",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of a 429 with Retry-After on any request",
    )
    add("--retry-after", default="1", help="Retry-After value of those 429s")
    add(
        "--fault-rate-5xx",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of a 502 HTML page on a task query",
    )
    add(
        "--fault-rate-drop",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of a dropped connection on a task query",
    )
    return parser  # fmt: skip


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Turn parsed command-line arguments into an :class:`EmulatorConfig`."""
    faults: list[Fault] = []
    if args.fault_rate_429:
        faults.append(
            Fault(
                FaultKind.RATE_LIMIT, probability=args.fault_rate_429, retry_after=args.retry_after
            )
        )
    if args.fault_rate_5xx:
        faults.append(
            Fault(FaultKind.SERVER_ERROR_HTML, endpoint="task", probability=args.fault_rate_5xx)
        )
    if args.fault_rate_drop:
        faults.append(
            Fault(FaultKind.DROP_BEFORE, endpoint="task", probability=args.fault_rate_drop)
        )
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        api_keys=frozenset(args.api_keys or [DEFAULT_API_KEY]),
        insufficient_balance_keys=frozenset(args.broke_key),
        models=DEFAULT_MODELS | frozenset(args.model),
        queue_seconds=args.queue_seconds,
        round_seconds=args.round_seconds,
        jitter=args.jitter,
        time_scale=args.time_scale,
        win_probability=args.win_probability,
        seed=args.seed,
        expose_best_while_processing=not args.hide_best_while_processing,
        show_running_round=args.show_running_round,
        faults=tuple(faults),
        record_requests=False,
    )


async def serve(
    config: EmulatorConfig, *, stop: asyncio.Event | None = None, out: TextIO | None = None
) -> None:
    """Serve ``config`` until ``stop`` is set, or until SIGINT/SIGTERM when it is ``None``."""
    out = out if out is not None else sys.stdout
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # not on Windows' loops
                loop.add_signal_handler(signum, stop.set)
    async with Emulator(config) as emulator:
        print(f"serving on {emulator.base_url} (api key: {emulator.api_key})", file=out, flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.allow_remote and not is_loopback(args.host):
        parser.error(f"refusing to serve on {args.host!r}: pass --allow-remote to expose it")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
    return 0


if __name__ == "__main__":  # pragma: no cover - run by `python -m`, tested in a subprocess
    sys.exit(main())
