"""What a shared store's URI says: which engine, and how to show it without its password.

A ``postgresql://user:secret@db/app`` URI names the store behind a shared rate budget
or a shared poll; its password must never reach a repr, a log line or an exception,
so every message shows :func:`display_uri` instead.
"""

from __future__ import annotations

import urllib.parse
from typing import Final, Literal

from ._errors import ConfigurationError

__all__ = ["StoreKind", "display_uri", "store_kind"]

StoreKind = Literal["postgresql", "redis"]

_SCHEMES: Final[dict[str, StoreKind]] = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "redis": "redis",
    "rediss": "redis",
    "valkey": "redis",
    "valkeys": "redis",
}


#: Query parameters that carry a secret (libpq's and Redis clients').
_SECRET_PARAMS: Final = frozenset({"password", "sslpassword", "passfile"})


def display_uri(uri: str) -> str:
    """``uri`` without its password (in the address or the query): safe to show and log.

    What is left still names the store and its options (``?batch=...``), so a shown
    command still works where the password comes from elsewhere (``PGPASSWORD``,
    ``~/.pgpass``, ``REDISCLI_AUTH``).
    """
    try:
        parts = urllib.parse.urlsplit(uri)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return "<a malformed URI>"
    user = f"{parts.username}@" if parts.username else ""
    if ":" in host:
        host = f"[{host}]"
    kept = urllib.parse.urlencode([(k, v) for k, v in query if k.lower() not in _SECRET_PARAMS])
    return urllib.parse.urlunsplit((parts.scheme, f"{user}{host}{port}", parts.path, kept, ""))


def store_kind(uri: object, *, what: str) -> StoreKind:
    """The engine ``uri`` names, or a :class:`ConfigurationError` saying what is accepted."""
    if not isinstance(uri, str):
        raise ConfigurationError(f"{what} must be a URI string, got {type(uri).__name__}")
    scheme = uri.partition("://")[0].lower() if "://" in uri else ""
    kind = _SCHEMES.get(scheme)
    if kind is None:
        raise ConfigurationError(
            f"{what} must be a postgresql://, postgres://, redis://, rediss:// or valkey:// "
            f"URI, got {display_uri(uri) if scheme else '<no scheme>'!s}"
        )
    try:
        urllib.parse.urlsplit(uri).port  # noqa: B018 - a bad port raises here, not later
    except ValueError as exc:
        raise ConfigurationError(f"{what}: {display_uri(uri)} has an invalid port") from exc
    return kind
