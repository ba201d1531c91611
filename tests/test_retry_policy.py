"""Retry decisions: backoff arithmetic, and which failures may be retried for query and submit.

Oversized answers and self-contradicting task states are decided too, but they are
built by the client only: their decisions are held end to end in test_reliability
(an oversized answer is read once and a submit's outcome is then unknown; contradictions
end a wait with ProtocolError after ``MAX_CONTRADICTIONS``).
"""

from __future__ import annotations

import math
import random
import sys
from typing import Any

import attrs
import pytest
from spo_async import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    InsufficientBalanceError,
    InvalidRequestError,
    NotFoundError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    RequestTimeoutError,
    RetryPolicy,
    SPOError,
    TransientError,
    TransportError,
)
from spo_async._retry import (
    backoff_delay,
    exceeds_retry_after,
    is_query_retryable,
    is_submit_retryable,
    is_submit_unknown,
)

# -- the policy --------------------------------------------------------------------------------


def test_default_policy() -> None:
    """Six attempts, 0.5 s doubling to 30 s with full jitter, Retry-After honoured up to 120 s."""
    assert attrs.asdict(RetryPolicy()) == {
        "attempts": 6,
        "initial": 0.5,
        "maximum": 30.0,
        "jitter": True,
        "max_retry_after": 120.0,
        "respect_retry_after": True,
    }


def test_no_wait_keeps_attempts_but_waits_zero() -> None:
    """no_wait() is for tests: same decisions, every wait zero, Retry-After ignored."""
    policy = RetryPolicy.no_wait(attempts=3)
    assert (policy.attempts, policy.initial, policy.maximum) == (3, 0.0, 0.0)
    assert not policy.respect_retry_after
    rate_limited = RateLimitError("slow", status=429, retry_after=60.0)
    for failures in range(1, 5):
        assert backoff_delay(policy, failures, rate_limited, random.Random(1)) == 0.0
    assert RetryPolicy.no_wait().attempts == 6


def test_never_is_a_single_attempt() -> None:
    """never() makes one attempt and no retry."""
    assert RetryPolicy.never().attempts == 1


def test_evolve_changes_only_what_is_named() -> None:
    """evolve() returns a copy with some settings changed, the original untouched."""
    policy = RetryPolicy()
    changed = policy.evolve(attempts=2, jitter=False)
    assert (changed.attempts, changed.jitter, changed.maximum) == (2, False, 30.0)
    assert policy == RetryPolicy()


def test_policy_is_frozen() -> None:
    """A policy cannot be changed in place; share one safely between clients."""
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        RetryPolicy().attempts = 3  # type: ignore[misc]


BAD_POLICIES: list[tuple[str, dict[str, Any]]] = [
    ("zero-attempts", {"attempts": 0}),
    ("negative-initial", {"initial": -0.1}),
    ("negative-maximum", {"maximum": -1.0}),
    ("negative-max-retry-after", {"max_retry_after": -5.0}),
    ("nan-initial", {"initial": math.nan}),
    ("nan-maximum", {"maximum": math.nan}),
    ("nan-max-retry-after", {"max_retry_after": math.nan}),
]


@pytest.mark.parametrize("changes", [b[1] for b in BAD_POLICIES], ids=[b[0] for b in BAD_POLICIES])
def test_policy_refuses_impossible_settings(changes: dict[str, Any]) -> None:
    """Fewer than one attempt, or a negative or NaN duration, is refused on construction."""
    with pytest.raises(ConfigurationError, match=next(iter(changes))):
        RetryPolicy(**changes)


# -- backoff -----------------------------------------------------------------------------------

NO_JITTER = RetryPolicy(initial=0.5, maximum=30.0, jitter=False)

BACKOFF = [
    (0, 0.5),
    (1, 0.5),
    (2, 1.0),
    (3, 2.0),
    (4, 4.0),
    (6, 16.0),
    (7, 30.0),
    (50, 30.0),
    (5_000, 30.0),
]


@pytest.mark.parametrize(("failures", "delay"), BACKOFF, ids=[f"failure-{f}" for f, _ in BACKOFF])
def test_backoff_doubles_from_initial_up_to_maximum(failures: int, delay: float) -> None:
    """Without jitter the wait is initial * 2**(failures-1), capped at maximum, no overflow."""
    assert backoff_delay(NO_JITTER, failures, None, random.Random(0)) == delay


