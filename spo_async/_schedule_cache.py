"""The poll schedule's cache file: what one process learnt, for the next ones to start warm.

Why a module of its own. :class:`~spo_async.polling.AdaptiveSchedule` plans by what
it learnt; this file is how that outlives the process (a second ``spo-async
optimize`` starts warm). The file is shared by every process of the user, at once
(a fleet of workers, two terminals), and another program may write garbage where
it lies. So reading trusts nothing, and writing merges: each process adds the
samples it learnt since its last write to what the file holds *now*, under an
advisory lock, and replaces the file atomically. Two processes writing at once
keep both their samples; none ever sees a file half written.

The format (JSON, model names and durations only)::

    {"format": "spo-async schedule", "version": 1,
     "queue": [[lo, hi], ...],                     # seconds in queue, bounds
     "models": {"<model>": {"tasks": [[rounds, seconds], ...],   # start to end
                            "firsts": [[lo, hi], ...]}}}         # round 1's share
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

if sys.platform != "win32":
    import fcntl

__all__ = ["CacheFile", "Knowledge", "default_cache_path"]

log = logging.getLogger("spo_async")

#: What the file holds at most: models, samples of each kind per model, bytes.
MODELS, SAMPLES, MAX_BYTES = 64, 32, 256 * 1024
_FORMAT, _VERSION = "spo-async schedule", 1
#: Longest model name kept (a longer one is refused on reading, skipped on writing).
_NAME = 200

Pair = tuple[float, float]


def default_cache_path() -> Path:
    """Where ``persist=True`` keeps what was learnt: the user's cache folder.

    ``$XDG_CACHE_HOME/spo-async/schedule.json``, else ``~/.cache/spo-async/schedule.json``.
    """
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "spo-async" / "schedule.json"


@attrs.define
class Learnt:
    """One model's samples: finished tasks ``(rounds, seconds)`` and round 1's share bounds."""

    tasks: list[tuple[int, float]] = attrs.Factory(list)
    firsts: list[Pair] = attrs.Factory(list)


@attrs.define
class Knowledge:
    """What a cache file holds (or what a process adds to it): queue bounds and models.

    ``models`` keeps insertion order, the most recently learnt last: the oldest
    models are the ones dropped when the file is full.
    """

    queue: list[Pair] = attrs.Factory(list)
    models: dict[str, Learnt] = attrs.Factory(dict)

    def __bool__(self) -> bool:
        return bool(self.queue or self.models)

    def model(self, name: str) -> Learnt:
        """The entry for ``name``, made if new, moved to the end (the most recent)."""
        entry = self.models.pop(name, None) or Learnt()
        self.models[name] = entry
        return entry

    def add(self, other: Knowledge) -> None:
        """Append ``other``'s samples to these (the newest last), within the file's bounds."""
        self.queue = [*self.queue, *other.queue][-SAMPLES:]
        for name, learnt in other.models.items():
            entry = self.model(name)
            entry.tasks = [*entry.tasks, *learnt.tasks][-SAMPLES:]
            entry.firsts = [*entry.firsts, *learnt.firsts][-SAMPLES:]
        while len(self.models) > MODELS:
            del self.models[next(iter(self.models))]


@attrs.define
class CacheFile:
    """One cache file: read once at start, then merged into after each lesson."""

    path: Path

    def read(self) -> Knowledge:
        """What the file holds; nothing if it is missing, not ours or not sane (logged)."""
        try:
            with self.path.open("rb") as file:
                raw = file.read(MAX_BYTES + 1)
            return parse(raw)
        except FileNotFoundError:
            return Knowledge()
        except (OSError, ValueError, TypeError, RecursionError) as exc:
            # (RecursionError: JSON nested deeper than the parser goes, in a hostile file.)
            log.debug("poll schedule cache %s ignored: %s", self.path, exc)
            return Knowledge()

    def merge(self, fresh: Knowledge) -> bool:
        """Add ``fresh`` to what the file holds now and replace it; ``False`` if not written.

        Under an advisory lock on the folder, so that two processes merging at once
        both keep their samples. The lock is only tried: a process that finds it
        held (another one writing, or a stuck one) does not wait in the event loop,
        it keeps its samples for its next write.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked() as locked:
                if locked:
                    body = self.read()
                    body.add(fresh)
                    self._replace(render(body))
        except OSError as exc:  # a cache that cannot be written costs looks, not the wait
            log.debug("poll schedule cache %s not written: %s", self.path, exc)
            return False
        return locked

    @contextlib.contextmanager
    def _locked(self) -> Iterator[bool]:
        if sys.platform == "win32":  # pragma: no cover - no advisory lock; the replace is atomic
            yield True
            return
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _replace(self, text: str) -> None:
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".schedule-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise


def render(knowledge: Knowledge) -> str:
    """The file's text, its least recently taught models dropped should it outgrow a reader."""
    models = {
        name: {"tasks": m.tasks, "firsts": m.firsts}
        for name, m in list(knowledge.models.items())[-MODELS:]
        if len(name) <= _NAME
    }
    while True:
        body = {"format": _FORMAT, "version": _VERSION, "queue": knowledge.queue}
        text = json.dumps({**body, "models": models}, separators=(",", ":"))
        if len(text.encode()) <= MAX_BYTES or not models:
            return text
        del models[next(iter(models))]  # too big for a reader to take: drop the oldest


def parse(raw: bytes) -> Knowledge:
    """The knowledge in a cache file's bytes; raises if it is not one.

    Every value is checked: a file written by another program, an older format or
    a half-written one is refused whole, and out-of-range numbers are dropped.
    """
    if len(raw) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES} bytes")
    body = json.loads(raw)
    if not isinstance(body, dict) or body.get("format") != _FORMAT:
        raise TypeError("not a spo-async schedule cache")
    if body.get("version") != _VERSION:
        raise ValueError(f"unknown version {body.get('version')!r}")
    models = body.get("models", {})
    if not isinstance(models, dict):
        raise TypeError("models is not an object")
    out = Knowledge(queue=_pairs(body.get("queue", []), 1e7, ordered=True))
    for name, entry in list(models.items())[-MODELS:]:
        if not isinstance(entry, dict) or len(name) > _NAME:
            raise TypeError(f"bad entry for model {name[:50]!r}")
        tasks = _pairs(entry.get("tasks", []), 1e7)
        out.models[name] = Learnt(
            tasks=[(int(n), t) for n, t in tasks if 1 <= n <= 1000 and n == round(n) and t > 0],
            firsts=_pairs(entry.get("firsts", []), 10, ordered=True),
        )
    return out


def _pairs(values: Any, bound: float, *, ordered: bool = False) -> list[Pair]:
    """The sane ``[a, b]`` pairs of numbers in ``[0, bound)`` (``a <= b`` if ``ordered``)."""
    if not isinstance(values, list):
        raise TypeError("expected a list of pairs")
    pairs = [
        (float(v[0]), float(v[1]))
        for v in values
        if isinstance(v, list)
        and len(v) == 2
        and all(_number(x) and 0 <= x < bound for x in v)
        and (not ordered or v[0] <= v[1])
    ]
    return pairs[-SAMPLES:]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
