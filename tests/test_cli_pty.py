"""``spo-async optimize --emulator`` on a terminal: a live view, then the best prompt last.

The command runs under a pseudo-terminal (TERM=xterm, COLUMNS=100), as in a user's
shell. A ``--json`` run of the same deterministic emulator, started alongside, says
which prompt must end the screen; a run with ``NO_COLOR`` set must draw no colour and
no animation.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time

import pytest
from spo_async.testing import EmulatorConfig, ThreadedEmulator

from tests.cli_helpers import EXAMPLES, ROOT, cli, cli_env, run_cli, sigint_not_ignored, strip_ansi

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs a pseudo-terminal")

#: An SGR sequence that sets a foreground colour (30-38, 90-97).
COLOUR = re.compile(r"\x1b\[(?:[\d;]*;)?(?:3[0-8]|9[0-7])(?:;[\d;]*)?m")
SETTINGS = str(EXAMPLES / "girlfriend.yaml")
ARGS = ("optimize", "--emulator", "--emulator-round-seconds", "0.15", SETTINGS)


@pytest.fixture
def spo_emulator_config() -> EmulatorConfig:
    return EmulatorConfig(round_seconds=0.4, seed=3)


class Terminal:
    """A command running on a fresh pseudo-terminal; :meth:`read_all` collects its screen."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.master, slave = os.openpty()
        extra = {"TERM": "xterm", "COLUMNS": "100", "LINES": "40", **(env or {})}
        with sigint_not_ignored():  # Ctrl-C must reach it even from a background test run
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                cli(*args), stdin=slave, stdout=slave, stderr=slave, env=cli_env(extra), cwd=ROOT
            )
        os.close(slave)

    def read_all(self, timeout: float = 12.0, interrupt_at: bytes | None = None) -> bytes:
        """Everything written until the command exits (and the terminal closes).

        With ``interrupt_at``, Ctrl-C (SIGINT) is sent once those bytes have appeared.
        """
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        try:
            while time.monotonic() < deadline:
                if interrupt_at is not None and interrupt_at in b"".join(chunks):
                    self.process.send_signal(signal.SIGINT)
                    interrupt_at = None
                ready, _, _ = select.select([self.master], [], [], 0.1)
                if not ready:
                    continue
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the other side closed
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            else:
                pytest.fail("the command did not finish in time")
        finally:
            self.process.kill()
            self.process.wait(5)
            os.close(self.master)
        return b"".join(chunks)


def test_optimize_on_a_terminal_shows_a_live_view_and_ends_with_the_best_prompt() -> None:
    terminal = Terminal(*ARGS)
    plain = Terminal(*ARGS, env={"NO_COLOR": "1"})
    expected = run_cli(*ARGS, "--json")

    screen = terminal.read_all()
    no_color = plain.read_all()

    assert terminal.process.returncode == 0
    assert expected.returncode == 0, expected.stderr
    best = json.loads(expected.stdout)["best_prompt"]
    text = screen.decode("utf-8", errors="replace")
    assert "\x1b[?25l" in text  # the live view hides the cursor while it redraws
    assert "best prompt so far" in text
    assert "processing" in text
    assert "round 3/5" in text
    assert COLOUR.search(text)
    lines = strip_ansi(text).replace("\r\n", "\n").rstrip().splitlines()
    assert "\n".join(lines[-len(best.splitlines()) :]) == best
    assert lines[-len(best.splitlines()) - 1].startswith("best prompt (round ")

    assert plain.process.returncode == 0
    calm = no_color.decode("utf-8", errors="replace")
    assert not COLOUR.search(calm)  # bold and italic may stay: NO_COLOR is about colour
    assert "best prompt so far" not in calm  # no live view: plain progress lines instead
    assert "round 1/5: original" in calm
    assert calm.replace("\r\n", "\n").rstrip().endswith(best)


def test_ctrl_c_keeps_the_rounds_on_screen_then_says_how_to_resume(
    spo_emulator: ThreadedEmulator,
) -> None:
    """The live view's last frame stays (it is not cleared), then the resume hint follows."""
    args = ("optimize", SETTINGS, "--base-url", spo_emulator.base_url, "--poll-interval", "0.05")
    terminal = Terminal(*args, env={"AI302_API_KEY": spo_emulator.api_key})

    screen = terminal.read_all(interrupt_at=b"round 2/5").decode("utf-8", errors="replace")

    assert terminal.process.returncode == 130
    # The last redraw erases the previous frame and draws the final one; nothing erases
    # that one: what follows it is the frame itself and the messages.
    last = strip_ansi(screen.rsplit("\x1b[2K", 1)[1])
    assert "stopped" in last
    assert "original" in last  # round 1's row is still on screen
    assert "best prompt so far" in last
    [record] = spo_emulator.submits
    assert f"task {record.task_id} keeps running on the service; resume with:" in last
    assert f"spo-async wait {record.task_id} --base-url {spo_emulator.base_url}" in last
    assert "Traceback" not in screen
