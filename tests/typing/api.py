"""Type-checked by mypy --strict, never run: the public API reads well to a type checker.

If a change makes a user's ordinary code fail to type-check, this file fails CI.
"""

from __future__ import annotations

from spo_async import (
    AsyncSPOClient,
    ExponentialSchedule,
    FixedSchedule,
    OptimizationRequest,
    PollState,
    Progress,
    QAPair,
    RetryNotice,
    RetryPolicy,
    Round,
    SPOError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
    TaskResult,
    TaskStatus,
    WaitTimeoutError,
)


def every_five_seconds(state: PollState) -> float:
    return 5.0 if state.polls else 0.0


async def on_progress(snapshot: TaskResult) -> None:
    progress: Progress = snapshot.progress
    best: Round | None = snapshot.best
    _ = (progress.fraction, best)


def on_retry(notice: RetryNotice) -> None:
    _ = (notice.attempt, notice.wait, notice.cause)


async def usage() -> None:
    request = OptimizationRequest(
        prompt="Act as the user's girlfriend",
        qa=[QAPair(question="Good morning", answer="[thoughts][reply]")],
        max_rounds=5,
        model="claude-3-5-sonnet-20240620",
    )
    async with AsyncSPOClient(
        retry=RetryPolicy(attempts=3),
        schedule=ExponentialSchedule(initial=1.0, maximum=10.0),
    ) as client:
        task_id: str = await client.submit(request)
        snapshot: TaskResult = await client.get_task(task_id)
        status: TaskStatus = snapshot.status
        done: bool = status.is_terminal
        try:
            result = await client.wait_for_result(
                task_id,
                timeout=None,
                on_progress=on_progress,
                on_retry=on_retry,
                schedule=every_five_seconds,
            )
        except WaitTimeoutError as exc:
            last: TaskResult | None = exc.last_result
            _ = (last, exc.task_id)
        except TaskFailedError as exc:
            failed: TaskResult = exc.result
            _ = failed
        else:
            best_prompt: str | None = result.best_prompt
            _ = (best_prompt, done)
        try:
            await client.optimize(request, schedule=FixedSchedule(interval=5.0))
        except SubmitOutcomeUnknownError as exc:
            again: OptimizationRequest = exc.request
            _ = again
        except SPOError as exc:
            maybe_task: str | None = exc.task_id
            _ = maybe_task
