"""Every check the project runs, as nox sessions.

``nox -s check`` is what CI and the README run: lint, types, the whole test
suite with coverage and the docs build, in the current environment (no new virtualenv), so one
command works on a fresh machine with only Python 3.11 and pip. ``nox -s tests``
runs the suite on every supported Python found on the machine.
"""

from __future__ import annotations

import sys

import nox

nox.options.sessions = ["check"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.11", "3.12", "3.13"]
COVERAGE_FLOOR = 95
DOCS_BUILD = ("-m", "sphinx", "-W", "--keep-going", "-n", "-b", "html", "docs", "docs/_build/html")


def _python(session: nox.Session) -> str:
    """The interpreter to run tools with: the session's, or nox's own in ``check``.

    ``check`` runs in the environment nox itself was started from, which need not
    be on PATH (``.venv/bin/python -m nox``), so tools run as ``python -m TOOL``.
    """
    return "python" if session.venv_backend != "none" else sys.executable


def _lint(session: nox.Session) -> None:
    session.run(_python(session), "-m", "ruff", "check", ".")
    session.run(_python(session), "-m", "ruff", "format", "--check", ".")


def _typing(session: nox.Session) -> None:
    session.run(_python(session), "-m", "mypy")


def _tests(session: nox.Session) -> None:
    # coverage starts before pytest so that it also measures what the pytest11 entry
    # point (the emulator's fixture plugin) imports before any test runs.
    python = _python(session)
    session.run(python, "-m", "coverage", "erase")
    session.run(python, "-m", "coverage", "run", "-m", "pytest", *session.posargs)
    session.run(python, "-m", "coverage", "combine", "--quiet")
    session.run(python, "-m", "coverage", "report", f"--fail-under={COVERAGE_FLOOR}")


@nox.session(venv_backend="none")
def check(session: nox.Session) -> None:
    """Lint, type-check, test and build the docs in the current environment (what CI runs)."""
    _lint(session)
    _typing(session)
    _tests(session)
    session.run(_python(session), *DOCS_BUILD)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site, warnings as errors."""
    session.install("-e", ".[docs]")
    session.run(_python(session), *DOCS_BUILD)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint rules and formatting."""
    session.install("-e", ".[lint]")
    _lint(session)


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and the typing examples."""
    session.install("-e", ".[test,lint]")
    _typing(session)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite on each supported Python that is installed."""
    session.install("-e", ".[test]")
    _tests(session)
