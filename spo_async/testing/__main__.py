"""Serve the SPO emulator from the command line: ``python -m spo_async.testing``.

Useful to try a client, a notebook or another language's SDK against a local, fast and
scriptable stand-in for 302.AI: it prints ``serving on <url> (api key: <key>)`` (or,
with ``--json``, one JSON object with the address) and serves until Ctrl-C or SIGTERM;
``--verbose`` logs every request on stderr. ``spo-async emulator`` is the same command:
it reuses :func:`add_arguments` (or :func:`build_parser`), :func:`config_from_args` and
:func:`serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

from spo_async._sansio import is_loopback
from spo_async.testing._config import DEFAULT_API_KEY, EmulatorConfig
from spo_async.testing._emulator import Emulator
from spo_async.testing._faults import Fault, FaultKind
from spo_async.testing._log import log_to_stream

__all__ = ["DESCRIPTION", "add_arguments", "build_parser", "config_from_args", "main", "serve"]

DESCRIPTION = (
    "Serve a local emulator of 302.AI's SPO API (submit and task query) until Ctrl-C or "
    "SIGTERM. It prints 'serving on <url> (api key: <key>)', or with --json one JSON "
    "object: point a client at that URL with that key."
)
"""What the command does, for the ``description`` of a parser that embeds it."""

_DEFAULT_PORT = 8302


def _model_list(text: str) -> list[str]:
    """Parse ``--models a,b``: comma-separated model ids, blanks ignored."""
    models = [model.strip() for model in text.split(",") if model.strip()]
    if not models:
        raise argparse.ArgumentTypeError(f"expected comma-separated model ids, got {text!r}")
    return models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options, each with its help and default, to ``parser``.

    Any parser will do: :func:`build_parser`'s own, or a sub-command of another command
    line (``spo-async emulator``), whatever its class and help formatter, since every
    help text states its default itself.
    """
    defaults = EmulatorConfig()
    server = parser.add_argument_group("server")
    add = server.add_argument
    add(
        "--host",
        default="127.0.0.1",
        help="address to listen on; only a loopback one unless --allow-remote "
        "(default: %(default)s)",
    )
    add(
        "--port",
        type=int,
        default=_DEFAULT_PORT,
        help="port to listen on; 0 picks a free one (default: %(default)s)",
    )
    add(
        "--allow-remote",
        action="store_true",
        help="allow listening on an address other machines can reach (default: off)",
    )

    accounts = parser.add_argument_group("keys and models")
    add = accounts.add_argument
    add(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help=f"an API key to accept, repeatable (default: {DEFAULT_API_KEY})",
    )
    add(
        "--broke-key",
        action="append",
        default=[],
        metavar="KEY",
        help="an API key that authenticates but has no balance: its submits get -10004; "
        "repeatable (default: none)",
    )
    add(
        "--models",
        action="append",
        type=_model_list,
        metavar="ID,ID",
        help="accept only these model ids, comma-separated, repeatable; any other gets "
        "-10008 'no channel' with HTTP 503, as the service answers an unknown model "
        "(default: any model)",
    )

    pace = parser.add_argument_group("tasks")
    add = pace.add_argument
    add(
        "--queue-seconds",
        type=float,
        default=defaults.queue_seconds,
        metavar="S",
        help="time each task spends in 'queue' (default: %(default)s)",
    )
    add(
        "--round-seconds",
        type=float,
        default=defaults.round_seconds,
        metavar="S",
        help="duration of a round; round 1 takes a third of it (default: %(default)s)",
    )
    add(
        "--jitter",
        type=float,
        default=defaults.jitter,
        metavar="J",
        help="relative spread of every duration, 0.3 = ±30%% (default: %(default)s)",
    )
    add(
        "--time-scale",
        type=float,
        default=defaults.time_scale,
        metavar="X",
        help="multiply every duration by X (default: %(default)s)",
    )
    add(
        "--win-probability",
        type=float,
        default=defaults.win_probability,
        metavar="P",
        help="chance that one of a round's four judges prefers it; 3 votes of 4 make the "
        "round a success (default: %(default)s)",
    )
    add(
        "--seed",
        type=int,
        default=defaults.seed,
        metavar="N",
        help="seed of every task's prompts, answers, votes and durations, and of the "
        "fault draws (default: %(default)s)",
    )
    add(
        "--task-id-nonce",
        metavar="TEXT",
        help="mix TEXT into task ids, so that one seed and nonce give the same ids on "
        "every run (default: random, so ids never repeat across runs)",
    )
    add(
        "--hide-best-while-processing",
        action="store_true",
        help="report best_prompt/best_round only once the task ends (default: off)",
    )
    add(
        "--show-running-round",
        action="store_true",
        help="also report the running round, with an empty sample list (default: off)",
    )

    faults = parser.add_argument_group("faults")
    add = faults.add_argument
    add(
        "--fault-rate-429",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of a 429 with Retry-After on any request (default: %(default)s)",
    )
    add(
        "--retry-after",
        default="1",
        metavar="SECONDS",
        help="Retry-After value of those 429s (default: %(default)s)",
    )
    add(
        "--fault-rate-5xx",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of a gateway's HTML 502 page on a task query (default: %(default)s)",
    )
    add(
        "--fault-rate-drop",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of a connection dropped unanswered on a task query "
        "(default: %(default)s)",
    )

    output = parser.add_argument_group("output")
    add = output.add_argument
    add(
        "--json",
        action="store_true",
        help="once serving, print one JSON object on stdout instead of the text line: "
        "base_url, host, port, pid, api_key (null when --api-key chose the keys) and "
        "models (null: any) (default: off)",
    )
    add(
        "-v",
        "--verbose",
        action="store_true",
        help="log one line per request on stderr: method, path, status, time taken, task "
        "id, fault injected, and whether a key came (never the key) (default: off)",
    )


