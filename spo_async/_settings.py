"""Where a client's key and base URL come from when they are not passed in.

302.AI's own projects do not agree on one variable name for the key,
so several are read, in a documented order. The key is checked here for the
mistakes that would otherwise surface as a puzzling 401 (stray whitespace, a
newline from ``$(cat file)``) or fail every call with an untyped error (a
character an HTTP header cannot carry); it must be printable ASCII, and it is
never echoed in a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ._errors import ConfigurationError
from ._sansio import normalize_base_url

__all__ = [
    "API_KEY_ENV_VARS",
    "BASE_URL_ENV_VAR",
    "DEFAULT_BASE_URL",
    "DEFAULT_CONCURRENCY",
    "resolve_api_key",
    "resolve_base_url",
]

#: Where the API key is looked for, in this order, when none is passed.
API_KEY_ENV_VARS: Final = ("AI302_API_KEY", "302AI_API_KEY", "AI302_KEY", "NEXT_PUBLIC_302_API_KEY")
#: Where the base URL is looked for when none is passed.
BASE_URL_ENV_VAR: Final = "AI302_BASE_URL"
#: Tasks a batch keeps in flight when the caller does not say: each one is billed while it runs.
DEFAULT_CONCURRENCY: Final = 16
#: The service's address when neither ``base_url`` nor ``AI302_BASE_URL`` says otherwise.
DEFAULT_BASE_URL: Final = "https://api.302.ai"


def resolve_api_key(api_key: str | None, environ: Mapping[str, str]) -> str:
    """The key to use: ``api_key``, else the first of :data:`API_KEY_ENV_VARS` that is set."""
    if api_key is None:
        for name in API_KEY_ENV_VARS:
            value = environ.get(name, "").strip()
            if value:
                api_key = value
                break
        else:
            raise ConfigurationError(
                "no API key: pass api_key=... or set one of " + ", ".join(API_KEY_ENV_VARS)
            )
    if not isinstance(api_key, str):
        raise ConfigurationError(f"api_key must be a string, got {type(api_key).__name__}")
    api_key = api_key.strip()
    if not api_key:
        raise ConfigurationError("api_key is empty")
    # The key travels in an HTTP header, which takes printable ASCII: anything else
    # (a control character, a non-breaking space, a lone surrogate from a badly decoded
    # file) would fail every call later with an untyped error from the HTTP stack.
    # The key itself is never echoed, not even the offending character.
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in api_key):
        raise ConfigurationError("api_key contains whitespace or control characters")
    if not api_key.isascii():
        raise ConfigurationError(
            "api_key contains a character that is not ASCII; a key is printable ASCII"
        )
    return api_key


def resolve_base_url(
    base_url: str | None, environ: Mapping[str, str], *, allow_insecure_http: bool
) -> str:
    """The checked base URL: ``base_url``, else ``AI302_BASE_URL``, else the default."""
    chosen = base_url or environ.get(BASE_URL_ENV_VAR, "").strip() or DEFAULT_BASE_URL
    return normalize_base_url(chosen, allow_insecure_http=allow_insecure_http)
