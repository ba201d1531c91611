"""Optimize the 302.AI docs' example prompt against the built-in emulator.

No API key and no network: the emulator serves the SPO API on 127.0.0.1 and
runs each round in a fraction of a second. Swap the emulator for the real
service by dropping ``base_url``/``api_key`` and setting ``AI302_API_KEY``.

Run it with ``python examples/quickstart.py``.
"""

from __future__ import annotations

import asyncio

from spo_async import AsyncSPOClient, OptimizationRequest, QAPair, TaskResult
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


class ShowRounds:
    """Print each round once, as soon as a snapshot shows it."""

    def __init__(self) -> None:
        self.printed = 0

    def __call__(self, snapshot: TaskResult) -> None:
        """Receive a snapshot from ``on_progress``."""
        if not snapshot.completed_rounds:
            print(f"[{snapshot.progress}] {snapshot.raw_status}")
        for round_ in snapshot.completed_rounds[self.printed :]:
            verdict = "better  " if round_.success else "not better"
            print(f"[round {round_.number}/{snapshot.max_rounds}] {verdict}: {round_.prompt!r:.72}")
        self.printed = len(snapshot.completed_rounds)


async def main() -> None:
    """Start the emulator, optimize the example request, print the best prompt."""
    async with (
        Emulator(EmulatorConfig(round_seconds=0.3, queue_seconds=0.2, jitter=0.2, seed=7)) as emu,
        AsyncSPOClient(api_key=emu.api_key, base_url=emu.base_url) as client,
    ):
        task_id = await client.submit(REQUEST)
        print(f"submitted task {task_id}")
        result = await client.wait_for_result(task_id, timeout=60, on_progress=ShowRounds())
        print(f"\nbest prompt (round {result.best_round} of {len(result.rounds)}):")
        print(result.best_prompt)


if __name__ == "__main__":
    asyncio.run(main())
