"""The emulator as a new user meets it: its --help, --json and --verbose, and the request log.

The command-line tests run ``python -m spo_async.testing`` in a subprocess with a bounded
life: start it, read its first line, talk to it over loopback, terminate it. The request
log is also checked in-process, through the ``spo_async.testing`` logger.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from spo_async.testing import DEFAULT_API_KEY, Emulator, EmulatorConfig, Fault, FaultKind
from spo_async.testing.__main__ import (
    DESCRIPTION,
    add_arguments,
    build_parser,
    config_from_args,
    main,
    serve,
)

from tests.test_emulator import REQUEST, request_with
from tests.test_emulator_runtime import Announcements

ROOT = Path(__file__).resolve().parent.parent
SUBMIT = "/302/prompt/spo/submit"
TASKS = "/302/prompt/spo/tasks/"
SECRET = "sk-live-do-not-print-me"
LIFETIME = 20.0  # the most any step with the subprocess may take, in seconds


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's options, without -h."""
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


# -- --help ---------------------------------------------------------------------------


def test_every_option_has_help_that_states_its_default() -> None:
    """Each option explains itself and says what it is when left out."""
    for action in options(build_parser()):
        assert action.help, action.option_strings
        assert "(default: " in action.help, action.option_strings


def test_help_has_no_options_or_text_foreign_to_the_emulator() -> None:
    """The help shows the emulator's description, and nothing about the service's API key."""
    text = build_parser().format_help()
    assert DESCRIPTION.split(".")[0] in " ".join(text.split())
    assert "ignored" not in text
    assert "AI302_API_KEY" not in text
    assert "--emulator" not in text


@pytest.mark.parametrize("how", ["parent", "add_arguments"])
def test_another_command_line_can_embed_the_options(how: str) -> None:
    """A sub-command built from the parser (as a parent) or add_arguments parses the same."""
    top = argparse.ArgumentParser(prog="spo-async")
    commands = top.add_subparsers(dest="command")
    if how == "parent":
        commands.add_parser("emulator", parents=[build_parser(add_help=False)])
    else:
        add_arguments(commands.add_parser("emulator", description=DESCRIPTION))
    argv = ["--port", "0", "--models", "gpt-4.1", "--json", "-v"]
    embedded = top.parse_args(["emulator", *argv])
    alone = build_parser().parse_args(argv)
    assert config_from_args(embedded) == config_from_args(alone)
    assert (embedded.json, embedded.verbose) == (True, True)


def test_models_needs_at_least_one_id(capsys: pytest.CaptureFixture[str]) -> None:
    """``--models ,`` is a usage error rather than a list that refuses every model."""
    with pytest.raises(SystemExit) as excinfo:
        main(["--models", " , "])
    assert excinfo.value.code == 2
    assert "expected comma-separated model ids" in capsys.readouterr().err


def test_a_taken_port_is_one_line_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """When the port is in use, the command says so in one line and exits 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as excinfo:
            main(["--port", str(port)])
    assert excinfo.value.code == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err


def test_help_runs_as_a_process() -> None:
    """``python -m spo_async.testing --help`` prints every option with a default, exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "spo_async.testing", "--help"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=LIFETIME,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for option in ("--models", "--json", "--verbose", "--task-id-nonce", "--round-seconds"):
        assert option in text
    assert text.count("(default: ") == len(options(build_parser()))


# -- the process: --json and --verbose --------------------------------------------------


class Server:
    """A running ``python -m spo_async.testing`` child and what it announced."""

    def __init__(self, process: asyncio.subprocess.Process, first_line: str) -> None:
        self.process = process
        self.first_line = first_line

    async def stderr_line(self) -> str:
        """Return the next line the child logs on stderr."""
        assert self.process.stderr is not None
        raw = await asyncio.wait_for(self.process.stderr.readline(), LIFETIME)
        return raw.decode()


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    """Start the emulator process with the test's arguments; terminate it afterwards."""
    argv: list[str] = request.param
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spo_async.testing", "--port", "0", *argv,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), LIFETIME)
        yield Server(process, line.decode())
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), LIFETIME)


async def exchange(
    base_url: str, key: str, body: dict[str, Any] | None = None
) -> tuple[str, list[int]]:
    """Submit ``body``, query its task and a wrong path; return the task id and statuses."""
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(base_url + SUBMIT, json=body or REQUEST, headers=headers) as r:
            task_id: str = (await r.json())["task_id"]
            statuses = [r.status]
        async with session.get(base_url + TASKS + task_id, headers=headers) as r:
            statuses.append(r.status)
        async with session.get(base_url + "/v1" + TASKS + task_id, headers=headers) as r:
            statuses.append(r.status)
    return task_id, statuses


@pytest.mark.parametrize("server", [["--json"]], indirect=True)
async def test_json_prints_one_object_with_the_address(server: Server) -> None:
    """--json prints a single JSON line telling a script where to connect; SIGTERM exits 0."""
    facts = json.loads(server.first_line)
    assert facts["base_url"] == f"http://{facts['host']}:{facts['port']}"
    assert facts["host"] == "127.0.0.1"
    assert isinstance(facts["port"], int)
    assert facts["port"] > 0
    assert facts["pid"] == server.process.pid
    assert facts["api_key"] == DEFAULT_API_KEY
    assert facts["models"] is None
    _, statuses = await exchange(facts["base_url"], facts["api_key"])
    assert statuses[:2] == [200, 200]
    server.process.terminate()
    assert await asyncio.wait_for(server.process.wait(), LIFETIME) == 0