def test_backoff_with_the_largest_maximum_does_not_overflow() -> None:
    """A huge failure count under the largest cap gives a large finite wait, not OverflowError."""
    policy = RetryPolicy(initial=1.0, maximum=sys.float_info.max, jitter=False)
    assert math.isfinite(backoff_delay(policy, 100_000, None, random.Random(0)))


@pytest.mark.parametrize("failures", [1, 2, 3, 8, 20])
def test_full_jitter_draws_within_zero_and_the_ceiling(failures: int) -> None:
    """With jitter each wait is uniform in [0, ceiling]; a seeded rng makes it repeatable."""
    policy = RetryPolicy(initial=0.5, maximum=30.0, jitter=True)
    ceiling = min(30.0, 0.5 * 2 ** (failures - 1))
    rng = random.Random(42)
    draws = [backoff_delay(policy, failures, None, rng) for _ in range(200)]
    assert all(0.0 <= d <= ceiling for d in draws)
    assert len(set(draws)) > 100  # really spread, not a constant
    again = random.Random(42)
    assert draws == [backoff_delay(policy, failures, None, again) for _ in range(200)]


RETRY_AFTER_CASES: list[tuple[str, RetryPolicy, float | None, float]] = [
    ("honoured", RetryPolicy(), 7.0, 7.0),
    ("honoured-zero", RetryPolicy(), 0.0, 0.0),
    ("capped", RetryPolicy(max_retry_after=10.0), 60.0, 10.0),
    ("ignored-when-disabled", RetryPolicy(jitter=False, respect_retry_after=False), 60.0, 1.0),
    ("absent-uses-backoff", RetryPolicy(jitter=False), None, 1.0),
]


@pytest.mark.parametrize(
    ("policy", "retry_after", "expected"),
    [r[1:] for r in RETRY_AFTER_CASES],
    ids=[r[0] for r in RETRY_AFTER_CASES],
)
def test_retry_after_replaces_the_backoff_up_to_max_retry_after(
    policy: RetryPolicy, retry_after: float | None, expected: float
) -> None:
    """The service's Retry-After is the wait (capped) unless respect_retry_after is off."""
    exc = RateLimitError("slow down", status=429, retry_after=retry_after)
    assert backoff_delay(policy, 2, exc, random.Random(0)) == expected


def test_errors_without_retry_after_use_the_backoff() -> None:
    """A transport error carries no Retry-After, so the exponential backoff applies."""
    exc = TransportError("refused")
    assert backoff_delay(NO_JITTER, 3, exc, random.Random(0)) == 2.0


EXCEEDS: list[tuple[str, RetryPolicy, BaseException, bool]] = [
    (
        "longer",
        RetryPolicy(max_retry_after=10.0),
        RateLimitError("x", status=429, retry_after=11.0),
        True,
    ),
    (
        "equal",
        RetryPolicy(max_retry_after=10.0),
        RateLimitError("x", status=429, retry_after=10.0),
        False,
    ),
    ("shorter", RetryPolicy(), RateLimitError("x", status=429, retry_after=1.0), False),
    ("no-header", RetryPolicy(), RateLimitError("x", status=429), False),
    ("ignored", RetryPolicy.no_wait(), RateLimitError("x", status=429, retry_after=1e9), False),
    ("not-an-api-error", RetryPolicy(), TransportError("x"), False),
    (
        "transient-with-header",
        RetryPolicy(max_retry_after=1.0),
        TransientError("x", status=503, retry_after=2.0),
        True,
    ),
]


@pytest.mark.parametrize(
    ("policy", "exc", "expected"), [e[1:] for e in EXCEEDS], ids=[e[0] for e in EXCEEDS]
)
def test_exceeds_retry_after_when_the_service_asks_for_more_than_allowed(
    policy: RetryPolicy, exc: BaseException, expected: bool
) -> None:
    """A Retry-After longer than max_retry_after ends the retries (when it is respected)."""
    assert exceeds_retry_after(policy, exc) is expected


# -- which failures are retried ----------------------------------------------------------------


def _never_sent(error: TransportError) -> TransportError:
    """``error`` marked as certainly not sent, as the transport marks a refused connection."""
    error.request_sent = False
    return error


