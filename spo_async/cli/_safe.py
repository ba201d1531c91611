r"""Text from the service, made safe to show on a terminal, and ids shortened for prose.

Anything the service sends (prompts, answers, task ids, error messages) may hold
terminal control sequences: an OSC sequence can retitle the window or write the
clipboard, a CSI one can clear the screen, and bidirectional overrides can make text
read differently from what it is. :func:`printable` shows every such character as a
visible escape (``\x1b``, ``\u202e``) instead. It is for what a person reads: the
``--json`` output keeps the text exact (``json.dumps`` escapes controls anyway).

The library is getting the same function (``spo_async._redact.printable``); this one is
kept private to the command line until then, and can be pointed at it.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Final

__all__ = ["is_database", "printable", "short_id", "shorten", "without_password"]

#: C0 controls (but tab and newline, which may be kept), DEL, C1 controls, and the
#: Unicode characters that reorder or hide text: bidi embeddings, overrides and
#: isolates, the directional marks, and the line and paragraph separators.
_UNSAFE: Final = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_UNSAFE_MULTILINE: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)

#: Ids longer than this are shortened in messages (302.AI's ids are about 36 characters).
ID_LIMIT: Final = 64


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, multiline: bool = False) -> str:
    """``text`` with every control and text-reordering character shown as an escape.

    Tabs are kept; newlines too when ``multiline`` is true (a prompt shown as a
    block), else they are escaped (a value shown on one line).
    """
    pattern = _UNSAFE_MULTILINE if multiline else _UNSAFE
    return pattern.sub(_escape, text)


def shorten(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def short_id(task_id: str) -> str:
    """A task id fit for a sentence: printable, and its middle elided when it is long."""
    if len(task_id) <= ID_LIMIT:
        return printable(task_id)
    head, tail = task_id[:24], task_id[-8:]
    return printable(f"{head}…{tail}") + f" ({len(task_id)} characters)"


#: How a ``--journal`` or ``--limiter`` value names a database rather than a file.
DATABASE_SCHEMES: Final = ("postgresql://", "postgres://", "redis://", "rediss://", "valkey://")
_SECRET_PARAMS: Final = frozenset({"password", "sslpassword"})


def is_database(value: str | None) -> bool:
    """Whether ``value`` is a database URI (a shared journal or budget), not a file."""
    return value is not None and value.lower().startswith(DATABASE_SCHEMES)


def without_password(uri: str) -> str:
    """``uri`` with its password taken out (address and query), for what is printed.

    A resume command printed so still works where the password comes from elsewhere
    (``PGPASSWORD``, ``~/.pgpass``).
    """
    try:
        parts = urllib.parse.urlsplit(uri)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return "<a malformed URI>"
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}@" if parts.username else ""
    kept = urllib.parse.urlencode([(k, v) for k, v in query if k.lower() not in _SECRET_PARAMS])
    return urllib.parse.urlunsplit((parts.scheme, user + netloc, parts.path, kept, ""))
