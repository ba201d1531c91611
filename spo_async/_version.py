"""The package version, in one place: the build backend and the User-Agent header read it.

A plain string rather than ``importlib.metadata``, which would cost every
``import spo_async`` a scan of the installed distributions.
"""

__version__ = "0.1.0"
