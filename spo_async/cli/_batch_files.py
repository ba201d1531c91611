"""The files of a batch: the checks before anything is sent, and the output file.

Every path is checked before the first request, because a batch that fails later has
already started (and is paying for) tasks:

* ``-o`` must not name the input file or the journal, nor the same file under another
  name (a symbolic or hard link): an existing file is compared by device and inode,
  a missing one by its resolved path. Writing the outcomes over the input would
  destroy it on the first outcome.
* ``--journal`` with ``--emulator`` is refused: the in-process emulator's tasks end
  with the command, so a journal would only let a rerun try to resume tasks that no
  longer exist.
* Directories must exist, and the output must be writable.

The output file is opened (and truncated) only when the first outcome arrives, so that
a run refused before any outcome (another batch's journal, a bad key) leaves an
earlier run's output as it was. A write that fails (a full disk) raises
:class:`OutputError`, which ends the batch with exit code 4.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path
from typing import IO, Any

from ._exit import ERROR, InputError
from ._safe import is_database

__all__ = ["OutputError", "Sink", "check_paths"]


class OutputError(InputError):
    """An outcome could not be written to the output file; the batch stops (exit 4)."""

    def __init__(self, path: Path, exc: OSError) -> None:
        super().__init__(f"cannot write {path}: {exc.strerror or exc}", exit_code=ERROR)


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name the same file, through links too."""
    try:
        first, second = a.stat(), b.stat()
    except OSError:
        return a.resolve() == b.resolve()
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def _check_place(path: Path, what: str) -> None:
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file ({what})")
    if not path.parent.is_dir():
        raise InputError(f"{path}: no such directory: {path.parent} ({what})")


def check_paths(args: argparse.Namespace) -> None:
    """Refuse, before anything is sent, the files a batch could not use safely."""
    source, output = Path(args.input), Path(args.output)
    shared = is_database(args.journal)  # a database, not a file: nothing to check here
    journal = Path(args.journal) if args.journal is not None and not shared else None
    if args.journal is not None and args.emulator:
        raise InputError(
            "--journal cannot be used with --emulator: the in-process emulator's tasks end "
            "with this command, so a rerun could only try to resume tasks that no longer "
            "exist. Drop --journal, or serve a lasting emulator with 'spo-async emulator' "
            "and point --base-url at it"
        )
    if same_file(output, source):
        raise InputError(f"-o {output} is the input file: the outcomes would overwrite it")
    if journal is not None:
        if same_file(output, journal):
            raise InputError(f"-o {output} is the journal: pick another file for the outcomes")
        if same_file(journal, source):
            raise InputError(f"--journal {journal} is the input file: pick another journal")
        _check_place(journal, "--journal")
    _check_place(output, "-o")
    target = output if output.exists() else output.parent
    if not os.access(target, os.W_OK):
        raise InputError(f"{output}: not writable")


class Sink:
    """The output file, opened (and truncated) only when the first outcome arrives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def write(self, record: dict[str, Any]) -> None:
        """Write one outcome line, flushed; :class:`OutputError` if it cannot be written."""
        try:
            if self._file is None:
                self._file = self.path.open("w", encoding="utf-8")
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._file.flush()
        except OSError as exc:
            raise OutputError(self.path, exc) from None

    def close(self) -> None:
        """Close the file; a failure to flush its last bytes is not reported twice."""
        if self._file is not None:
            file, self._file = self._file, None
            with contextlib.suppress(OSError):
                file.close()
