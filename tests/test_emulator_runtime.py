"""Running the emulator outside the test's loop: in a thread, as a pytest fixture, as a CLI."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import spo_async.testing
from spo_async._sansio import is_loopback
from spo_async.testing import (
    DEFAULT_API_KEY,
    Emulator,
    EmulatorConfig,
    Fault,
    FaultKind,
    ManualClock,
    TaskOutcome,
    ThreadedEmulator,
)
from spo_async.testing.__main__ import build_parser, config_from_args, main, serve
from spo_async.testing._pytest_plugin import resolve_config, running_emulator

ROOT = Path(__file__).resolve().parent.parent
SUBMIT = "/302/prompt/spo/submit"
TASKS = "/302/prompt/spo/tasks/"
AUTH = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
REQUEST: dict[str, Any] = {
    "qa": [{"question": "Good morning", "answer": "[reply]"}],
    "prompt": "Act as the user's girlfriend",
    "max_rounds": 3,
    "model": "gpt-4o",
}


async def round_trip(base_url: str) -> tuple[int, dict[str, Any]]:
    """Submit the example request, then query its task; return the query's status and body."""
    async with aiohttp.ClientSession() as session:
        async with session.post(base_url + SUBMIT, json=REQUEST, headers=AUTH) as resp:
            task_id = (await resp.json())["task_id"]
        async with session.get(base_url + TASKS + task_id, headers=AUTH) as resp:
            return resp.status, await resp.json()


def test_public_names_are_exported_and_sorted() -> None:
    """The testing package exports its public API in a sorted __all__."""
    names = spo_async.testing.__all__
    assert names == sorted(names)
    assert {"Emulator", "EmulatorConfig", "Fault", "FaultKind", "TaskOutcome"} <= set(names)
    assert {"ThreadedEmulator", "DEFAULT_API_KEY", "SubmitRecord", "ManualClock"} <= set(names)
    assert all(hasattr(spo_async.testing, name) for name in names)
    assert set(names) <= set(dir(spo_async.testing))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = spo_async.testing.Nope


# -- ThreadedEmulator ---------------------------------------------------------------------


def test_threaded_emulator_serves_sync_code_on_its_own_loop() -> None:
    """From sync code, a ThreadedEmulator answers requests made on a separate asyncio.run."""
    clock = ManualClock()
    with ThreadedEmulator(EmulatorConfig(clock=clock)) as emu:
        assert emu.base_url.startswith("http://127.0.0.1:")
        assert emu.api_key == DEFAULT_API_KEY
        emu.script_next(TaskOutcome(fail_at_round=2, error="scripted"))
        clock.advance(0)
        status, data = asyncio.run(round_trip(emu.base_url))
        assert status == 200
        assert data["status"] in ("processing", "success", "fail")
        assert emu.tasks_created == 1
        assert len(emu.submits) == 1
        (task_id,) = emu.tasks
        assert emu.task_gets[task_id] == 1
        assert len(emu.request_log) == 2
        clock.advance(10)
        assert emu.task_snapshot(task_id)["error"] == "scripted"
        assert emu.now() == 10
        assert emu.config.clock is clock
        emu.reset_records()
        assert emu.submits == []
    emu.close()


async def test_threaded_emulator_works_from_another_running_loop() -> None:
    """Inside an async test, the threaded emulator runs on its own loop, not the test's."""
    with ThreadedEmulator() as emu:
        assert emu.emulator is not None
        emu.inject(Fault(FaultKind.ERROR_ENVELOPE, endpoint="task", times=1))
        assert len(emu.emulator.faults) == 1
        status, data = await round_trip(emu.base_url)
        assert (status, data["error"]["err_code"]) == (500, -10003)
        assert emu.faults_fired == {FaultKind.ERROR_ENVELOPE: 1}
        emu.inject(Fault(FaultKind.DELAY, delay=0.01))
        emu.clear_faults()
        assert not emu.emulator.faults


def test_threaded_call_runs_inline_when_not_started_and_propagates_errors() -> None:
    """Before start, calls run right away; on the loop, an exception reaches the caller."""
    emu = ThreadedEmulator()
    emu.inject(Fault(FaultKind.DELAY))
    assert len(emu.emulator.faults) == 1
    with emu:
        with pytest.raises(KeyError):
            emu.task_snapshot("no-such-task")
        with pytest.raises(RuntimeError, match="already started"):
            emu.start()


def test_threaded_emulator_reports_a_failed_start() -> None:
    """A port already taken makes start() raise in the caller's thread."""
    with ThreadedEmulator() as first:
        port = int(first.base_url.rsplit(":", 1)[1])
        with pytest.raises(OSError, match="ddress already in use"):
            ThreadedEmulator(EmulatorConfig(port=port)).start()


