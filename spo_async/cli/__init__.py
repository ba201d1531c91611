"""The ``spo-async`` command line: ``optimize``, ``batch``, ``status``, ``wait``, ``emulator``.

Install it with ``pip install 'spo-async[cli]'``; it needs rich and PyYAML, which the
library itself does not. :func:`main` is the console script's entry point; without the
extra's packages it prints one line saying how to install them and exits with 2.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

__all__ = ["main"]

_NEEDS = ("rich", "yaml")
_USAGE = 2
_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``spo-async`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"spo-async: the command line needs {' and '.join(missing)}: "
            "pip install 'spo-async[cli]'",
            file=sys.stderr,
        )
        return _USAGE
    try:
        from ._app import run  # noqa: PLC0415 (needs the extra's packages)
    except KeyboardInterrupt:  # Ctrl-C while loading: nothing was sent yet
        print("spo-async: interrupted before anything was sent", file=sys.stderr, flush=True)
        return _INTERRUPTED
    return run(argv)
