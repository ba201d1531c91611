r"""Keep the API key out of what the service says, and make its text safe to print.

Two jobs, both pure (no I/O), both cheap enough to run on every answer:

* **Redaction.** A hostile or broken server (or a proxy) may echo the request's
  ``Authorization`` header back: in a JSON body, JSON-escaped (``\u0073k-...``), in
  an HTML error page, percent- or entity-encoded, in a header value. Whatever the
  service returns passes through :func:`~spo_async._sansio.redact_response` before
  anything parses it, so the key cannot reach a model, an error, a log record or a
  file. The secret is taken from the request itself (its credential headers), so
  every transport and every key is covered without the caller naming the key
  twice. :func:`scrub_exception` is the net for errors a transport raised: it
  takes the secret out of their texts and cuts chain links (``__cause__`` /
  ``__context__``) to foreign exceptions that hold it where it cannot be rewritten.

* **Printable text.** :func:`printable` escapes the characters that let text
  rewrite a terminal or a log file: C0 controls (CR/LF plant fake log lines, ESC
  starts terminal sequences), DEL, C1 controls (``\x9b`` is a one-byte CSI),
  bidirectional overrides and the other invisible format characters, line and
  paragraph separators, lone surrogates. The ``spo_async`` logger escapes every
  record with it (:mod:`spo_async._logging`), and the CLI uses it for terminal
  output. Models keep the service's text exactly (``--json`` output must stay
  exact): escaping is a matter of display only.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Final, TypeVar

from ._errors import SPOError

T = TypeVar("T")

__all__ = [
    "REDACTED",
    "Redactor",
    "printable",
    "redactor_for",
    "request_secrets",
    "scrub_exception",
]

#: What a secret is replaced with. Safe inside a JSON string, an HTML page and a header.
REDACTED: Final = "<redacted>"

#: Request headers whose values are credentials.
_SECRET_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key"})

#: A fragment of a secret this long, cut off at the very start or end of a text (a
#: truncated body, a snippet), is still taken out.
_MIN_EDGE_FRAGMENT: Final = 6

# -- printable text ------------------------------------------------------------------------

# The format characters (Unicode category Cf) that are not needed to write any script
# or emoji: bidi controls and marks, invisible operators, tags, the BOM. ZWNJ and ZWJ
# (U+200C, U+200D) are kept: Persian, Indic scripts and emoji sequences need them.
# The table is checked against the running Python's Unicode database by a test.
_FORMAT_CHARACTERS: Final = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u200e\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
# C0, DEL, C1; line and paragraph separators; lone surrogates (which cannot even be
# written to a UTF-8 stream); the format characters above.
_UNSAFE_BODY: Final = "\x7f-\x9f\u2028\u2029\ud800-\udfff" + _FORMAT_CHARACTERS
_UNSAFE: Final = re.compile(f"[\x00-\x1f{_UNSAFE_BODY}]")
_UNSAFE_MULTILINE: Final = re.compile(f"[\x00-\x08\x0b-\x1f{_UNSAFE_BODY}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, *, multiline: bool = False) -> str:
    r"""``text`` with every character that could rewrite a terminal or a log escaped.

    Escapes look like Python's (``\x1b``, ``\u202e``); everything else, any script
    and emoji included, is kept as it is. With ``multiline``, newlines and tabs are
    kept (for a prompt shown on a terminal); a carriage return is escaped either way,
    since it lets a line overwrite itself.
    """
    if text.isprintable():  # the common case, at C speed: nothing to escape
        return text
    pattern = _UNSAFE_MULTILINE if multiline else _UNSAFE
    return pattern.sub(_escape, text)  # the same object when nothing matched


def has_unsafe_characters(text: str) -> bool:
    """Whether :func:`printable` would change ``text`` (control, format, surrogate...)."""
    return not text.isprintable() and _UNSAFE.search(text) is not None


# -- redaction -----------------------------------------------------------------------------

#: What replaces a whole answer that holds a secret in a form too costly to take out alone.
WITHHELD: Final = b"<redacted: the answer held the API key and was withheld>"
_REDACTED_BYTES: Final = REDACTED.encode()

#: Bodies up to this size are redacted form by form (a regex over every position, about
#: 0.1 s per MiB); a larger one that holds an encoded secret is withheld whole.
_PRECISE_LIMIT: Final = 256 * 1024
#: More HTML character references than this in one body are not decoded to look for a
#: secret among them: the body is redacted form by form (or withheld) instead.
_MAX_ENTITIES: Final = 100_000

#: The printable ASCII characters JSON may write as a backslash and themselves.
_JSON_SHORT: Final = frozenset('/"\\')
#: HTML's named references of printable ASCII.
_HTML_NAMED: Final = {"&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "apos"}
_ENTITY: Final = re.compile(rb"&#(?:x0*([0-9a-f]{1,6})|0*([0-9]{1,7}));?")


def _char_forms(ch: str) -> list[str]:
    r"""Regex alternatives for one character of a secret, in every encoding text can use.

    The character itself; JSON's ``\uXXXX`` (as UTF-16 units) and short escapes, and
    ``\xXX``, behind any number of backslashes (text escaped twice stays readable);
    percent-encoding; HTML numeric references (decimal or hex, leading zeros, ``;``
    optional) and named ones. The patterns ignore case, so hex digits (and an
    upper-cased echo) match too. Percent-encoding is matched for ASCII characters
    only: API keys are printable ASCII (:func:`~spo_async._settings.resolve_api_key`).
    """
    code = ord(ch)
    forms = [re.escape(ch)]
    units = ch.encode("utf-16-be", "surrogatepass")
    forms.append(
        "".join(f"\\\\+u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
    )
    if code < 0x80:
        forms.append(f"\\\\+x{code:02x}")
        forms.append(f"%{code:02x}")
    if ch in _JSON_SHORT:
        forms.append("\\\\+" + re.escape(ch))
    forms.append(f"&#0*{code};?")
    forms.append(f"&#x0*{code:x};?")
    if ch in _HTML_NAMED:
        forms.append(f"&{_HTML_NAMED[ch]};")
    return forms


def _groups(secret: str) -> list[str]:
    return [f"(?:{'|'.join(_char_forms(ch))})" for ch in secret]


def _text_pattern(secret: str) -> str:
    return "".join(_groups(secret))


def _cut_patterns(secret: str) -> tuple[str, str] | None:
    """Patterns for a piece of ``secret`` that a cut left at the end and at the start.

    The end of a text may hold a prefix of the secret, its start a suffix; only
    pieces of at least :data:`_MIN_EDGE_FRAGMENT` characters count, in any form.
    """
    groups = _groups(secret)
    size = len(groups)
    least = min(_MIN_EDGE_FRAGMENT, size)
    if size < 2:
        return None
    longer = ""
    for group in reversed(groups[least : size - 1]):
        longer = f"(?:{group}{longer})?"
    earlier = ""
    for group in groups[1 : size - least]:
        earlier = f"(?:{earlier}{group})?"
    return "".join(groups[:least]) + longer, earlier + "".join(groups[size - least :])


def _entity_escape(match: re.Match[bytes]) -> bytes:
    r"""An HTML numeric reference as the ``\u``/``\U`` escape of the same character."""
    hex_digits, decimal = match.groups()
    code = int(hex_digits, 16) if hex_digits is not None else int(decimal)
    if code > 0x10FFFF:
        return match.group()
    return (f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}").encode()


def _decoded_view(lowered: bytes, *, references: bool = True) -> str | None:
    r"""``lowered`` with every escape a secret could hide behind decoded, lower-cased.

    Only to look for secrets in: it decodes more than any one format would (HTML
    references, backslash runs of any length, ``\xXX``, ``%XX``, ``\uXXXX``), with
    C-speed replaces and one codec pass. ``None`` when there are too many HTML
    references to decode cheaply. ``references=False`` leaves HTML references as
    they are (what a reader who decodes only the rest sees).
    """
    view = lowered
    if references and b"&" in view:
        if view.count(b"&#") > _MAX_ENTITIES:
            return None
        view = _ENTITY.sub(_entity_escape, view)
        for ch, name in _HTML_NAMED.items():
            view = view.replace(f"&{name};".encode(), ch.encode())
    if b"\\" in view:
        while b"\\\\" in view:
            view = view.replace(b"\\\\", b"\\")
        view = view.replace(b"\\/", b"/").replace(b'\\"', b'"').replace(b"\\x", b"\\u00")
    if b"%" in view:
        view = view.replace(b"%", b"\\u00")
    return view.decode("raw_unicode_escape", "ignore").lower()


class Redactor:
    """Replaces given secrets, in any of their usual encodings, with :data:`REDACTED`.

    Build one with :func:`redactor_for` (cached per secret set). Its ``repr`` never
    shows the secrets.

    Bytes are looked at in two steps, so that the usual answer (no secret) costs a few
    C-speed passes, about 5 ms per MiB: a search for the raw secret, then, only when the
    body holds a backslash, ``%`` or ``&``, a search in a view with every escape decoded.
    Only a body where a secret is seen is redacted form by form (or, above
    :data:`_PRECISE_LIMIT`, raw forms only); if the secret can still be seen after
    that, the whole body is replaced by :data:`WITHHELD`. So whatever the view
    detects never passes.
    """

    __slots__ = (
        "_bytes",
        "_bytes_end",
        "_bytes_start",
        "_ends",
        "_exotic",
        "_markers",
        "_narrow",
        "_raw",
        "_starts",
        "_text",
        "_text_end",
        "_text_start",
        "_view",
        "_wide",
        "_window",
    )

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so that a secret containing another is taken out whole.
        chosen = sorted({s for s in secrets if s}, key=len, reverse=True)
        if not chosen:
            raise ValueError("a Redactor needs at least one non-empty secret")
        text = "|".join(_text_pattern(s) for s in chosen)
        self._text = re.compile(text, re.IGNORECASE)
        # Bodies are bytes: the same forms in UTF-8, plus each secret as raw UTF-16 and
        # UTF-32 (JSON may arrive in those encodings, and an error snippet shows them).
        wide = [
            s.lower().encode(encoding, "surrogatepass")
            for s in chosen
            for encoding in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
        ]
        self._bytes = re.compile(
            b"|".join([text.encode("utf-8", "surrogatepass"), *map(re.escape, wide)]),
            re.IGNORECASE,
        )
        narrow = [s.lower().encode("utf-8", "surrogatepass") for s in chosen]
        self._narrow = tuple(narrow)
        self._wide = tuple(wide)
        self._raw = tuple(sorted(narrow + wide, key=len, reverse=True))
        self._view = tuple(s.lower() for s in chosen)
        characters = "".join(chosen)
        # A secret that holds escape characters of its own ("\\", "%", "&") can read as
        # something else once a view decodes it: such a secret is always looked for
        # form by form (slower; no key the service issues looks like that).
        self._exotic = any(ch in "\\%&" for ch in characters)
        # What an encoded secret needs in the body besides "%" or "&": only these make
        # the decoded view worth building. ``\\u00`` and not ``\\u``: a body of ``\\u6f22``
        # escapes (Chinese from an ASCII-only JSON writer) cannot spell an ASCII secret.
        if any(ch in _JSON_SHORT for ch in characters):
            self._markers: tuple[bytes, ...] = (b"\\",)
        else:
            self._markers = (b"\\x", b"\\u" if not characters.isascii() else b"\\u00")
        cuts = [p for p in map(_cut_patterns, chosen) if p is not None]
        at_end = "|".join(end for end, _ in cuts) or "(?!)"
        at_start = "|".join(start for _, start in cuts) or "(?!)"
        self._text_end = re.compile(f"(?:{at_end})\\Z", re.IGNORECASE)
        self._text_start = re.compile(f"\\A(?:{at_start})", re.IGNORECASE)
        self._bytes_end = re.compile(
            f"(?:{at_end})\\Z".encode("utf-8", "surrogatepass"), re.IGNORECASE
        )
        self._bytes_start = re.compile(
            f"\\A(?:{at_start})".encode("utf-8", "surrogatepass"), re.IGNORECASE
        )
        # Every form of a piece ends with a character of a secret, a hex digit or ";"
        # and starts with a character of a secret, "\\", "%" or "&": a JSON body, which
        # starts with "{" and ends with "}", is cleared by two set lookups.
        lowered = "".join(chosen).lower()
        self._ends = frozenset(lowered + "0123456789abcdef;")
        self._starts = frozenset(lowered + "\\%&")
        # How far from either end a piece may start: its longest forms are escapes of
        # about ten characters per character.
        self._window = 12 * max(map(len, chosen))

    def __repr__(self) -> str:
        return "<Redactor secrets=<redacted>>"

    def text(self, text: str) -> str:
        """``text`` with every secret, whole or cut off at either end, replaced."""
        text = self._text.sub(REDACTED, text)
        if text and text[-1].lower() in self._ends:
            found = self._text_end.search(text, max(0, len(text) - self._window))
            if found is not None:
                text = text[: found.start()] + REDACTED
        if text and text[0].lower() in self._starts:
            found = self._text_start.match(text[: self._window])
            if found is not None:
                text = REDACTED + text[found.end() :]
        return text

    def data(self, data: bytes) -> bytes:
        """``data`` with every secret, whole or cut off at either end, replaced.

        Other bytes are kept exactly, and the same object comes back when nothing
        had to change.
        """
        if self._exotic:
            data = self._bytes.sub(_REDACTED_BYTES, data)
        elif self.holds(data):
            if len(data) <= _PRECISE_LIMIT:
                data = self._bytes.sub(_REDACTED_BYTES, data)
            else:
                data = self._replace_raw(data)
            if self.holds(data):
                return WITHHELD
        if data and chr(data[-1]).lower() in self._ends:
            found = self._bytes_end.search(data, max(0, len(data) - self._window))
            if found is not None:
                data = data[: found.start()] + _REDACTED_BYTES
        if data and chr(data[0]).lower() in self._starts:
            found = self._bytes_start.match(data[: self._window])
            if found is not None:
                data = _REDACTED_BYTES + data[found.end() :]
        return data

    def mentions(self, text: str) -> bool:
        """Whether ``text`` holds a secret, whole or cut off at either end."""
        return self.text(text) != text

    def value(self, value: T) -> T:
        """``value`` redacted if it is text or bytes, or a list, tuple or dict of them."""
        return self._value(value, 0)

    def holds(self, data: bytes) -> bool:
        """Whether ``data`` may hold a whole secret, in any form the patterns know or more."""
        if self._exotic:
            return self._bytes.search(data) is not None
        lowered = data.lower()
        if any(secret in lowered for secret in self._narrow):
            return True
        if b"\x00" in lowered and any(secret in lowered for secret in self._wide):
            return True
        # One-byte searches first (memchr, far faster than a two-byte one).
        if (
            b"%" not in lowered
            and b"&" not in lowered
            and (b"\\" not in lowered or not any(m in lowered for m in self._markers))
        ):
            return False
        view = _decoded_view(lowered)
        if view is None or any(secret in view for secret in self._view):
            return True
        if b"&#" not in lowered:
            return False
        # A reference without its ``;`` takes every digit after it: ``&#x30`` before ``000``
        # decodes to one character, U+30000. A reader who does not decode references sees
        # the digits, and a secret of hex digits may run on from the reference's own.
        plain = _decoded_view(lowered, references=False)
        return plain is not None and any(secret in plain for secret in self._view)

    def _replace_raw(self, data: bytes) -> bytes:
        """``data`` with the raw forms of the secrets replaced, at C speed."""
        for secret in self._raw:
            lowered = data.lower()  # ASCII-only lowering: positions stay the same
            start = lowered.find(secret)
            if start < 0:
                continue
            parts: list[bytes] = []
            end = 0
            while start >= 0:
                parts += (data[end:start], _REDACTED_BYTES)
                end = start + len(secret)
                start = lowered.find(secret, end)
            parts.append(data[end:])
            data = b"".join(parts)
        return data

    def _value(self, value: T, depth: int) -> T:
        result: object = value
        if isinstance(value, str):
            result = self.text(value)
        elif isinstance(value, bytes):
            result = self.data(value)
        elif depth < 8 and isinstance(value, list | tuple):
            items = [self._value(v, depth + 1) for v in value]
            if any(a is not b for a, b in zip(items, value, strict=True)):
                result = items if isinstance(value, list) else tuple(items)
        elif depth < 8 and isinstance(value, dict):
            pairs = [
                (self._value(k, depth + 1), self._value(v, depth + 1)) for k, v in value.items()
            ]
            if any(
                a is not k or b is not v
                for (a, b), (k, v) in zip(pairs, value.items(), strict=True)
            ):
                result = dict(pairs)
        return result  # type: ignore[return-value]


@functools.lru_cache(maxsize=16)
def _cached_redactor(secrets: tuple[str, ...]) -> Redactor:
    return Redactor(secrets)


def redactor_for(secrets: Iterable[str]) -> Redactor | None:
    """The :class:`Redactor` for ``secrets`` (built once per set), or ``None`` for none."""
    chosen = tuple(sorted({s for s in secrets if s}))
    return _cached_redactor(chosen) if chosen else None


def request_secrets(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The credentials a request carries: the token of each credential header.

    ``Authorization: Bearer sk-...`` gives ``"sk-..."`` (the scheme is no secret, and
    taking the token out also takes it out of an echo of the whole header); a
    header without a scheme gives its whole value.
    """
    found: list[str] = []
    for name, value in headers.items():
        if name.lower() in _SECRET_HEADERS:
            scheme, _, token = value.strip().partition(" ")
            secret = token.strip() or scheme
            if secret:
                found.append(secret)
    return tuple(found)


