"""The documentation is tested like code: what a reader copies from it works.

* Every ```python block of every page in ``docs/`` runs, in page order, with one
  namespace per page (Sybil parses the MyST source). Blocks that need a real API
  key or a package the project does not install are skipped with a visible
  reason (``% skip: next "..."``), never silently.
* Every ```console block runs in a shell: each ``$ command`` must exit with 0,
  and the output shown under it must match (``...`` matches anything).
  ``spo-async`` is the command line of the checkout under test; commands run in a
  fresh directory that links to the checkout's ``docs/`` and ``examples/``.
* A ```{code-block} with a file name as ``:caption:`` (``settings.yaml``) is
  written to the page's working directory, for the commands after it.
* Every script in ``examples/`` and ``docs/examples/`` runs as a program (here, or
  in the page whose console block runs it and shows its output), and every
  ``docs/examples/test_*.py`` runs under pytest, as a user would run them.
* The reference covers the whole public API, the error tree drawn in
  ``spo_async._errors`` matches the classes, and the CLI reference covers every
  sub-command.

Everything runs against the emulator on loopback: no API key, no network.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib.util
import inspect
import os
import re
import shlex
import subprocess
import sys
import textwrap
import unittest
from collections.abc import Iterator
from pathlib import Path

import pytest
import spo_async
import spo_async.polling
import spo_async.testing
import spo_async.transport
from spo_async._logging import ENV_VAR as LOG_ENV_VAR
from spo_async._settings import API_KEY_ENV_VARS, BASE_URL_ENV_VAR
from sybil import Document, Example, Region, Sybil
from sybil.parsers.myst import CodeBlockParser, PythonCodeBlockParser, SkipParser
from sybil.parsers.myst.lexers import DirectiveLexer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
DOC_EXAMPLES = DOCS / "examples"

#: The variables that would point an example at the real service; tests clear them.
SERVICE_ENV = (*API_KEY_ENV_VARS, BASE_URL_ENV_VAR, LOG_ENV_VAR)
SCRIPT_TIMEOUT = 60
_HAS_CLI_EXTRA = all(importlib.util.find_spec(name) for name in ("rich", "yaml"))
COMMAND_TIMEOUT = 60


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)


def _scripts(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith(("test_", "_")))


def _id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "100"
    env["NO_COLOR"] = "1"
    return env


# -- parsers for the blocks that are not Python -------------------------------------------


_FILE_NAME = re.compile(r"^[\w.-]+\.[A-Za-z0-9]+$")


class FileParser:
    """```{code-block} LANG with ``:caption: NAME``: write the block to ``NAME`` in the cwd."""

    def __init__(self) -> None:
        self.lexer = DirectiveLexer(directive=r"code-block", arguments=r".+")

    def __call__(self, document: Document) -> Iterator[Region]:
        for region in self.lexer(document):
            language = region.lexemes["arguments"].strip()
            caption = str(region.lexemes.get("options", {}).get("caption", ""))
            if language in {"python", "console"} or not _FILE_NAME.match(caption):
                continue
            region.parsed = (caption, str(region.lexemes["source"]))
            region.evaluator = self.evaluate
            yield region

    @staticmethod
    def evaluate(example: Example) -> None:
        name, text = example.parsed
        Path(name).write_text(text, encoding="utf-8")


class ConsoleEvaluator:
    """Run each ``$ command`` of a console block in bash; compare its output when shown."""

    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

    @staticmethod
    def commands(text: str) -> list[tuple[str, str]]:
        """Split a console block into (command, expected output) pairs."""
        pairs: list[tuple[str, str]] = []
        lines = text.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if not line.startswith("$ "):
                i += 1
                continue
            command = line[2:]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            output: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith("$ "):
                output.append(lines[i])
                i += 1
            pairs.append((command, "\n".join(output).strip("\n")))
        return pairs

    def __call__(self, example: Example) -> str | None:
        if "spo-async" in str(example.parsed) and not _HAS_CLI_EXTRA:
            pytest.skip("the spo-async command needs the cli extra (rich, PyYAML)")
        for command, expected in self.commands(str(example.parsed)):
            try:
                done = subprocess.run(  # noqa: S603 - the docs' own commands
                    ["bash", "-c", command],  # noqa: S607
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,  # interleaved, as on a terminal
                    text=True,
                    env=_clean_env(),
                    timeout=COMMAND_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return f"$ {command}\ntimed out after {COMMAND_TIMEOUT} s"
            got = done.stdout
            if done.returncode != 0:
                return f"$ {command}\nexited with {done.returncode}:\n{got}"
            if expected and not self.checker.check_output(expected + "\n", got, self.flags):
                return f"$ {command}\nexpected:\n{expected}\ngot:\n{got}"
        return None


SYBIL = Sybil(
    parsers=[
        PythonCodeBlockParser(doctest_optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE),
        CodeBlockParser(language="console", evaluator=ConsoleEvaluator()),
        FileParser(),
        SkipParser(),
    ],
    path=str(DOCS),
    patterns=["*.md", "**/*.md"],
)


class PageRun:
    """One page's examples, evaluated in order in one namespace and one directory."""

    def __init__(self, page: Path) -> None:
        self.page = page
        self.document = SYBIL.parse(page)
        self.document.namespace["__name__"] = "__main__"
        self.examples = list(self.document.examples())
        self.evaluated = 0
        self.cwd: Path | None = None

    def directory(self, factory: pytest.TempPathFactory) -> Path:
        """The page's working directory, linking to the checkout's docs/ and examples/."""
        if self.cwd is None:
            self.cwd = factory.mktemp(self.page.stem)
            for folder in (DOCS, EXAMPLES):
                (self.cwd / folder.name).symlink_to(folder, target_is_directory=True)
        return self.cwd

    def evaluate(self, index: int) -> None:
        """Evaluate example ``index``, after any earlier one not run yet (as under ``-k``)."""
        while self.evaluated < index:
            with contextlib.suppress(unittest.SkipTest):
                self.examples[self.evaluated].evaluate()
            self.evaluated += 1
        example = self.examples[index]
        self.evaluated = index + 1
        try:
            example.evaluate()
        except unittest.SkipTest as skip:
            pytest.skip(f"{_id(self.page)}, line {example.line}: {skip}")
        except Exception as exc:
            exc.add_note(f"in the example at {_id(self.page)}, line {example.line}")
            raise


RUNS = {page: PageRun(page) for page in _pages()}


def _example_params() -> list[object]:
    return [
        pytest.param(page, index, id=f"{_id(page)}:{example.line}")
        for page, run in RUNS.items()
        for index, example in enumerate(run.examples)
    ]


@pytest.fixture(scope="module")
def shims(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bin directory where ``spo-async`` and ``python`` are this checkout's."""
    folder = tmp_path_factory.mktemp("bin")
    for name, target in (("spo-async", "-m spo_async"), ("python", "")):
        shim = folder / name
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {target} "$@"\n')
        shim.chmod(0o755)
    return folder


# -- the pages ----------------------------------------------------------------------------


@pytest.mark.parametrize(("page", "index"), _example_params())
def test_doc_example(
    page: Path,
    index: int,
    shims: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The code block runs (after the page's earlier ones) and matches the output it shows."""
    run = RUNS[page]
    for name in SERVICE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", os.pathsep.join([str(shims), os.environ.get("PATH", "")]))
    monkeypatch.chdir(run.directory(tmp_path_factory))
    run.evaluate(index)


def _run_by_pages() -> set[Path]:
    """Scripts a page's console block already runs (``$ python docs/examples/x.py``)."""
    found = set()
    for page in _pages():
        for name in re.findall(r"^\$ python (\S+\.py)\b", page.read_text(), re.MULTILINE):
            found.add((ROOT / name).resolve())
    return found


@pytest.mark.parametrize(
    "script",
    [p for p in _scripts(EXAMPLES) + _scripts(DOC_EXAMPLES) if p.resolve() not in _run_by_pages()],
    ids=_id,
)
def test_example_script_runs(script: Path, tmp_path: Path) -> None:
    """The script runs to the end against the emulator, without a traceback or a warning."""
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_clean_env(),
        timeout=SCRIPT_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{_id(script)} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("test_file", sorted(DOC_EXAMPLES.glob("test_*.py")), ids=_id)
def test_example_test_file_passes(test_file: Path, tmp_path: Path) -> None:
    """The docs' example test module passes under pytest, in a project of its own."""
    copy = tmp_path / test_file.name
    copy.write_text(test_file.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings =\n    error\n",
        encoding="utf-8",
    )
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", copy.name],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_clean_env(),
        timeout=SCRIPT_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{_id(test_file)} failed:\n{done.stdout}\n{done.stderr}"
    assert " passed" in done.stdout


# -- the reference is complete ------------------------------------------------------------

_DIRECTIVE = re.compile(
    r"^\s*\.\. (?:auto(?:class|exception|function|data)|py:(?:class|exception|function|data|type))"
    r"::\s+(?P<name>[\w.]+)",
    re.MULTILINE,
)


def _documented(page: Path) -> set[str]:
    return {m["name"].rsplit(".", 1)[-1] for m in _DIRECTIVE.finditer(page.read_text())}


def test_reference_documents_every_public_name() -> None:
    """Each name in a public module's ``__all__`` has its entry in the reference."""
    reference = DOCS / "reference"
    testing_page = reference / "testing.md"
    core = set().union(*(_documented(p) for p in reference.glob("*.md") if p != testing_page))
    for module in (spo_async, spo_async.polling, spo_async.transport):
        missing = set(module.__all__) - core
        assert not missing, f"{module.__name__}: not in docs/reference: {sorted(missing)}"
    missing_testing = set(spo_async.testing.__all__) - _documented(testing_page)
    assert not missing_testing, f"not in docs/reference/testing.md: {sorted(missing_testing)}"


def _drawn_tree() -> dict[str, str | None]:
    """The tree drawn in ``spo_async._errors``'s docstring: each class's parent."""
    doc = inspect.getdoc(sys.modules["spo_async._errors"]) or ""
    parents: dict[str, str | None] = {}
    path: list[str] = []
    base: int | None = None
    for line in doc.splitlines():
        match = re.match(r"^(?P<lead>[ │├└─]*)(?P<name>[A-Z]\w+Error)\b", line)
        if match is None:
            continue
        if match["name"] == "SPOError" and base is None:
            base = len(match["lead"])
        if base is None:
            continue
        depth = (len(match["lead"]) - base) // 4
        del path[depth:]
        parents[match["name"]] = path[-1] if path else None
        path.append(match["name"])
    return parents


def _real_tree() -> dict[str, str | None]:
    """Each public exception's parent among the public exceptions."""
    public = [getattr(spo_async, n) for n in spo_async.__all__]
    errors = [c for c in public if inspect.isclass(c) and issubclass(c, spo_async.SPOError)]
    parents: dict[str, str | None] = {}
    for cls in errors:
        bases = [b for b in cls.__mro__[1:] if b in errors]
        parents[cls.__name__] = bases[0].__name__ if bases else None
    return parents


def test_drawn_error_tree_matches_the_classes() -> None:
    """The tree in ``_errors``'s docstring has every public error, under its real parent."""
    assert _drawn_tree() == _real_tree()


def test_type_aliases_are_spelled_as_they_mean() -> None:
    """Each private alias the reference spells out in public names means exactly that."""
    import collections.abc
    import runpy
    import typing

    from spo_async import _batch, _client, _events, _schedules, _stream

    spelled: dict[str, str] = runpy.run_path(str(DOCS / "conf.py"))["spo_type_aliases"]
    private: dict[str, object] = {}
    for module in (_events, _stream, _schedules, _batch, _client):
        private.update(vars(module))
    public = {"collections": collections, "typing": typing, "spo_async": spo_async}
    for name, spelling in spelled.items():
        meaning = private[name]
        if isinstance(meaning, str):  # an alias written as a string, for the type checker
            meaning = eval(meaning, private)  # noqa: S307 - the package's own annotation
        assert eval(spelling, public) == meaning, name  # noqa: S307 - docs/conf.py's text


@pytest.mark.skipif(not _HAS_CLI_EXTRA, reason="the command line needs the cli extra")
def test_cli_reference_covers_every_command() -> None:
    """docs/reference/cli.md has a generated section for every ``spo-async`` sub-command."""
    from spo_async.cli._parser import build_parser

    parser = build_parser()
    commands: set[str] = set()
    for action in parser._actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            commands |= set(choices)
    page = (DOCS / "reference" / "cli.md").read_text()
    shown = set(re.findall(r"^```\{spo-cli\} spo-async (\S+)$", page, re.MULTILINE))
    assert commands == shown


