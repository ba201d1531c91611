"""Type-checked by mypy --strict, never run: the public API reads well to a type checker.

If a change makes a user's ordinary code fail to type-check, this file fails CI.
"""

from __future__ import annotations

from spo_async import (
    AsyncSPOClient,
    BatchProgress,
    Errored,
    Event,
    EventStream,
    Failed,
    FailureReason,
    OptimizationRequest,
    Outcome,
    OutcomeUnknown,
    QAPair,
    RetryPolicy,
    Round,
    RoundCompleted,
    SPOClient,
    SPOError,
    SubmitOutcomeUnknownError,
    Succeeded,
    TaskFailedError,
    TaskResult,
    TaskRetrying,
    TaskStatus,
    WaitTimeoutError,
)
from spo_async.polling import ExponentialSchedule, FixedSchedule, PollState


def every_five_seconds(state: PollState) -> float:
    return 5.0 if state.polls else 0.0


async def on_event(event: Event) -> None:
    if isinstance(event, RoundCompleted):
        done: int = event.number
        total: int | None = event.total
        best: Round | None = event.result.best
        _ = (done, total, best, event.best_prompt)
    elif isinstance(event, TaskRetrying):
        _ = (event.attempt, event.wait, event.cause, event.operation)
    elif isinstance(event, BatchProgress):
        _ = (event.done, event.total, event.requests_per_second)


def describe(outcome: Outcome) -> str:
    if isinstance(outcome, Succeeded):
        return outcome.result.best_prompt or ""
    if isinstance(outcome, Failed):
        reason: FailureReason | None = outcome.result.error
        return str(reason)
    if isinstance(outcome, OutcomeUnknown):
        again: OptimizationRequest = outcome.error.request
        return again.prompt
    if isinstance(outcome, Errored):
        return f"{outcome.task_id}: {outcome.error}"
    return ""


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
        patient = client.with_options(schedule=every_five_seconds, timeout=None)
        try:
            result = await patient.wait_for_result(task_id, on_event=on_event)
        except WaitTimeoutError as exc:
            last: TaskResult | None = exc.last_result
            maybe_id: str | None = exc.task_id
            _ = (last, maybe_id)
        except TaskFailedError as exc:
            failed: TaskResult = exc.result
            _ = failed
        else:
            best_prompt: str | None = result.best_prompt
            _ = (best_prompt, done)
        try:
            fixed = client.with_options(schedule=FixedSchedule(interval=5.0))
            await fixed.optimize(request, on_event=print)
        except SubmitOutcomeUnknownError as exc:
            again: OptimizationRequest = exc.request
            _ = again
        except SPOError as exc:
            maybe_task: str | None = exc.task_id
            _ = maybe_task

        async with EventStream() as stream:
            outcomes: list[Outcome] = await client.optimize_all(
                {"a": request, "b": request}, concurrency=2, on_event=stream
            )
        async with client.optimize_many([request], journal="run.db") as batch:
            async for outcome in batch:
                key: str | int | None = outcome.key
                _ = (key, describe(outcome), batch.progress.done, batch.unfinished_task_ids)
        _ = outcomes


def sync_usage(request: OptimizationRequest) -> None:
    with SPOClient(timeout=600) as client:
        result: TaskResult = client.optimize(request)
        outcomes: list[Outcome] = client.optimize_all([request])
        _ = (result, outcomes)
