"""The emulator's request log: one line per request, for debugging a client against it.

Off by default (``EmulatorConfig(log_requests=True)`` or ``--verbose`` turns it on):
benchmarks send hundreds of thousands of requests, and the handlers stay cheap when
nobody reads. A line reads::

    POST /302/prompt/spo/submit -> 200 in 0.8 ms task=spo-3f2a model='gpt-4o' language='en'
        auth=Bearer <redacted>
    GET /302/prompt/spo/tasks/spo-3f2a -> dropped in 0.1 ms task=spo-3f2a fault=drop_before
        auth=missing

(each on one line; a real id is 36 characters).

Everything in it that a client chose (the path, a model id, an error detail) is
escaped and shortened, so a hostile request cannot forge or flood log lines; the
``Authorization`` header shows only its scheme, never the key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TextIO

from aiohttp import web

from spo_async.testing._faults import Fault, Reply

__all__ = ["LOGGER_NAME", "log_exchange", "log_to_stream", "logger", "unrouted_logger"]

LOGGER_NAME = "spo_async.testing"
logger = logging.getLogger(LOGGER_NAME)

_MAX_FIELD = 120


def _clean(text: str, limit: int = _MAX_FIELD) -> str:
    """Return ``text`` with unprintable characters escaped, cut to ``limit`` characters."""
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _quoted(text: str) -> str:
    """Return ``text`` shortened and quoted, with unprintable characters escaped."""
    return repr(text if len(text) <= _MAX_FIELD else text[:_MAX_FIELD] + "...")


def _auth(header: str | None) -> str:
    """Describe an ``Authorization`` header without its secret."""
    if header is None:
        return "missing"
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return "Bearer <redacted>"
    if not header.strip():
        return "empty"
    return "<redacted> (not a Bearer key)"


def _detail(reply: Reply) -> str | None:
    """Return the message of an error reply's 302 envelope, if it has one."""
    if reply.status < 400 or not reply.body.startswith(b"{"):
        return None
    try:
        error = json.loads(reply.body).get("error")
    except (ValueError, AttributeError):
        return None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else None


def log_exchange(
    request: web.BaseRequest,
    started: float,
    *,
    reply: Reply | None,
    fault: Fault | None,
    task_id: str | None,
    body: Any = None,
) -> None:
    """Log one answered (or dropped) request: the line ``--verbose`` prints."""
    elapsed_ms = (time.perf_counter() - started) * 1000
    status = "dropped" if reply is None else str(reply.status)
    path = _clean(request.raw_path)
    parts = [f"{_clean(request.method)} {path} -> {status} in {elapsed_ms:.1f} ms"]
    if task_id is not None:
        parts.append(f"task={_clean(task_id)}")
    if isinstance(body, dict):
        for key in ("model", "language"):
            value = body.get(key)
            if isinstance(value, str):
                parts.append(f"{key}={_quoted(value)}")
    if fault is not None:
        parts.append(f"fault={fault.kind.value}")
    parts.append(f"auth={_auth(request.headers.get('Authorization'))}")
    detail = None if reply is None or fault is not None else _detail(reply)
    if detail is not None:
        parts.append(f"error={_quoted(detail)}")
    logger.info(" ".join(parts))


@web.middleware
async def unrouted_logger(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Log the requests no endpoint serves (a wrong path or method); pass the rest on.

    A client with a wrong base URL only ever gets 404s, and seeing them is most of the
    diagnosis. The two endpoints log their own requests, with more to say.
    """
    if request.match_info.http_exception is None:
        return await handler(request)
    started = time.perf_counter()
    try:
        return await handler(request)
    except web.HTTPException as exc:
        elapsed_ms = (time.perf_counter() - started) * 1000
        logger.info(
            "%s %s -> %d in %.1f ms (no such endpoint) auth=%s",
            _clean(request.method),
            _clean(request.raw_path),
            exc.status,
            elapsed_ms,
            _auth(request.headers.get("Authorization")),
        )
        raise


@contextlib.contextmanager
def log_to_stream(stream: TextIO | None = None) -> Iterator[None]:
    """Show the request log on ``stream`` (stderr) while the block runs, for ``--verbose``.

    The logger is lowered to INFO; a handler is added only when logging is not set up
    already (``SPO_ASYNC_LOG``, the program's own configuration), so no line is printed
    twice. Both are undone on exit.
    """
    level = logger.level
    handler: logging.Handler | None = None
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    if not logger.hasHandlers():
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
    try:
        yield
    finally:
        if handler is not None:
            logger.removeHandler(handler)
        logger.setLevel(level)