def test_console_blocks_are_split_into_commands() -> None:
    """The console parser keeps each command with the output shown under it."""
    text = textwrap.dedent(
        """\
        $ echo one \\
            two
        one two
        $ true
        """
    )
    assert ConsoleEvaluator.commands(text) == [("echo one  two", "one two"), ("true", "")]


# -- every public item says what it is for -------------------------------------------------


def _public_items() -> Iterator[tuple[str, object]]:
    """Every public class and function, and every public method and property of the classes.

    Ruff's pydocstyle rules skip members of underscore modules, and this package
    defines everything in underscore modules and exports it: so the check is here.
    """
    for package in (spo_async, spo_async.polling, spo_async.transport, spo_async.testing):
        for name in package.__all__:
            value = getattr(package, name)
            if not (inspect.isclass(value) or inspect.isfunction(value)):
                continue
            yield f"{package.__name__}.{name}", value
            if not inspect.isclass(value):
                continue
            for member, attribute in vars(value).items():
                if member.startswith("_"):
                    continue
                if isinstance(
                    attribute, property | classmethod | staticmethod
                ) or inspect.isfunction(attribute):
                    yield f"{package.__name__}.{name}.{member}", attribute


def test_every_public_item_has_a_docstring() -> None:
    """Each public class, function, method and property of the API has a docstring."""
    missing = [
        name for name, item in _public_items() if not (getattr(item, "__doc__", None) or "").strip()
    ]
    assert not missing, f"no docstring: {missing}"
