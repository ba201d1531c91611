"""Logging: the stdlib logger "spo_async", one DEBUG line per HTTP attempt, one INFO line per retry.

``SPO_ASYNC_LOG=debug`` turns it on without code; that path is tested in a subprocess,
since it acts at import time.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator

import pytest
from spo_async import (
    AsyncSPOClient,
    Event,
    OptimizationRequest,
    QAPair,
    RetryPolicy,
    TaskRetrying,
)
from spo_async.polling import FixedSchedule
from spo_async.testing import Emulator, EmulatorConfig, Fault, FaultKind, ManualClock

from .conftest import VirtualTime, unpaced_limiter

SECRET = "sk-SECRET-7f3a9c"
SUBMIT, TASKS = "/302/prompt/spo/submit", "/302/prompt/spo/tasks/"


def make_request(prompt: str = "Summarize support tickets") -> OptimizationRequest:
    return OptimizationRequest(
        prompt=prompt,
        qa=[QAPair("Printer is on fire", "[severity][summary]")],
        model="deepseek-chat",
        max_rounds=3,
    )


@pytest.fixture
def emulator_config(clock: ManualClock) -> EmulatorConfig:
    """An emulator that accepts only the secret key, so every call must carry it.

    Its tasks run on the test's clock, which the client's own waits move on.
    """
    return EmulatorConfig(api_keys=frozenset({SECRET}), round_seconds=0.003, seed=4, clock=clock)


@pytest.fixture
async def client(emu: Emulator, virtual_time: VirtualTime) -> AsyncIterator[AsyncSPOClient]:
    policy = RetryPolicy(attempts=5, initial=0.25, maximum=1.0, jitter=False)
    async with AsyncSPOClient(
        api_key=SECRET,
        base_url=emu.base_url,
        retry=policy,
        schedule=FixedSchedule(interval=0.002),
        clock=virtual_time.clock,
        sleep=virtual_time.sleep,
        limiter=unpaced_limiter(),
    ) as client:
        yield client


def sdk_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "spo_async" and r.levelno == level]


def http_lines(caplog: pytest.LogCaptureFixture, method: str) -> list[logging.LogRecord]:
    return [r for r in sdk_records(caplog, logging.DEBUG) if r.getMessage().startswith(method)]


async def test_one_debug_line_per_http_attempt(
    emu: Emulator, client: AsyncSPOClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Every HTTP attempt, failed ones included, logs one DEBUG line with its facts."""
    caplog.set_level(logging.DEBUG, logger="spo_async")
    emu.inject(
        Fault(FaultKind.RATE_LIMIT, endpoint="submit", retry_after=1, times=1),
        Fault(FaultKind.SERVER_ERROR_HTML, endpoint="task", times=1),
        Fault(FaultKind.DROP_BEFORE, endpoint="task", times=1),
    )

    result = await client.optimize(make_request())
    task_id = result.task_id

    posts, gets = http_lines(caplog, "POST"), http_lines(caplog, "GET")
    assert len(posts) == len(emu.submits) == 2
    assert len(gets) == emu.task_gets[task_id] >= 3
    assert [re.search(r"-> (\S+)", r.getMessage())[1] for r in posts] == ["429", "200"]  # type: ignore[index]
    statuses = [re.search(r"-> (\S+)", r.getMessage())[1] for r in gets]  # type: ignore[index]
    assert statuses[:2] == ["502", "TransportError"]
    assert set(statuses[2:]) == {"200"}
    for record in gets:
        message = record.getMessage()
        assert message.startswith(f"GET {TASKS}{task_id} -> ")
        assert re.search(r"after \d+\.\d{3} s", message)
        assert getattr(record, "task_id", None) == task_id
    for record in posts:
        assert record.getMessage().startswith(f"POST {SUBMIT} -> ")


