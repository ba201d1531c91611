"""What a shared store's URI says: which engine, and how to show it without its password.

A ``postgresql://user:secret@db/app`` URI names the store behind a shared rate budget
or a shared poll; its password must never reach a repr, a log line or an exception,
so every message shows :func:`display_uri` instead.

Schemes are case-insensitive (``Redis://`` is ``redis://``), as RFC 3986 says; the
drivers get the URI with its scheme spelt as they expect (:func:`driver_uri`).
"""

from __future__ import annotations

import urllib.parse
from typing import Final, Literal

from ._errors import ConfigurationError

__all__ = ["MALFORMED", "SCHEMES", "StoreKind", "display_uri", "driver_uri", "store_kind"]

StoreKind = Literal["postgresql", "redis"]

#: Each accepted scheme (lower case), the engine it names and how its driver spells it.
_SCHEMES: Final[dict[str, tuple[StoreKind, str]]] = {
    "postgresql": ("postgresql", "postgresql"),
    "postgres": ("postgresql", "postgres"),
    "redis": ("redis", "redis"),
    "rediss": ("redis", "rediss"),
    "valkey": ("redis", "redis"),
    "valkeys": ("redis", "rediss"),
}
#: The accepted schemes, lower case, for whoever must tell a store URI from a file name.
SCHEMES: Final = tuple(_SCHEMES)

#: What :func:`display_uri` shows for a URI it cannot take apart with certainty.
MALFORMED: Final = "<a malformed URI>"

#: Query parameters that carry a secret (libpq's and Redis clients').
_SECRET_PARAMS: Final = frozenset({"password", "sslpassword", "passfile"})


def display_uri(uri: str) -> str:
    """``uri`` without its password (in the address or the query): safe to show and log.

    What is left still names the store and its options (``?batch=...``) as written,
    so a shown command still works where the password comes from elsewhere
    (``PGPASSWORD``, ``~/.pgpass``, ``REDISCLI_AUTH``).

    A URI that cannot be taken apart with certainty is shown as :data:`MALFORMED`:
    a password holding an unencoded ``/``, ``?`` or ``#`` ends the address early
    (``redis://u:12345/abc@cache`` reads as host ``u``, port ``12345``), so an ``@``
    after the address, a port that is not a number, whitespace or a control
    character all mean that part of a password might be shown.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep or not uri.isprintable() or any(ch.isspace() for ch in uri):
        return MALFORMED
    try:
        parts = urllib.parse.urlsplit(uri)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return MALFORMED
    if parts.scheme != scheme.lower() or not rest.startswith(parts.netloc):
        return MALFORMED
    if "@" in rest[len(parts.netloc) :]:
        return MALFORMED
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not all(_plain_host(host) for host in hosts.split(",")):
        return MALFORMED
    user = userinfo.partition(":")[0]
    address = f"{user}@{hosts}" if at and user else hosts
    kept = [(k, v) for k, v in query if k.lower() not in _SECRET_PARAMS]
    shown = f"{scheme}://{address}{parts.path}"
    if kept:
        shown += "?" + (parts.query if len(kept) == len(query) else urllib.parse.urlencode(kept))
    if parts.fragment:
        shown += "#" + parts.fragment
    return shown


def _plain_host(host: str) -> bool:
    """Whether ``host`` (one of libpq's comma-separated list) is a name and a numeric port."""
    if host.startswith("["):  # an IPv6 address: its colons are its own
        end = host.find("]")
        if end < 0:
            return False
        host = "h" + host[end + 1 :]
    _, colon, port = host.partition(":")
    return not colon or port == "" or (port.isascii() and port.isdigit())


def store_kind(uri: object, *, what: str) -> StoreKind:
    """The engine ``uri`` names, or a :class:`ConfigurationError` saying what is accepted."""
    if not isinstance(uri, str):
        raise ConfigurationError(f"{what} must be a URI string, got {type(uri).__name__}")
    scheme = uri.partition("://")[0].lower() if "://" in uri else ""
    known = _SCHEMES.get(scheme)
    if known is None:
        raise ConfigurationError(
            f"{what} must be a postgresql://, postgres://, redis://, rediss://, valkey:// "
            f"or valkeys:// URI, got {display_uri(uri) if scheme else '<no scheme>'!s}"
        )
    try:
        urllib.parse.urlsplit(uri).port  # noqa: B018 - a bad port raises here, not later
    except ValueError as exc:
        raise ConfigurationError(f"{what}: {display_uri(uri)} has an invalid port") from exc
    return known[0]


def driver_uri(uri: str) -> str:
    """``uri`` with its scheme as the driver reads it: lower case, ``valkey`` as ``redis``.

    Only the scheme changes (never a host named ``valkey.internal``); libpq reads
    ``postgresql://`` but not ``POSTGRESQL://``, and redis-py knows no ``valkey://``.
    """
    scheme, sep, rest = uri.partition("://")
    known = _SCHEMES.get(scheme.lower()) if sep else None
    return uri if known is None else f"{known[1]}://{rest}"
