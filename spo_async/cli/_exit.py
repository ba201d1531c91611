"""The command line's exit codes, and which error ends a command with which code.

The codes are documented in ``spo-async --help`` (:data:`EPILOG`); scripts may rely on
them. A batch exits with the most serious code among its rows: interrupted, then
authentication, then failed.
"""

from __future__ import annotations

from typing import Final

from spo_async import (
    AuthenticationError,
    ConfigurationError,
    RequestValidationError,
    TaskFailedError,
    WaitTimeoutError,
)

__all__ = [
    "AUTH",
    "EPILOG",
    "ERROR",
    "FAILED",
    "INTERRUPTED",
    "OK",
    "TIMEOUT",
    "USAGE",
    "InputError",
    "exit_code_for",
]

#: Everything asked for succeeded.
OK: Final = 0
#: A task ended in ``fail`` (a batch: at least one row did not succeed).
FAILED: Final = 1
#: Bad arguments or input: a missing or malformed file, an invalid row, a missing extra.
USAGE: Final = 2
#: No API key, or the service refused the key (-10001, -10005, HTTP 401/403).
AUTH: Final = 3
#: The service or the network failed: an API error, a broken answer, no connection.
ERROR: Final = 4
#: The wait deadline (``--timeout``) passed; the task keeps running on the service.
TIMEOUT: Final = 5
#: Interrupted by Ctrl-C (128 + SIGINT); the task or batch can be resumed.
INTERRUPTED: Final = 130

EPILOG: Final = f"""\
exit codes:
  {OK:<3}  everything asked for succeeded
  {FAILED:<3}  a task ended in fail (batch: at least one row did not succeed)
  {USAGE:<3}  usage error: bad arguments, missing or invalid input file or row
  {AUTH:<3}  no API key, or the service refused it
  {ERROR:<3}  the service or the network failed (API error, bad answer, no connection)
  {TIMEOUT:<3}  --timeout passed before the task finished (it keeps running)
  {INTERRUPTED:<3}  interrupted by Ctrl-C (the command to resume is printed)

The API key comes from AI302_API_KEY (then 302AI_API_KEY, AI302_KEY,
NEXT_PUBLIC_302_API_KEY) or --api-key-file; the base URL from --base-url or
AI302_BASE_URL. --emulator needs neither: it runs an in-process emulator.
"""


class InputError(Exception):
    """Bad input from the user: printed as one line, exits with ``exit_code``."""

    def __init__(self, message: str, *, exit_code: int = USAGE) -> None:
        self.exit_code = exit_code
        super().__init__(message)


def exit_code_for(exc: BaseException) -> int:
    """The exit code a command ends with when ``exc`` escapes it."""
    if isinstance(exc, InputError):
        return exc.exit_code
    if isinstance(exc, RequestValidationError | ConfigurationError):
        return USAGE
    if isinstance(exc, AuthenticationError):
        return AUTH
    if isinstance(exc, TaskFailedError):
        return FAILED
    if isinstance(exc, WaitTimeoutError):
        return TIMEOUT
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    return ERROR
