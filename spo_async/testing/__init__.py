"""A faithful, scriptable emulator of 302.AI's hosted SPO API, for tests and benchmarks.

It serves ``POST /302/prompt/spo/submit`` and ``GET /302/prompt/spo/tasks/{task_id}``
over real HTTP on loopback, validates submits like the service, runs every task through
``queue`` -> ``processing`` -> ``success``/``fail`` with rounds judged by four seeded
votes and written in the request's ``language``, and injects the faults a real
deployment shows (429s, HTML 5xx pages, dropped connections, slow or mangled answers).
It accepts any model id unless ``EmulatorConfig.models`` lists the allowed ones, and
with ``log_requests=True`` logs one line per request on the ``spo_async.testing``
logger. Three ways to use it:

1. Inside async code, on the running loop::

       async with Emulator(EmulatorConfig(round_seconds=0.01)) as emu:
           client = AsyncSPOClient(api_key=emu.api_key, base_url=emu.base_url)

2. From sync code or any other event loop, in a thread: ``with ThreadedEmulator() as
   emu: ...``; under pytest the ``spo_emulator`` fixture (this package's plugin) gives
   one to each test.

3. As a process: ``python -m spo_async.testing --port 8302 --round-seconds 2`` serves
   until Ctrl-C, for trying clients written in any language (``--verbose`` logs each
   request, ``--json`` prints the address as one JSON object).

Tests drive time with :class:`ManualClock`, script tasks with :class:`TaskOutcome`
(``emu.script_next(...)``), arm :class:`Fault` s (``emu.inject(...)``) and assert on the
records (``emu.submits``, ``emu.task_gets``, ``emu.request_log``, ``emu.faults_fired``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spo_async.testing._config import (
        DEFAULT_API_KEY,
        EmulatorConfig,
        ManualClock,
    )
    from spo_async.testing._emulator import Emulator, RequestRecord, SubmitRecord
    from spo_async.testing._faults import Fault, FaultKind
    from spo_async.testing._quota import QuotaGate
    from spo_async.testing._tasks import SimulatedRound, SimulatedTask, TaskOutcome, Vote
    from spo_async.testing._thread import ThreadedEmulator

__all__ = [
    "DEFAULT_API_KEY",
    "Emulator",
    "EmulatorConfig",
    "Fault",
    "FaultKind",
    "ManualClock",
    "QuotaGate",
    "RequestRecord",
    "SimulatedRound",
    "SimulatedTask",
    "SubmitRecord",
    "TaskOutcome",
    "ThreadedEmulator",
    "Vote",
]

# The pytest plugin is loaded into every pytest session of every project that installs
# spo-async, and importing it imports this package: so names load on first use
# (PEP 562), and a session that never asks for an emulator never imports aiohttp.web.
_HOMES = {
    "DEFAULT_API_KEY": "_config",
    "EmulatorConfig": "_config",
    "ManualClock": "_config",
    "Emulator": "_emulator",
    "QuotaGate": "_quota",
    "RequestRecord": "_emulator",
    "SubmitRecord": "_emulator",
    "Fault": "_faults",
    "FaultKind": "_faults",
    "SimulatedRound": "_tasks",
    "SimulatedTask": "_tasks",
    "TaskOutcome": "_tasks",
    "Vote": "_tasks",
    "ThreadedEmulator": "_thread",
}


def __getattr__(name: str) -> object:
    """Import a public name from its module the first time it is asked for."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the public names along with what is already loaded."""
    return sorted({*globals(), *__all__})
