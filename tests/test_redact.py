"""The redactor on its own: pieces of a key at either end, large bodies, exception chains."""

from __future__ import annotations

import pytest
from spo_async import TransientError
from spo_async._redact import REDACTED, Redactor, redactor_for, scrub_exception

KEY = "sk-RedactMe0123456789abcdefXYZ"


def test_a_key_cut_off_at_either_end_of_a_text_is_taken_out() -> None:
    """A snippet that starts or ends in the middle of the key still does not show a piece of it."""
    redactor = Redactor([KEY])
    head, tail = KEY[:20], KEY[-20:]
    assert redactor.text(f"error near {head}") == f"error near {REDACTED}"
    assert redactor.text(f"{tail} was rejected") == f"{REDACTED} was rejected"
    assert redactor.data(f"{tail} was rejected".encode()).startswith(REDACTED.encode())
    assert redactor.text("nothing secret here") == "nothing secret here"


def test_a_large_body_holding_the_key_many_times_loses_every_copy() -> None:
    """Past the precise size, raw copies of the key in any case are replaced in one pass."""
    redactor = Redactor([KEY])
    body = (b"x" * 300_000 + KEY.encode() + b"y" + KEY.upper().encode()) * 2
    clean = redactor.data(body)
    assert KEY.encode() not in clean
    assert KEY.upper().encode() not in clean
    assert not redactor.holds(clean)


def test_a_redactor_never_shows_its_secrets_and_needs_one() -> None:
    """Its repr hides the secrets; an empty list of secrets gives no redactor at all."""
    assert KEY not in repr(Redactor([KEY]))
    assert redactor_for([]) is None
    with pytest.raises(ValueError, match="non-empty"):
        Redactor([""])


class _RequestInfo:
    """Like aiohttp's request info: an object that shows the request's headers."""

    def __repr__(self) -> str:
        return f"<RequestInfo Authorization: Bearer {KEY}>"


class _Holder(Exception):
    """A foreign exception that keeps the key where it cannot be rewritten."""

    def __init__(self) -> None:
        super().__init__("request failed")
        self.request_info = _RequestInfo()


def test_a_foreign_exception_that_keeps_the_key_is_cut_out_of_the_chain() -> None:
    """An SDK error's context that still mentions the key after scrubbing is dropped."""
    error = TransientError(f"failed with {KEY}", status=502)
    try:
        try:
            raise _Holder
        except _Holder:
            raise error from None
    except TransientError:
        pass
    error.add_note(f"key {KEY}")
    scrub_exception(error, [KEY])
    assert KEY not in str(error)
    assert all(KEY not in note for note in error.__notes__)
    assert error.__context__ is None  # the foreign exception could not be cleaned: cut out
    assert error.__suppress_context__
