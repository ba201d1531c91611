"""Optimize the 302.AI docs' example prompt against the built-in emulator.

No API key and no network: the emulator serves the SPO API on 127.0.0.1 and
runs each round in a fraction of a second. Swap the emulator for the real
service by dropping ``base_url``/``api_key`` and setting ``AI302_API_KEY``.

Run it with ``python examples/quickstart.py``.
"""

from __future__ import annotations

import asyncio

from spo_async import (
    AsyncSPOClient,
    Event,
    OptimizationRequest,
    QAPair,
    RoundCompleted,
    TaskQueued,
    TaskSubmitted,
)
from spo_async.testing import Emulator, EmulatorConfig

REQUEST = OptimizationRequest(
    prompt="Act as the user's girlfriend",
    requirements="Act as the user's girlfriend and reply in Chinese",
    qa=[
        QAPair("Good morning", "[Rich thoughts, actions, or others][Reply]"),
        QAPair("Do you love me?", "[Rich thoughts, actions, or others][Reply]"),
        QAPair("What are you doing?", "[Rich thoughts, actions, or others][Reply]"),
    ],
    max_rounds=5,
    model="claude-3-5-sonnet-20240620",
)


def show(event: Event) -> None:
    """Print what happens to the task, as ``on_event`` reports it."""
    match event:
        case TaskSubmitted(task_id=task_id):
            print(f"submitted task {task_id} (keep this id: the task runs on the service)")
        case TaskQueued():
            print("queued")
        case RoundCompleted(number=number, total=total, success=success, prompt=prompt):
            verdict = "better    " if success else "not better"
            print(f"[round {number}/{total}] {verdict}: {prompt!r:.72}")
        case _:
            pass  # the outcome: optimize() returns (or raises) the same news


async def main() -> None:
    """Start the emulator, optimize the example request, print the best prompt."""
    async with (
        Emulator(EmulatorConfig(round_seconds=0.3, queue_seconds=0.2, jitter=0.2, seed=7)) as emu,
        AsyncSPOClient(api_key=emu.api_key, base_url=emu.base_url) as client,
    ):
        result = await client.optimize(REQUEST, timeout=60, on_event=show)
        print(f"\nbest prompt (round {result.best_round} of {len(result.rounds)}):")
        print(result.best_prompt)


if __name__ == "__main__":
    asyncio.run(main())
