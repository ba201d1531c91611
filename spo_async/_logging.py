"""The ``spo_async`` logger, and ``SPO_ASYNC_LOG`` to turn it on without code.

The SDK logs through the standard library only: one DEBUG line per HTTP
attempt, one INFO line per retry with its reason and wait, WARNING for answers
it does not believe. It never logs the API key, request bodies or headers.

Log lines quote what the service said (an error message, a status, a task id),
and the service's text may hold CR/LF (a forged second log line), ESC sequences
or bidi overrides (a terminal that shows something else than the file holds).
:class:`EscapingFilter`, attached to the logger on import, escapes those
characters in every record: in the message, in string attributes passed with
``extra=``, and in the text of an attached exception.

Setting ``SPO_ASYNC_LOG=debug`` (or ``info``, ``warning``) in the environment
attaches a stderr handler at that level when the package is imported, for the
times when editing the program's logging setup is not an option.
"""

from __future__ import annotations

import logging
import os
import traceback
from typing import Final

from ._redact import printable

__all__ = ["ENV_VAR", "LOGGER_NAME", "EscapingFilter", "configure_from_env", "logger"]

LOGGER_NAME = "spo_async"
ENV_VAR = "SPO_ASYNC_LOG"
logger = logging.getLogger(LOGGER_NAME)

#: Attributes every LogRecord has: anything else came in through ``extra=``.
_STANDARD_ATTRIBUTES: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def _exception_text(exc_info: tuple[type[BaseException], BaseException, object]) -> str:
    """A traceback as ``logging.Formatter`` shows it, with the exceptions' texts escaped.

    The stack lines are the SDK's and Python's own; an exception's message and notes
    may quote the service, so every control character in them is escaped, newlines
    included. Other lines keep their newlines and lose every other control character.
    """
    exc_type, exc, tb = exc_info
    shown = traceback.TracebackException(exc_type, exc, tb)  # type: ignore[arg-type]
    own: set[str] = set()
    pending = [shown]
    while pending:
        item = pending.pop()
        own.update(item.format_exception_only())
        pending += [e for e in (item.__cause__, item.__context__) if e is not None]
        pending += getattr(item, "exceptions", None) or []
    parts = [
        printable(chunk[:-1]) + "\n"
        if chunk in own and chunk.endswith("\n")
        else printable(chunk, multiline=True)
        for chunk in shown.format()
    ]
    return "".join(parts).removesuffix("\n")


class EscapingFilter(logging.Filter):
    """Escapes control and invisible characters in every record of the SDK's logger.

    The record's template and arguments are kept as they are when the message is
    clean (so that tools grouping records by template keep working); a message
    that needed escaping is stored already formatted.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Escape the record in place; never drop it."""
        message = record.getMessage()
        safe = printable(message)
        if safe is not message:
            record.msg, record.args = safe, None
        for name, value in list(vars(record).items()):
            if isinstance(value, str) and name not in _STANDARD_ATTRIBUTES:
                setattr(record, name, printable(value))
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = _exception_text(record.exc_info)
        return True


def _install_filter() -> None:
    if not any(isinstance(f, EscapingFilter) for f in logger.filters):
        logger.addFilter(EscapingFilter())


_install_filter()

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_HANDLER_MARK = "_spo_async_env_handler"


def configure_from_env(environ: dict[str, str] | None = None) -> bool:
    """Attach a stderr handler if ``SPO_ASYNC_LOG`` names a level; return whether it did.

    Calling it twice does not attach a second handler.
    """
    value = (environ if environ is not None else dict(os.environ)).get(ENV_VAR, "")
    level = _LEVELS.get(value.strip().lower())
    if level is None:
        return False
    if not any(getattr(h, _HANDLER_MARK, False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        setattr(handler, _HANDLER_MARK, True)
        logger.addHandler(handler)
    logger.setLevel(level)
    return True
