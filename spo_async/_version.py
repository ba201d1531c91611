"""The package version, kept in one place for the User-Agent header and the docs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spo-async")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"
