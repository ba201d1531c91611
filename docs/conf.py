"""Sphinx configuration of the spo-async documentation.

Build it with ``nox -s docs``, or directly::

    sphinx-build -W --keep-going -n -b html docs docs/_build/html

Everything is generated offline: no intersphinx, no external binaries. The
lifecycle diagram, the error tree and the CLI reference are produced at build
time from the package itself by ``docs/_ext/spo_docs.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
# Document the package of this checkout, even where another copy is installed.
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE / "_ext"))

import spo_async  # noqa: E402

project = "spo-async"
author = "spo-async developers"
copyright = "spo-async developers"
release = spo_async.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "spo_docs",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
# Keep "--flag" and quotes as typed: the pages are full of command lines.
smartquotes = False
exclude_patterns = ["_build"]
templates_path: list[str] = []

# -- MyST ----------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist", "fieldlist"]
myst_heading_anchors = 3

# -- autodoc -------------------------------------------------------------------------------
# Types and defaults go in the signature, where a reader looks for them: every parameter
# with its type and its real default value (not the name of a constant). attrs classes
# need the values: their generated ``__init__`` spells defaults as ``attr_dict[...]``.
autodoc_typehints = "signature"
autodoc_preserve_defaults = False
autodoc_member_order = "bysource"
autodoc_class_signature = "separated"
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
python_use_unqualified_type_names = True

#: The package's private type aliases, spelled out in public names. A signature shows
#: ``on_event: Callable[[Event], Any] | EventStream | None`` rather than ``OnEvent``,
#: which a reader could neither look up nor import. tests/test_docs.py checks that each
#: spelling means exactly what the alias means.
spo_type_aliases = {
    "BatchKey": "str | int",
    "EventCallback": "collections.abc.Callable[[spo_async.Event], typing.Any]",
    "OnEvent": (
        "collections.abc.Callable[[spo_async.Event], typing.Any] | spo_async.EventStream | None"
    ),
    "ScheduleLike": (
        "spo_async.polling.PollSchedule"
        " | collections.abc.Callable[[spo_async.polling.PollState], float]"
    ),
    "PollModeLike": "spo_async.polling.PollMode | typing.Literal['progress', 'completion']",
    "KeyFunction": "collections.abc.Callable[[spo_async.OptimizationRequest], str | int]",
    "BatchInput": (
        "collections.abc.Iterable[spo_async.OptimizationRequest"
        " | tuple[str | int, spo_async.OptimizationRequest]]"
        " | collections.abc.Mapping[str, spo_async.OptimizationRequest]"
        " | collections.abc.Mapping[int, spo_async.OptimizationRequest]"
        " | collections.abc.Mapping[str | int, spo_async.OptimizationRequest]"
    ),
}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = False

# -- cross-references ----------------------------------------------------------------------
nitpicky = True
# No intersphinx (the build must work offline), so references into the standard
# library and third-party packages cannot resolve; references to spo_async's own
# names are still checked. Private helpers that appear in public signatures are
# listed one by one, each with the public name a reader should look at instead.
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(aiohttp|tenacity|attrs|attr|cattrs|asyncio|collections|typing|typing_extensions|os"
        r"|random|ssl|argparse|pathlib|enum|datetime|types|logging|sqlite3|contextlib|io"
        r"|pytest|_pytest|threading|concurrent|http|json|rich|time)(\..*)?",
    ),
    # Names the standard library documents but Python's domain does not know offline.
    (r"py:.*", r"(Self|TracebackType|Final|Any|TypeAlias|ExceptionGroup|BaseException)"),
    # Type variables of generic helpers.
    (r"py:class", r"spo_async(\.\w+)*\._?T"),
]
# ``timeout: float | Unset | None = UNSET``: a per-call option left to the client's setting.
# The sentinel is private (never passed by a caller); the client's page says what it means.
nitpick_ignore = [("py:class", "Unset"), ("py:class", "spo_async._core.Unset")]

# -- HTML ----------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"spo-async {release}"
html_static_path = ["_static"]
html_show_sourcelink = False