def build_parser(
    prog: str = "python -m spo_async.testing", *, add_help: bool = True
) -> argparse.ArgumentParser:
    """Return the emulator's argument parser.

    ``spo-async emulator`` may use it as a parent (``add_help=False`` then lets the child
    keep its own ``-h``) or call :func:`add_arguments` on its sub-command's parser.
    """
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, add_help=add_help)
    add_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Turn parsed command-line arguments into an :class:`EmulatorConfig`.

    Raises ``ValueError`` for settings that cannot work, and for a host other
    than this machine without ``--allow-remote`` (the emulator accepts a fixed,
    published key).
    """
    if not args.allow_remote and not is_loopback(args.host):
        raise ValueError(f"refusing to serve on {args.host!r}: pass --allow-remote to expose it")
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
    models = None if not args.models else frozenset(m for group in args.models for m in group)
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        api_keys=frozenset(args.api_keys or [DEFAULT_API_KEY]),
        insufficient_balance_keys=frozenset(args.broke_key),
        models=models,
        queue_seconds=args.queue_seconds,
        round_seconds=args.round_seconds,
        jitter=args.jitter,
        time_scale=args.time_scale,
        win_probability=args.win_probability,
        seed=args.seed,
        task_id_nonce=args.task_id_nonce,
        expose_best_while_processing=not args.hide_best_while_processing,
        show_running_round=args.show_running_round,
        faults=tuple(faults),
        record_requests=False,
        log_requests=args.verbose,
    )


def _announcement(emulator: Emulator) -> dict[str, Any]:
    """What ``--json`` prints once the emulator listens: where it is, and how to call it.

    The key is shown only when it is the emulator's public default: a key passed with
    ``--api-key`` might be a real one, and stdout often ends up in a CI log.
    """
    config = emulator.config
    address = urlsplit(emulator.base_url)
    return {
        "base_url": emulator.base_url,
        "host": address.hostname,
        "port": address.port,
        "pid": os.getpid(),
        "api_key": DEFAULT_API_KEY if DEFAULT_API_KEY in config.api_keys else None,
        "models": None if config.models is None else sorted(config.models),
    }


async def serve(
    config: EmulatorConfig,
    *,
    stop: asyncio.Event | None = None,
    out: TextIO | None = None,
    as_json: bool = False,
) -> None:
    """Serve ``config`` until ``stop`` is set, or until SIGINT/SIGTERM when it is ``None``.

    Once listening it prints one line on ``out`` (stdout): ``serving on <url> (api key:
    <key>)``, or with ``as_json`` one JSON object (see :func:`_announcement`). When
    ``config.log_requests`` is on, the request log goes to stderr unless logging is
    configured already.
    """
    out = out if out is not None else sys.stdout
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # not on Windows' loops
                loop.add_signal_handler(signum, stop.set)
    logging_on = log_to_stream() if config.log_requests else contextlib.nullcontext()
    with logging_on:
        async with Emulator(config) as emulator:
            facts = _announcement(emulator)
            if as_json:
                line = json.dumps(facts)
            else:
                key = facts["api_key"] or "the one given with --api-key"
                line = f"serving on {emulator.base_url} (api key: {key})"
            print(line, file=out, flush=True)
            await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(config, as_json=args.json))
    except OSError as exc:  # the port is taken, the address is not ours
        parser.exit(1, f"{parser.prog}: cannot listen on {args.host}:{args.port}: {exc}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover - run by `python -m`, tested in a subprocess
    sys.exit(main())
