"""The command line's exit codes, and which error ends a command with which code.

The codes are documented in ``spo-async --help`` (:data:`EPILOG`) and in the reference
page; scripts may rely on them. A batch exits with the code of its most serious row
(:func:`batch_exit_code`): the service refused (3), then the service or the network
failed (4), then a timeout (5), then a failed task (1).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from spo_async import (
    AuthenticationError,
    ConfigurationError,
    InsufficientBalanceError,
    InvalidRequestError,
    JournalError,
    NotFoundError,
    QuotaExceededError,
    RequestValidationError,
    TaskFailedError,
    WaitTimeoutError,
)

__all__ = [
    "EPILOG",
    "ERROR",
    "FAILED",
    "INTERRUPTED",
    "OK",
    "REFUSED",
    "TIMEOUT",
    "USAGE",
    "InputError",
    "UsageError",
    "batch_exit_code",
    "exit_code_for",
]

#: Everything asked for succeeded.
OK: Final = 0
#: A task ended in ``fail`` (a batch: at least one row's task failed).
FAILED: Final = 1
#: Bad arguments or input: a missing or malformed file, an invalid row, no API key, a
#: journal that cannot be used (not a journal, another batch's, locked by another run).
USAGE: Final = 2
#: The service refused: the API key, the balance, a quota, an invalid request, an
#: unknown task id.
REFUSED: Final = 3
#: The service or the network failed (an error answer, a broken answer, no connection),
#: or a result could not be written (a full disk).
ERROR: Final = 4
#: The wait deadline (``--timeout``) passed; the task keeps running on the service.
TIMEOUT: Final = 5
#: Interrupted by Ctrl-C (128 + SIGINT); the task or batch can be resumed.
INTERRUPTED: Final = 130

#: What the service refuses to do for this request or account: retrying will not help.
_REFUSALS: Final = (
    AuthenticationError,
    InsufficientBalanceError,
    QuotaExceededError,
    InvalidRequestError,
    NotFoundError,
)

EPILOG: Final = f"""\
exit codes:
  {OK:<3}  everything asked for succeeded
  {FAILED:<3}  a task ended in fail (batch: a row's task failed)
  {USAGE:<3}  usage or input error: bad arguments, a missing or invalid file or row,
       no API key, a journal that cannot be used
  {REFUSED:<3}  the service refused: API key, balance, quota, invalid request,
       unknown task id
  {ERROR:<3}  the service or the network failed, or the output could not be written
  {TIMEOUT:<3}  --timeout passed before the task finished (it keeps running)
  {INTERRUPTED:<3}  interrupted by Ctrl-C (the command that resumes is printed)
A batch exits with its most serious row's code: {REFUSED}, then {ERROR}, then {TIMEOUT}, \
then {FAILED}.
With --json, stdout holds one JSON object whatever the outcome.

The API key comes from AI302_API_KEY (then 302AI_API_KEY, AI302_KEY,
NEXT_PUBLIC_302_API_KEY) or --api-key-file; the base URL from --base-url or
AI302_BASE_URL. --emulator needs neither: it runs an in-process emulator.
"""


class InputError(Exception):
    """Bad input from the user: printed as one line, exits with ``exit_code``."""

    def __init__(self, message: str, *, exit_code: int = USAGE) -> None:
        self.exit_code = exit_code
        super().__init__(message)


class UsageError(InputError):
    """A command line the parser refused; its message is argparse's whole line."""


def exit_code_for(exc: BaseException) -> int:
    """The exit code a command ends with when ``exc`` escapes it."""
    if isinstance(exc, InputError):
        return exc.exit_code
    if isinstance(exc, RequestValidationError | ConfigurationError | JournalError):
        return USAGE
    if isinstance(exc, _REFUSALS):
        return REFUSED
    if isinstance(exc, TaskFailedError):
        return FAILED
    if isinstance(exc, WaitTimeoutError):
        return TIMEOUT
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    return ERROR


#: Row codes from the most serious down.
_SEVERITY: Final = (REFUSED, ERROR, TIMEOUT, FAILED)


def batch_exit_code(codes: Iterable[int]) -> int:
    """A batch's exit code from its rows' codes: the most serious one, else :data:`OK`."""
    seen = set(codes)
    return next((code for code in _SEVERITY if code in seen), OK)
