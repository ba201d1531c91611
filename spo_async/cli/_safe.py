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
from typing import Final

from spo_async._store_uri import SCHEMES, display_uri

__all__ = [
    "is_database",
    "printable",
    "short_id",
    "shorten",
    "shown_argument",
    "without_password",
    "without_passwords",
]

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


#: How a ``--journal`` or ``--limiter`` value names a database rather than a file (in
#: any case: schemes are case-insensitive).
DATABASE_SCHEMES: Final = tuple(f"{scheme}://" for scheme in SCHEMES)

#: A URI inside a command-line argument (``--journal=postgresql://...``): the rest of it.
_URI_IN_ARGUMENT: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://.*", re.DOTALL)
#: A URI inside a message (``ambiguous option: --j=redis://...``): up to the next space.
_URI_IN_TEXT: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S*")


def is_database(value: str | None) -> bool:
    """Whether ``value`` is a database URI (a shared journal or budget), not a file."""
    return value is not None and value.lower().startswith(DATABASE_SCHEMES)


def without_password(uri: str) -> str:
    """``uri`` with its password taken out (address and query), for what is printed.

    A resume command printed so still works where the password comes from elsewhere
    (``PGPASSWORD``, ``~/.pgpass``). A URI that cannot be taken apart with certainty
    (a password with an unencoded ``/``, say) is shown as ``<a malformed URI>``: the
    library's own :func:`~spo_async._store_uri.display_uri`.
    """
    return display_uri(uri)


def shown_argument(argument: str) -> str:
    """A command-line argument as it may be printed: any URI in it without its password.

    Every form a URI takes on a command line: its own token (``--journal URI``),
    after an option (``--journal=URI``, or an abbreviation argparse accepts, such as
    ``--jour=URI``), in any case (``POSTGRESQL://``), of any scheme (``--base-url``).
    """
    return _URI_IN_ARGUMENT.sub(lambda match: without_password(match.group()), argument, 1)


def without_passwords(text: str) -> str:
    """``text`` (an argparse message quoting arguments) with every URI's password taken out."""
    return _URI_IN_TEXT.sub(lambda match: without_password(match.group()), text)