async def test_each_http_line_carries_its_attempt_number(
    emu: Emulator, client: AsyncSPOClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The DEBUG line of an HTTP attempt says which try of the same call it is."""
    caplog.set_level(logging.DEBUG, logger="spo_async")
    emu.inject(
        Fault(FaultKind.RATE_LIMIT, endpoint="submit", retry_after=1, times=2),
        Fault(FaultKind.SERVER_ERROR_HTML, endpoint="task", times=2),
    )

    await client.optimize(make_request())

    def attempts(method: str) -> list[int]:
        lines = [r.getMessage() for r in http_lines(caplog, method)]
        return [int(re.search(r"attempt (\d+)", line)[1]) for line in lines]  # type: ignore[index]

    assert attempts("POST") == [1, 2, 3]
    gets = attempts("GET")
    assert gets[:3] == [1, 2, 3]
    assert set(gets[3:]) <= {1}
    assert all(getattr(r, "attempt", None) for r in http_lines(caplog, "GET"))


async def test_one_info_line_per_retry_with_reason_and_wait(
    emu: Emulator, client: AsyncSPOClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Each retry logs one INFO line naming the call, the failure and the wait before it."""
    caplog.set_level(logging.DEBUG, logger="spo_async")
    emu.inject(
        Fault(FaultKind.RATE_LIMIT, endpoint="submit", retry_after=7, times=1),
        Fault(FaultKind.SERVER_ERROR_HTML, endpoint="task", times=3),
    )
    events: list[Event] = []

    result = await client.optimize(make_request(), on_event=events.append)
    notices = [e for e in events if isinstance(e, TaskRetrying)]

    lines = [r.getMessage() for r in sdk_records(caplog, logging.INFO)]
    retries = [line for line in lines if line.startswith("retrying")]
    assert len(retries) == len(notices) == 4
    assert retries[0].startswith("retrying POST submit in 7.00 s after attempt 1 failed")
    assert "RateLimitError" in retries[0]
    for line, wait, attempt in zip(retries[1:], ["0.25", "0.50", "1.00"], [1, 2, 3], strict=True):
        assert line.startswith(
            f"retrying GET task {result.task_id} in {wait} s after attempt {attempt} failed"
        )
        assert "TransientError: HTTP 502" in line
    assert any(line.startswith(f"submitted task {result.task_id}") for line in lines)


async def test_log_records_hold_no_secret_headers_or_bodies(
    emu: Emulator, client: AsyncSPOClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing logged carries the key, the Authorization header or a request body."""
    caplog.set_level(logging.DEBUG, logger="spo_async")
    emu.inject(Fault(FaultKind.SERVER_ERROR_HTML, endpoint="task", times=1))
    request = make_request("a very distinctive prompt text 6c1e")
    await client.optimize(request)
    text = "\n".join(f"{r.getMessage()} {r.args!r} {vars(r)!r}" for r in caplog.records)
    assert SECRET not in text
    assert "Bearer" not in text
    assert "distinctive prompt" not in text


def run_python(code: str, env_value: str | None) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k != "SPO_ASYNC_LOG" and not k.startswith("AI302")
    }
    if env_value is not None:
        env["SPO_ASYNC_LOG"] = env_value
    return subprocess.run(  # noqa: S603
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


SCRIPT = textwrap.dedent(
    f"""
    import asyncio, logging, spo_async
    from spo_async.polling import FixedSchedule
    from spo_async.testing import Emulator, EmulatorConfig, Fault, FaultKind

    async def main():
        config = EmulatorConfig(api_keys=frozenset({{{SECRET!r}}}), round_seconds=0.003)
        async with Emulator(config) as emu:
            emu.inject(Fault(FaultKind.SERVER_ERROR_HTML, endpoint="task", times=1))
            async with spo_async.AsyncSPOClient(
                api_key={SECRET!r},
                base_url=emu.base_url,
                retry=spo_async.RetryPolicy.no_wait(),
                schedule=FixedSchedule(interval=0.002),
            ) as client:
                result = await client.optimize(spo_async.OptimizationRequest(
                    prompt="p", qa=[{{"question": "q", "answer": "a"}}], model="gpt-4o",
                    max_rounds=2,
                ))
        print(result.status, logging.getLogger("spo_async").level)

    asyncio.run(main())
    """
)


def test_spo_async_log_debug_prints_to_stderr_without_code() -> None:
    """SPO_ASYNC_LOG=debug makes a plain program print the SDK's lines to stderr."""
    done = run_python(SCRIPT, "debug")
    assert done.stdout.split() == ["success", str(logging.DEBUG)]
    lines = done.stderr.splitlines()
    assert any(re.search(rf"DEBUG spo_async: POST {SUBMIT} -> 200 after", x) for x in lines)
    assert any(re.search(rf"DEBUG spo_async: GET {TASKS}\S+ -> 502 after", x) for x in lines)
    assert any(re.search(r"INFO spo_async: retrying GET task \S+ in 0.00 s", x) for x in lines)
    assert any("INFO spo_async: submitted task" in x for x in lines)
    assert SECRET not in done.stderr


def test_spo_async_log_info_leaves_out_debug_lines() -> None:
    """SPO_ASYNC_LOG=info prints the retries but not the per-request lines."""
    done = run_python(SCRIPT, "INFO")
    assert "INFO spo_async: retrying GET task" in done.stderr
    assert "DEBUG" not in done.stderr


@pytest.mark.parametrize("value", [None, "", "verbose"], ids=["unset", "empty", "unknown"])
def test_without_spo_async_log_the_sdk_prints_nothing(value: str | None) -> None:
    """A library stays quiet unless asked: no handler, no output, without SPO_ASYNC_LOG."""
    done = run_python(SCRIPT, value)
    assert done.stderr == ""
    assert done.stdout.split() == ["success", str(logging.NOTSET)]
