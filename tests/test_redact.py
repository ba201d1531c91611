"""The redactor's rarer paths: cut secrets, huge or exotic bodies and exception chains."""

from __future__ import annotations

import pytest
from spo_async._errors import SPOError
from spo_async._redact import (
    REDACTED,
    WITHHELD,
    Redactor,
    redactor_for,
    request_secrets,
    scrub_exception,
)

KEY = "sk-abcdef0123456789"


def test_a_redactor_needs_a_secret() -> None:
    """Building a Redactor from empty secrets is refused instead of matching nothing."""
    with pytest.raises(ValueError, match="at least one non-empty secret"):
        Redactor(["", ""])


def test_the_repr_hides_the_secrets() -> None:
    """A Redactor's repr never shows the secrets it holds."""
    assert KEY not in repr(Redactor([KEY]))
    assert "redacted" in repr(Redactor([KEY]))


def test_a_non_ascii_secret_is_found_as_a_json_escape() -> None:
    r"""A secret with a non-ASCII character is found when JSON writes it as ``\uXXXX``."""
    redactor = Redactor(["clé-secrète-42"])
    assert redactor.text('{"k": "cl\\u00e9-secr\\u00e8te-42"}') == '{"k": "' + REDACTED + '"}'


def test_a_secret_cut_at_either_end_of_a_text_is_redacted() -> None:
    """A text that starts with the tail or ends with the head of a secret loses that piece."""
    redactor = Redactor([KEY])
    assert redactor.text("before " + KEY[:10]) == "before " + REDACTED
    assert redactor.text(KEY[-10:] + " after") == REDACTED + " after"
    assert redactor.mentions(KEY[-10:] + " after")


def test_bytes_starting_with_a_cut_secret_lose_that_piece() -> None:
    """Bytes that start with the tail of a secret have it replaced, the rest kept exactly."""
    redactor = Redactor([KEY])
    assert redactor.data(KEY[-10:].encode() + b" rest") == REDACTED.encode() + b" rest"


def test_an_exotic_secret_is_looked_for_form_by_form() -> None:
    """A secret holding an escape character of its own is still found and replaced."""
    redactor = Redactor(["pa%ss&word\\99"])
    body = b'{"k": "pa%ss&word\\\\99"}'
    assert redactor.holds(body)
    assert b"word" not in redactor.data(body)
    assert not redactor.holds(b'{"k": "nothing"}')


def test_a_large_body_has_its_raw_secrets_replaced() -> None:
    """Above the precise limit, every raw copy of a secret is replaced and the rest kept."""
    redactor = Redactor([KEY])
    filler = b"x" * (300 * 1024)
    body = filler + KEY.upper().encode() + b"-" + KEY.encode() + b"}"
    assert redactor.data(body) == filler + REDACTED.encode() + b"-" + REDACTED.encode() + b"}"


def test_a_large_body_with_an_escaped_secret_is_withheld() -> None:
    """Above the precise limit, a secret only an escape hides makes the whole body withheld."""
    redactor = Redactor([KEY])
    escaped = "".join(f"\\u{ord(ch):04x}" for ch in KEY).encode()
    assert redactor.data(b"x" * (300 * 1024) + escaped + b"}") == WITHHELD


def test_an_out_of_range_html_reference_is_no_secret() -> None:
    """An HTML reference past the last code point is left alone, and the body passes as is."""
    body = b"<p>&#x110000; and &#1114112;</p>"
    assert Redactor([KEY]).data(body) is body


def test_too_many_html_references_make_the_body_suspect() -> None:
    """A body with more HTML references than are decoded cheaply is treated as holding a secret."""
    assert Redactor([KEY]).holds(b"&#65;" * 100_001)


def test_values_redact_bytes_inside_containers() -> None:
    """Bytes inside a tuple are redacted, and an unchanged value comes back as itself."""
    redactor = Redactor([KEY])
    assert redactor.value((b"k=" + KEY.encode(),)) == (b"k=" + REDACTED.encode(),)
    clean = (b"nothing",)
    assert redactor.value(clean) is clean


def test_an_empty_credential_header_gives_no_secret() -> None:
    """A credential header with no value yields no secret, while the others still do."""
    assert request_secrets({"Authorization": "  ", "X-Api-Key": KEY}) == (KEY,)
    assert redactor_for([""]) is None


def test_scrubbing_without_secrets_leaves_the_exception() -> None:
    """With no secrets to take out, an exception is left exactly as it was."""
    error = SPOError("plain " + KEY)
    scrub_exception(error, [""])
    assert error.args == ("plain " + KEY,)


def test_a_chained_sdk_error_is_scrubbed_and_kept() -> None:
    """An SDK error in the cause chain is rewritten in place, not cut out."""
    inner = SPOError("inner " + KEY)
    outer = SPOError("outer")
    outer.__cause__ = inner
    scrub_exception(outer, [KEY])
    assert outer.__cause__ is inner
    assert inner.args == ("inner " + REDACTED,)


class _Frozen(Exception):
    """A foreign exception whose message cannot be rewritten (like aiohttp's)."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self._secret = secret

    @property
    def args(self) -> tuple[object, ...]:
        return (self._secret,)

    @args.setter
    def args(self, value: tuple[object, ...]) -> None:
        raise AttributeError("read-only")

    def __str__(self) -> str:
        return self._secret


def test_a_foreign_context_still_naming_the_secret_is_cut_out() -> None:
    """A foreign exception in the context that cannot be scrubbed is dropped and suppressed."""
    outer = SPOError("outer")
    outer.__context__ = _Frozen("key " + KEY)
    scrub_exception(outer, [KEY])
    left: BaseException | None = getattr(outer, "__context__")  # noqa: B009 - rewritten
    assert left is None
    assert outer.__suppress_context__
