"""The ``spo_async`` logger, and ``SPO_ASYNC_LOG`` to turn it on without code.

The SDK logs through the standard library only: one DEBUG line per HTTP
attempt, one INFO line per retry with its reason and wait, WARNING for answers
it does not believe. It never logs the API key, request bodies or headers.

Setting ``SPO_ASYNC_LOG=debug`` (or ``info``, ``warning``) in the environment
attaches a stderr handler at that level when the package is imported, for the
times when editing the program's logging setup is not an option.
"""

from __future__ import annotations

import logging
import os

__all__ = ["ENV_VAR", "LOGGER_NAME", "configure_from_env", "logger"]

LOGGER_NAME = "spo_async"
ENV_VAR = "SPO_ASYNC_LOG"
logger = logging.getLogger(LOGGER_NAME)

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