def test_threaded_emulator_times_out_if_the_thread_never_gets_ready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """start() gives up after start_timeout when the emulator does not come up."""
    release = threading.Event()

    def stuck(self: ThreadedEmulator) -> None:
        release.wait(5)

    monkeypatch.setattr(ThreadedEmulator, "_run", stuck)
    emu = ThreadedEmulator(start_timeout=0.01)
    with pytest.raises(TimeoutError, match="did not start"):
        emu.start()
    release.set()
    emu.close()


# -- the pytest plugin ---------------------------------------------------------------------


BASE = EmulatorConfig(seed=9)


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        pytest.param(None, BASE, id="no-param-keeps-default"),
        pytest.param(EmulatorConfig(seed=1), EmulatorConfig(seed=1), id="config-replaces"),
        pytest.param(
            {"round_seconds": 0.5}, EmulatorConfig(seed=9, round_seconds=0.5), id="mapping"
        ),
    ],
)
def test_fixture_parameter_resolves_to_a_config(param: object, expected: EmulatorConfig) -> None:
    """An indirect parameter is a config, a mapping of changes, or absent."""
    assert resolve_config(param, BASE) == expected


def test_fixture_parameter_of_another_type_is_refused() -> None:
    """Anything else as a fixture parameter is a clear TypeError."""
    with pytest.raises(TypeError, match="EmulatorConfig or a mapping"):
        resolve_config(3, BASE)


def test_fixture_context_manager_yields_a_started_emulator() -> None:
    """The fixture's context manager runs the configured emulator and closes it afterwards."""
    with running_emulator({"seed": 4}) as emu:
        assert emu.config.seed == 4
        status, _ = asyncio.run(round_trip(emu.base_url))
        assert status == 200
    with pytest.raises(RuntimeError, match="not running"):
        _ = emu.base_url


def test_spo_emulator_fixture_yields_a_running_emulator(spo_emulator: ThreadedEmulator) -> None:
    """The installed plugin's fixture gives each test a started threaded emulator."""
    status, _ = asyncio.run(round_trip(spo_emulator.base_url))
    assert status == 200
    assert spo_emulator.tasks_created == 1


@pytest.mark.parametrize("spo_emulator", [{"seed": 13}], indirect=True)
def test_spo_emulator_fixture_takes_an_indirect_parameter(spo_emulator: ThreadedEmulator) -> None:
    """An indirect mapping parameter changes the fixture's config."""
    assert spo_emulator.config.seed == 13


