"""Read what to optimize: one MetaGPT SPO settings file, or a JSON Lines batch.

A settings file is MetaGPT's ``settings/*.yaml`` shape (``prompt``, ``requirements``,
``count``, ``qa: [{question, answer}]``), in YAML or JSON. It may also set ``model``,
``max_rounds``, ``language`` and ``temperature``; a flag given on the command line wins
over the file, and the file over the defaults. The defaults are the library's own
(:class:`~spo_async.OptimizationRequest`'s), except ``model``, which the library
requires and the command line defaults to :data:`DEFAULT_MODEL`. ``count`` (upstream's
word limit) has no 302.AI field: it is dropped, with a warning when it is set to anything
but ``None``.

A batch file holds one JSON object per line with the same keys plus an optional ``id``
(the row's key; the line number when absent). Every row is checked before anything is
submitted, and the first bad one is reported with its line number.

YAML is read with PyYAML's safe loader, except that only ``true``/``false`` are booleans
(YAML 1.2): MetaGPT's files write ``Yes``/``No`` answers and ``None`` as plain text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import yaml

from spo_async import OptimizationRequest, RequestValidationError

from ._exit import InputError

__all__ = [
    "DEFAULT_MODEL",
    "BatchRow",
    "Overrides",
    "language_origin",
    "load_batch",
    "load_settings",
]

#: The model of a request that names none: the one 302.AI's documentation uses.
DEFAULT_MODEL: Final = "claude-3-5-sonnet-20240620"

_SETTINGS_KEYS: Final = frozenset(
    {"prompt", "requirements", "count", "qa", "model", "max_rounds", "language", "temperature"}
)
_BATCH_KEYS: Final = _SETTINGS_KEYS | {"id"}

Warn = Callable[[str], None]


@attrs.frozen(kw_only=True)
class Overrides:
    """Request fields given as flags; ``None`` means "not given on the command line"."""

    model: str | None = None
    max_rounds: int | None = None
    language: str | None = None
    temperature: float | None = None


@attrs.frozen
class BatchRow:
    """One valid input line of a batch: its key, its request and where it came from."""

    key: str
    request: OptimizationRequest
    line: int
    #: Whether the language was detected from the text (neither the flag nor the row set it).
    detected: bool = False


def language_origin(overrides: Overrides, data: object) -> str:
    """Where a request's language came from: the flag, the file, or the text's script."""
    if overrides.language is not None:
        return "from --language"
    if isinstance(data, Mapping) and data.get("language") is not None:
        return "from the file"
    return "detected from the text; --language sets another"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans: ``Yes``, ``No``, ``on`` stay text."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _read(path: Path) -> str:
    """The file's text, or an :class:`InputError` saying why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _parse_json(text: str, where: str, *, one_line: bool = False) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"column {exc.colno}" if one_line else f"line {exc.lineno}, column {exc.colno}"
        raise InputError(f"{where}: invalid JSON at {at}: {exc.msg}") from None


def _parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a subclass of SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise InputError(f"{where}: invalid YAML{at}: {problem}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{where}: invalid YAML: {exc}") from None


def _text(value: object, field: str, *, none_as_empty: bool = False) -> str:
    """A text field, stripped (YAML's ``|`` blocks end in a newline).

    An integer is taken as its digits, and ``None`` may mean empty.
    """
    if value is None and none_as_empty:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    kind = "nothing" if value is None else type(value).__name__
    raise InputError(f"{field}: expected text, got {kind} (quote it)")


def _qa(value: object) -> list[dict[str, str]]:
    if not isinstance(value, list):
        kind = "nothing" if value is None else type(value).__name__
        raise InputError(f"qa: expected a list of {{question, answer}} items, got {kind}")
    pairs = []
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise InputError(f"qa[{index}]: expected {{question, answer}}, got {item!r:.40}")
        if "question" not in item:
            raise InputError(f"qa[{index}]: missing 'question'")
        question = _text(item["question"], f"qa[{index}].question")
        answer = _text(item.get("answer"), f"qa[{index}].answer", none_as_empty=True)
        pairs.append({"question": question, "answer": answer})
    return pairs


def _build(data: object, allowed: frozenset[str], overrides: Overrides) -> OptimizationRequest:
    """Check one settings mapping and turn it into a request (errors name the field)."""
    if not isinstance(data, Mapping):
        kind = "nothing" if data is None else type(data).__name__
        raise InputError(f"expected a mapping with 'prompt' and 'qa', got {kind}")
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise InputError(f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    for required in ("prompt", "qa"):
        if required not in data:
            raise InputError(f"missing '{required}'")
    requirements = data.get("requirements")
    fields: dict[str, Any] = {
        "prompt": _text(data["prompt"], "prompt"),
        "qa": _qa(data["qa"]),
        "requirements": None if requirements is None else _text(requirements, "requirements"),
        "model": DEFAULT_MODEL,
    }
    # Only what the flags or the file say: the request's own defaults fill the rest.
    for key in ("model", "max_rounds", "language", "temperature"):
        flag = getattr(overrides, key)
        value = flag if flag is not None else data.get(key)
        if value is not None:
            fields[key] = value
    try:
        return OptimizationRequest(**fields)
    except RequestValidationError as exc:
        raise InputError(str(exc)) from None


def _count_is_set(data: object) -> bool:
    """Whether ``data`` sets upstream's word limit to something that would have an effect."""
    if not isinstance(data, Mapping) or "count" not in data:
        return False
    count = data["count"]
    return not (count is None or (isinstance(count, str) and count.strip() in {"", "None"}))


_COUNT_WARNING: Final = "'count' (a word limit) has no 302.AI API field; it is ignored"


def load_settings(path: Path, overrides: Overrides, warn: Warn) -> tuple[OptimizationRequest, str]:
    """Read one settings file (YAML, or JSON when it ends in ``.json``) into a request.

    Returns the request and where its language came from (:func:`language_origin`).
    """
    text = _read(path)
    where = str(path)
    is_json = path.suffix.lower() == ".json"
    data = _parse_json(text, where) if is_json else _parse_yaml(text, where)
    try:
        request = _build(data, _SETTINGS_KEYS, overrides)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    if _count_is_set(data):
        warn(f"{where}: {_COUNT_WARNING}")
    return request, language_origin(overrides, data)


def load_batch(path: Path, overrides: Overrides, warn: Warn) -> list[BatchRow]:
    """Read and check every line of a JSON Lines batch; the first bad line raises."""
    rows: list[BatchRow] = []
    seen: dict[str, int] = {}
    counted = False
    for number, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        data = _parse_json(line, where, one_line=True)
        try:
            request = _build(data, _BATCH_KEYS, overrides)
            key = _key(data, number)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        if key in seen:
            raise InputError(f"{where}: duplicate id {key!r} (first on line {seen[key]})")
        seen[key] = number
        counted = counted or _count_is_set(data)
        detected = language_origin(overrides, data).startswith("detected")
        rows.append(BatchRow(key, request, number, detected))
    if not rows:
        raise InputError(f"{path}: no rows (one JSON object per line expected)")
    if counted:
        warn(f"{path}: {_COUNT_WARNING}")
    return rows


def _key(data: Mapping[Any, Any], line: int) -> str:
    """The row's key: its ``id`` column, else its line number."""
    if "id" not in data or data["id"] is None:
        return str(line)
    value = data["id"]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InputError(f"id: expected text or an integer, got {type(value).__name__}")
    key = str(value)
    if not key.strip():
        raise InputError("id: must not be empty")
    return key
