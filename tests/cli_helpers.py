"""Run the ``spo-async`` command line in subprocesses, as a user would."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

#: The installed console script ``spo-async``, next to the interpreter running the tests.
_SCRIPT = Path(sys.executable).parent / "spo-async"
COMMAND: Sequence[str] = (str(_SCRIPT),)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


#: A cache folder of the test session's own, for the schedule's learnt round times.
_CACHE_HOME = tempfile.mkdtemp(prefix="spo-async-test-cache-")


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a run: no key, no colour hints from the outside, 100 columns."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AI302", "302AI", "NEXT_PUBLIC_302", "SPO_ASYNC"))
        and name not in {"NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS", "LINES"}
    }
    env["COLUMNS"] = "100"
    # The CLI keeps what it learns of round times in the user's cache: never the real one.
    env["XDG_CACHE_HOME"] = _CACHE_HOME
    # The console script's directory comes first, as in an activated virtualenv, so that
    # the resume commands the CLI prints run as printed.
    env["PATH"] = os.pathsep.join([str(_SCRIPT.parent), env.get("PATH", "")])
    env.update(extra or {})
    return env


def cli(*args: str) -> list[str]:
    """The argv that runs ``spo-async ARGS``."""
    return [*COMMAND, *args]


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 15.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``spo-async ARGS`` to the end, capturing stdout and stderr as text."""
    return subprocess.run(  # noqa: S603 - our own interpreter and arguments
        cli(*args),
        env=cli_env(env),
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def sigint_not_ignored() -> Iterator[None]:
    """Let a child started inside take Ctrl-C even when the test run itself ignores SIGINT.

    A shell starts a background job (``pytest ... &``, as CI scripts and loop runs do)
    with SIGINT ignored, and a child inherits that: a command line that relies on
    KeyboardInterrupt would then never hear the SIGINT a test sends it, and the test
    would wait out its timeout. The test run's own setting is put back after the fork.
    """
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_cli(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[str]:
    """Start ``spo-async ARGS`` in the background, stdout and stderr piped.

    The command line gets SIGINT's default action whatever the test run's, so that a
    test's Ctrl-C reaches it as it would a user's.
    """
    with sigint_not_ignored():
        return subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            cli(*args),
            env=cli_env(env),
            cwd=cwd or ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences."""
    return _ANSI.sub("", text)