def test_fixture_works_in_a_real_pytest_run(tmp_path: Path) -> None:
    """A pytest session loading the plugin gets spo_emulator, overridable and parametrizable."""
    test_file = tmp_path / "test_fixture_use.py"
    test_file.write_text(
        textwrap.dedent(
            """
            import asyncio
            import aiohttp
            import pytest
            from spo_async.testing import EmulatorConfig

            @pytest.fixture
            def spo_emulator_config():
                return EmulatorConfig(seed=21)

            def test_default(spo_emulator):
                assert spo_emulator.config.seed == 21

                async def go():
                    url = spo_emulator.base_url + "/302/prompt/spo/tasks/x"
                    headers = {"Authorization": "Bearer " + spo_emulator.api_key}
                    async with aiohttp.ClientSession() as s:
                        async with s.get(url, headers=headers) as r:
                            return r.status
                assert asyncio.run(go()) == 404

            @pytest.mark.parametrize("spo_emulator", [{"queue_seconds": 2.0}], indirect=True)
            def test_indirect(spo_emulator):
                assert spo_emulator.config.queue_seconds == 2.0
                assert spo_emulator.config.seed == 21
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = subprocess.run(  # noqa: S603 - our own interpreter and test file
        [sys.executable, "-m", "pytest", "-p", "spo_async.testing._pytest_plugin", "-q",
         "-p", "no:cacheprovider", "-W", "error", str(test_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


# -- the command line --------------------------------------------------------------------


def test_parser_defaults_build_the_default_config() -> None:
    """With no options the CLI serves the default config on 127.0.0.1:8302."""
    args = build_parser().parse_args([])
    config = config_from_args(args)
    assert (config.host, config.port) == ("127.0.0.1", 8302)
    assert config.api_keys == {DEFAULT_API_KEY}
    assert config.faults == ()
    assert config.round_seconds == EmulatorConfig().round_seconds
    assert config.models is None
    assert config.task_id_nonce is None
    assert not config.log_requests


def test_parser_options_reach_the_config() -> None:
    """Timing, keys, models, visibility and fault rates all map onto EmulatorConfig."""
    argv = [
        "--port", "0", "--round-seconds", "2", "--queue-seconds", "1", "--jitter", "0.3",
        "--seed", "4", "--time-scale", "0.5", "--win-probability", "0.7",
        "--api-key", "sk-1", "--api-key", "sk-2", "--broke-key", "sk-0",
        "--models", "my-model, gpt-4o", "--models", "o3", "--task-id-nonce", "n1", "--verbose",
        "--hide-best-while-processing", "--show-running-round",
        "--fault-rate-429", "0.05", "--retry-after", "3", "--fault-rate-5xx", "0.1",
        "--fault-rate-drop", "0.01",
    ]  # fmt: skip
    config = config_from_args(build_parser().parse_args(argv))
    assert (config.port, config.round_seconds, config.queue_seconds) == (0, 2.0, 1.0)
    assert (config.jitter, config.seed, config.time_scale, config.win_probability) == (
        0.3,
        4,
        0.5,
        0.7,
    )
    assert config.api_keys == {"sk-1", "sk-2"}
    assert config.insufficient_balance_keys == {"sk-0"}
    assert config.models == frozenset({"my-model", "gpt-4o", "o3"})
    assert config.task_id_nonce == "n1"
    assert config.log_requests
    assert not config.expose_best_while_processing
    assert config.show_running_round
    kinds = [(f.kind, f.probability) for f in config.faults]
    assert kinds == [
        (FaultKind.RATE_LIMIT, 0.05),
        (FaultKind.SERVER_ERROR_HTML, 0.1),
        (FaultKind.DROP_BEFORE, 0.01),
    ]
    assert config.faults[0].retry_after_value() == "3"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),  # noqa: S104
     ("192.168.1.4", False), ("example.com", False)],
    ids=["ipv4", "ipv6", "localhost", "any", "lan", "name"],
)  # fmt: skip
def test_loopback_detection(host: str, loopback: bool) -> None:
    """Only addresses of this machine count as loopback."""
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--host", "0.0.0.0"], id="remote-host"),  # noqa: S104
        pytest.param(["--jitter", "2"], id="impossible-jitter"),
    ],
)
def test_cli_refuses_unsafe_or_impossible_settings(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A non-loopback host without --allow-remote, or a bad value, exits with status 2."""
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    assert "error" in capsys.readouterr().err


class Announcements(io.StringIO):
    """A text buffer that signals when something was written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        self.written.set()
        return super().write(text)


async def test_serve_prints_the_url_and_key_and_stops_on_request() -> None:
    """serve() announces where it listens and returns once its stop event is set."""
    stop = asyncio.Event()
    out = Announcements()
    task = asyncio.create_task(serve(EmulatorConfig(), stop=stop, out=out))
    await asyncio.wait_for(out.written.wait(), 5)
    line = out.getvalue().strip()
    assert line.startswith("serving on http://127.0.0.1:")
    assert line.endswith(f"(api key: {DEFAULT_API_KEY})")
    base_url = line.split()[2]
    status, _ = await round_trip(base_url)
    assert status == 200
    stop.set()
    await asyncio.wait_for(task, 5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_main_serves_until_interrupted(capsys: pytest.CaptureFixture[str]) -> None:
    """main() serves until SIGINT arrives, then returns 0."""
    port = free_port()

    def interrupt_when_listening() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    helper = threading.Thread(target=interrupt_when_listening)
    helper.start()
    try:
        assert main(["--port", str(port)]) == 0
    finally:
        helper.join()
    assert f"serving on http://127.0.0.1:{port}" in capsys.readouterr().out


async def test_module_runs_as_a_server_process() -> None:
    """``python -m spo_async.testing`` serves on a free port until terminated."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spo_async.testing", "--port", "0", "--round-seconds", "0.01",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line.startswith("serving on http://127.0.0.1:"), line
        status, _ = await round_trip(line.split()[2])
        assert status == 200
    finally:
        process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, stderr.decode()


async def test_emulator_and_threaded_emulator_share_one_behaviour() -> None:
    """The same config gives the same task in-loop and threaded (one seed, one simulation)."""
    clock = ManualClock()
    config = EmulatorConfig(clock=clock, task_id_nonce="shared")
    async with Emulator(config) as emu:
        await round_trip(emu.base_url)
    with ThreadedEmulator(config) as threaded:
        await round_trip(threaded.base_url)
    (in_loop,), (in_thread,) = emu.tasks.values(), threaded.tasks.values()
    assert in_loop.task_id == in_thread.task_id
    assert in_loop.rounds == in_thread.rounds