#: (id, error, query retryable, submit retryable, submit unknown)
DECISIONS: list[tuple[str, BaseException, bool, bool, bool]] = [
    # transport: a submit may be repeated only if the request never left
    (
        "connect-refused",
        _never_sent(TransportError("refused", method="POST", path="/")),
        True,
        True,
        False,
    ),
    ("timeout-connecting", RequestTimeoutError("t", request_sent=False), True, True, False),
    ("timeout-after-send", RequestTimeoutError("t", request_sent=True), True, False, True),
    ("connection-lost", TransportError("reset"), True, False, True),
    # the service (or a gateway) answered with a status
    ("429-no-envelope", RateLimitError("slow", status=429), True, True, False),
    ("429-with-code", RateLimitError("slow", status=429, err_code=-99), True, True, False),
    ("-10003-envelope", TransientError("net", status=503, err_code=-10003), True, True, False),
    ("-1024-envelope", TransientError("ai timeout", status=504, err_code=-1024), True, True, False),
    ("502-no-envelope", TransientError("gw", status=502), True, False, True),
    ("504-no-envelope", TransientError("gw", status=504), True, False, True),
    ("408-no-envelope", TransientError("gw", status=408), True, False, True),
    ("400-invalid", InvalidRequestError("bad", status=400, err_code=-10011), False, False, False),
    ("400-no-envelope", InvalidRequestError("bad", status=400), False, False, False),
    ("401-auth", AuthenticationError("key", status=401, err_code=-10001), False, False, False),
    ("403-no-envelope", AuthenticationError("key", status=403), False, False, False),
    (
        "402-balance",
        InsufficientBalanceError("$", status=402, err_code=-10004),
        False,
        False,
        False,
    ),
    ("quota", QuotaExceededError("q", status=429, err_code=-10012), False, False, False),
    ("tool-disabled", AuthenticationError("off", status=403, err_code=-10002), False, False, False),
    (
        "no-channel-503",
        InvalidRequestError("model", status=503, err_code=-10008),
        False,
        False,
        False,
    ),
    ("unsupported", InvalidRequestError("no", status=400, err_code=-10009), False, False, False),
    ("not-found", NotFoundError("gone", status=404, err_code=-10010), False, False, False),
    ("base-api-error-2xx", APIError("odd", status=200, err_code=7), False, False, False),
    ("base-api-error-5xx-no-envelope", APIError("odd", status=500), False, False, True),
    # unreadable answers
    ("protocol-error", ProtocolError("html", status=200, body=b"<html>"), True, False, True),
    # not the SDK's errors at all
    ("spo-error-base", SPOError("x"), False, False, False),
    ("value-error", ValueError("x"), False, False, False),
]


@pytest.mark.parametrize(
    ("exc", "query", "submit_retry", "submit_unknown"),
    [d[1:] for d in DECISIONS],
    ids=[d[0] for d in DECISIONS],
)
def test_retry_decisions_for_query_and_submit(
    exc: BaseException, query: bool, submit_retry: bool, submit_unknown: bool
) -> None:
    """A query retries anything passing; a submit retries only when no task can exist."""
    assert is_query_retryable(exc) is query
    assert is_submit_retryable(exc) is submit_retry
    assert is_submit_unknown(exc) is submit_unknown


@pytest.mark.parametrize("exc", [d[1] for d in DECISIONS], ids=[d[0] for d in DECISIONS])
def test_a_submit_failure_is_never_both_retryable_and_unknown(exc: BaseException) -> None:
    """Retrying a submit whose outcome is unknown could bill twice, so the two never overlap."""
    assert not (is_submit_retryable(exc) and is_submit_unknown(exc))


@pytest.mark.parametrize("exc", [d[1] for d in DECISIONS], ids=[d[0] for d in DECISIONS])
def test_a_retryable_submit_failure_is_also_a_retryable_query_failure(exc: BaseException) -> None:
    """Submit retries are a subset of query retries: the read is always the safer call."""
    assert not is_submit_retryable(exc) or is_query_retryable(exc)


@pytest.mark.parametrize("attempts", [True, 2.5, "3"], ids=["bool", "float", "str"])
def test_attempts_must_be_a_whole_number(attempts: object) -> None:
    """attempts counts tries: a bool, a fraction or a string is refused."""
    with pytest.raises(ConfigurationError, match="attempts"):
        RetryPolicy(attempts=attempts)  # type: ignore[arg-type]