def _texts(exc: BaseException) -> Iterable[str]:
    """What an exception can say about itself: its str, repr, args and attributes."""
    yield str(exc)
    yield repr(exc)
    yield repr(exc.args)
    yield repr(vars(exc)) if hasattr(exc, "__dict__") else ""


def scrub_exception(exc: BaseException, secrets: Iterable[str]) -> None:
    """Take ``secrets`` out of ``exc`` and its whole ``__cause__``/``__context__`` chain.

    The SDK's own errors are rewritten in place (their args, attributes and notes).
    A foreign exception in the chain whose texts still mention a secret after that
    (aiohttp's keep the request headers in objects that cannot be rewritten) is cut
    out of the chain.
    """
    redactor = redactor_for(secrets)
    if redactor is None:
        return
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        _scrub_in_place(error, redactor)
        for link in ("__cause__", "__context__"):
            linked: BaseException | None = getattr(error, link)
            if linked is None:
                continue
            if not isinstance(linked, SPOError):
                _scrub_in_place(linked, redactor)
                if any(redactor.mentions(text) for text in _texts(linked)):
                    setattr(error, link, None)
                    if link == "__context__":
                        error.__suppress_context__ = True
                    continue
            pending.append(linked)


def _scrub_in_place(error: BaseException, redactor: Redactor) -> None:
    try:
        error.args = redactor.value(error.args)
        for name, value in list(vars(error).items()):
            clean = redactor.value(value)
            if clean is not value:
                setattr(error, name, clean)
    except (AttributeError, TypeError):  # a read-only attribute: the caller cuts the link
        pass
