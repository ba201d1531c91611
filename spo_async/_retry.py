"""Which failures are worth another try, and how long to wait first.

Pure decisions, no I/O and no tenacity (the polling layer drives the loops):

* A **query** is a read, so it is retried on anything passing: transport
  failures, timeouts, HTTP 408/429/5xx, the service's transient err_codes
  (-10003, -1024) and unreadable 2xx answers.
* A **submit** creates a task that is billed, and the service has no
  idempotency key. It is retried only when the service cannot have created a
  task: the connection was never made, the service said 429, or the service
  answered with its own error envelope. Every ambiguous failure (a timeout or a
  broken connection after sending, a gateway's 5xx page, an unreadable 2xx) is
  reported as :class:`~spo_async.SubmitOutcomeUnknownError` and never resubmitted.
"""

from __future__ import annotations

import random

import attrs

from ._checks import check_count, check_flag, check_seconds
from ._errors import (
    APIError,
    ProtocolError,
    RateLimitError,
    TransportError,
)

__all__ = [
    "RetryPolicy",
    "backoff_delay",
    "exceeds_retry_after",
    "is_query_retryable",
    "is_submit_retryable",
    "is_submit_unknown",
]


def _seconds(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_seconds(attribute.name, value, allow_none=False)


def _attempts(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    check_count(attribute.name, value)


def _flag(_instance: object, attribute: attrs.Attribute[bool], value: bool) -> None:
    check_flag(attribute.name, value)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How hard to try again after a passing failure.

    Pass one to a client, or to a view: ``client.with_options(retry=...)``.

    Waits grow exponentially from ``initial`` (doubling) up to ``maximum``;
    with ``jitter`` each wait is drawn uniformly from zero to that value ("full
    jitter"), which keeps thousands of clients from retrying in step. When the
    service sends ``Retry-After``, that wait is used instead, up to
    ``max_retry_after``; a longer one ends the call with
    :class:`~spo_async.RateLimitError`.

    In your own tests, ``RetryPolicy.no_wait()`` keeps the attempts but makes
    every wait zero, ``Retry-After`` included. A setting out of range raises
    :class:`~spo_async.ConfigurationError`.
    """

    #: Attempts in all, the first included (1 means no retry). In a wait, it
    #: counts consecutive failed polls.
    attempts: int = attrs.field(default=6, validator=_attempts)
    #: The first backoff, in seconds.
    initial: float = attrs.field(default=0.5, validator=_seconds)
    #: The largest single backoff, in seconds.
    maximum: float = attrs.field(default=30.0, validator=_seconds)
    #: Draw each wait uniformly from ``[0, backoff]``.
    jitter: bool = attrs.field(default=True, validator=_flag)
    #: The longest ``Retry-After`` honoured, in seconds.
    max_retry_after: float = attrs.field(default=120.0, validator=_seconds)
    #: Wait as long as ``Retry-After`` asks (off in ``no_wait()``).
    respect_retry_after: bool = attrs.field(default=True, validator=_flag)

    @classmethod
    def no_wait(cls, attempts: int = 6) -> RetryPolicy:
        """A policy for tests: the same decisions, with every wait zero."""
        return cls(attempts=attempts, initial=0.0, maximum=0.0, respect_retry_after=False)

    @classmethod
    def never(cls) -> RetryPolicy:
        """One attempt, no retry at all."""
        return cls(attempts=1)

    def evolve(self, **changes: object) -> RetryPolicy:
        """A copy with some settings changed."""
        return attrs.evolve(self, **changes)  # type: ignore[arg-type]


def retry_after_of(exc: BaseException) -> float | None:
    """The ``Retry-After`` wait an error carries, if any."""
    return exc.retry_after if isinstance(exc, APIError) else None


def backoff_delay(
    policy: RetryPolicy, failures: int, exc: BaseException | None, rng: random.Random
) -> float:
    """The wait before retry number ``failures`` (1 for the first retry)."""
    retry_after = retry_after_of(exc) if exc is not None else None
    if retry_after is not None and policy.respect_retry_after:
        return min(retry_after, policy.max_retry_after)
    # The exponent is capped: 2.0 ** 1024 overflows, and 2 ** 64 outgrows any sane maximum.
    ceiling = min(policy.maximum, policy.initial * 2.0 ** min(max(0, failures - 1), 64))
    return rng.uniform(0.0, ceiling) if policy.jitter else ceiling


def exceeds_retry_after(policy: RetryPolicy, exc: BaseException) -> bool:
    """Whether the service asked for a longer wait than the policy allows."""
    retry_after = retry_after_of(exc)
    if retry_after is None or not policy.respect_retry_after:
        return False
    return retry_after > policy.max_retry_after


def is_query_retryable(exc: BaseException) -> bool:
    """Whether a failed query (a read) is worth repeating."""
    if isinstance(exc, TransportError):
        return True
    if isinstance(exc, APIError):
        return exc.retryable
    return isinstance(exc, ProtocolError) and exc.retryable


def is_submit_retryable(exc: BaseException) -> bool:
    """Whether a failed submit certainly created no task, and may be repeated."""
    if isinstance(exc, TransportError):
        return not exc.request_sent
    if isinstance(exc, RateLimitError):
        return True
    # The service's own envelope with a transient code: it answered, and said no.
    return isinstance(exc, APIError) and exc.retryable and exc.err_code is not None


def is_submit_unknown(exc: BaseException) -> bool:
    """Whether a failed submit may have created a task anyway."""
    if isinstance(exc, TransportError):
        return exc.request_sent
    if isinstance(exc, ProtocolError):
        return True  # a 2xx we could not read: the task very likely exists
    if isinstance(exc, APIError) and exc.err_code is None:
        return exc.status >= 500 or exc.status == 408  # a gateway spoke, not the service
    return False