@pytest.mark.parametrize(
    "server", [["--json", "--verbose", "--api-key", SECRET, "--models", "gpt-4o"]], indirect=True
)
async def test_verbose_logs_each_request_without_the_key(server: Server) -> None:
    """--verbose logs one stderr line per request, with its outcome but never the API key."""
    facts = json.loads(server.first_line)
    assert facts["api_key"] is None
    assert facts["models"] == ["gpt-4o"]
    task_id, statuses = await exchange(facts["base_url"], SECRET, request_with(model="gpt-4o"))
    assert statuses == [200, 200, 404]
    submit, query, wrong = [await server.stderr_line() for _ in range(3)]
    assert f"POST {SUBMIT} -> 200 in " in submit
    assert f"task={task_id}" in submit
    assert "model='gpt-4o'" in submit
    assert f"GET {TASKS}{task_id} -> 200 in " in query
    assert f"task={task_id}" in query
    assert "-> 404" in wrong
    assert "no such endpoint" in wrong
    for line in (submit, query, wrong):
        assert "auth=Bearer <redacted>" in line
        assert " ms" in line
    server.process.terminate()
    _, rest = await asyncio.wait_for(server.process.communicate(), LIFETIME)
    assert SECRET not in server.first_line + submit + query + wrong + rest.decode()


async def test_text_line_hides_a_key_given_on_the_command_line() -> None:
    """The 'serving on' line names the default key, but never one the user passed in."""
    stop, out = asyncio.Event(), Announcements()
    config = EmulatorConfig(api_keys={SECRET})
    task = asyncio.create_task(serve(config, stop=stop, out=out))
    await asyncio.wait_for(out.written.wait(), LIFETIME)
    stop.set()
    await asyncio.wait_for(task, LIFETIME)
    line = out.getvalue()
    assert line.startswith("serving on http://127.0.0.1:")
    assert SECRET not in line
    assert "the one given with --api-key" in line


# -- the request log in-process ---------------------------------------------------------


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    """The emulator of the in-process tests: it logs, and accepts only SECRET."""
    return EmulatorConfig(log_requests=True, api_keys={SECRET})


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The request log's lines so far."""
    return [r.getMessage() for r in caplog.records if r.name == "spo_async.testing"]


async def test_the_log_names_the_fault_and_the_refusal(
    emu: Emulator, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A dropped submit logs 'dropped' and the fault; a refused one logs the service's reason."""
    caplog.set_level(logging.INFO, logger="spo_async.testing")
    url, headers = emu.base_url + SUBMIT, {"Authorization": f"Bearer {SECRET}"}
    async with session.post(url, json=REQUEST, headers=headers) as resp:
        task_id = (await resp.json())["task_id"]
    async with session.get(emu.base_url + TASKS + task_id, headers=headers):
        pass
    emu.inject(Fault(FaultKind.DROP_BEFORE, endpoint="submit", times=1))
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        async with session.post(url, json=REQUEST, headers=headers):
            pass
    async with session.post(url, json=request_with(qa=[]), headers=headers):
        pass
    async with session.post(url, json=REQUEST):
        pass
    submitted, queried, dropped, invalid, anonymous = messages(caplog)
    assert submitted.startswith(f"POST {SUBMIT} -> 200 in ")
    assert f"task={task_id}" in submitted
    assert queried.startswith(f"GET {TASKS}{task_id} -> 200 in ")
    assert dropped.startswith(f"POST {SUBMIT} -> dropped in ")
    assert "fault=drop_before" in dropped
    assert "task=" not in dropped
    assert invalid.startswith(f"POST {SUBMIT} -> 400 in ")
    assert "error='Invalid request: qa must be a non-empty array'" in invalid
    assert anonymous.startswith(f"POST {SUBMIT} -> 401 in ")
    assert "auth=missing" in anonymous
    assert all(SECRET not in line for line in messages(caplog))


async def test_the_log_escapes_what_a_client_chose(
    emu: Emulator, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """Control characters a client sent are escaped and long paths cut: no forged lines."""
    caplog.set_level(logging.INFO, logger="spo_async.testing")
    headers = {"Authorization": f"Bearer {SECRET}"}
    body = request_with(model="gpt\n-> 200 forged", language="en\x1b[31m")
    async with session.post(emu.base_url + SUBMIT, json=body, headers=headers):
        pass
    async with session.get(emu.base_url + TASKS + "spo-%0Aforged" + "x" * 500, headers=headers):
        pass
    submit, query = messages(caplog)
    assert "\n" not in submit + query
    assert "\x1b" not in submit
    assert r"model='gpt\n-> 200 forged'" in submit
    assert "%0Aforged" in query
    assert len(query) < 400


@pytest.mark.parametrize("emulator_config", [EmulatorConfig()], indirect=False)
async def test_nothing_is_logged_unless_asked(
    emu: Emulator, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """By default the emulator logs nothing, so benchmarks pay nothing for the log."""
    caplog.set_level(logging.DEBUG, logger="spo_async.testing")
    headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
    async with session.post(emu.base_url + SUBMIT, json=REQUEST, headers=headers):
        pass
    async with session.get(emu.base_url + "/nowhere"):
        pass
    assert messages(caplog) == []
