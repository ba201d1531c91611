"""An aiohttp.web service that starts prompt optimizations and hands out their results.

Two endpoints:

* ``POST /optimizations`` validates the body, submits the task and answers
  ``202 Accepted`` with the task id at once: a task takes minutes, far longer than
  an HTTP request should.
* ``GET /optimizations/{task_id}?wait=S`` waits up to ``S`` seconds (at most
  :data:`MAX_WAIT`) for the task to finish: ``200`` with the result when it did,
  ``202`` with the progress so far when the deadline passed first.

Run it as a script to see it work against the emulator: it serves the app on a free
port, then plays a browser's part with an aiohttp client. In production, build the
app with :func:`make_app` and no arguments (the key comes from ``AI302_API_KEY``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import ClientSession, web
from spo_async import (
    AsyncSPOClient,
    NotFoundError,
    OptimizationRequest,
    RequestValidationError,
    SPOError,
    SubmitOutcomeUnknownError,
    TaskFailedError,
    TaskResult,
    WaitTimeoutError,
)
from spo_async.testing import Emulator

#: The longest a GET may hold its connection open, in seconds.
MAX_WAIT = 25.0
CLIENT = web.AppKey("spo_client", AsyncSPOClient)


def make_app(*, api_key: str | None = None, base_url: str | None = None) -> web.Application:
    """The web application, with one SPO client for its whole life."""
    app = web.Application()

    async def spo_client(app: web.Application) -> AsyncIterator[None]:
        # One client (one connection pool) for every request, closed on shutdown.
        async with AsyncSPOClient(api_key=api_key, base_url=base_url) as client:
            app[CLIENT] = client
            yield

    app.cleanup_ctx.append(spo_client)
    app.router.add_post("/optimizations", start_optimization)
    app.router.add_get("/optimizations/{task_id}", get_optimization)
    return app


def summary(result: TaskResult) -> dict[str, object]:
    """What the service's callers see of a task."""
    return {
        "task_id": result.task_id,
        "status": result.raw_status,
        "rounds_done": len(result.completed_rounds),
        "max_rounds": result.max_rounds,
        "best_round": result.best_round,
        "best_prompt": result.best_prompt,
        "error": str(result.error) if result.error is not None else None,
    }


async def start_optimization(request: web.Request) -> web.Response:
    """Submit the task and answer with its id at once (202)."""
    body = await request.json()
    try:
        spo_request = OptimizationRequest(
            prompt=body.get("prompt"),
            qa=body.get("qa", []),
            model=body.get("model", "claude-3-5-sonnet-20240620"),
            max_rounds=body.get("max_rounds", 5),
        )
    except RequestValidationError as exc:
        return web.json_response({"field": exc.field, "problem": exc.problem}, status=422)
    try:
        task_id = await request.app[CLIENT].submit(spo_request)
    except SubmitOutcomeUnknownError:
        # A task may exist (and be billed) without our knowing its id: tell the caller
        # not to retry blindly, rather than submitting again ourselves.
        return web.json_response(
            {"problem": "the service may have started the task; check before retrying"},
            status=502,
        )
    except SPOError as exc:
        # The service refused (bad key, no balance, unknown model, ...): no task exists.
        return web.json_response({"problem": str(exc)}, status=503)
    return web.json_response(
        {"task_id": task_id},
        status=202,
        headers={"Location": f"/optimizations/{task_id}"},
    )


async def get_optimization(request: web.Request) -> web.Response:
    """Wait up to ``?wait=`` seconds for the task; 200 when it ended, 202 when not yet."""
    task_id = request.match_info["task_id"]
    try:
        wait = min(max(float(request.query.get("wait", "0")), 0.0), MAX_WAIT)
    except ValueError:
        return web.json_response({"problem": "wait must be a number of seconds"}, status=400)
    client = request.app[CLIENT]
    try:
        # Many requests waiting for the same task share one poll loop in the client.
        result = await client.wait_for_result(task_id, timeout=wait)
    except WaitTimeoutError as exc:
        # The deadline passed first; the task keeps running. Report what we know.
        body = summary(exc.last_result) if exc.last_result else {"task_id": task_id}
        return web.json_response(body, status=202)
    except TaskFailedError as exc:
        return web.json_response(summary(exc.result), status=200)
    except NotFoundError:
        return web.json_response({"problem": f"no task {task_id}"}, status=404)
    except SPOError as exc:
        return web.json_response({"problem": str(exc)}, status=503)
    return web.json_response(summary(result), status=200)


async def demo() -> None:
    """Serve the app against the emulator, and use it as a browser would."""
    async with Emulator() as emu:
        runner = web.AppRunner(make_app(api_key=emu.api_key, base_url=emu.base_url))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        try:
            async with ClientSession(base) as http:
                body = {
                    "prompt": "Act as the user's girlfriend",
                    "qa": [{"question": "Good morning", "answer": "[thoughts][reply]"}],
                }
                async with http.post("/optimizations", json=body) as started:
                    if started.status != 202:
                        raise RuntimeError(await started.text())
                    location = started.headers["Location"]
                    print("started:", await started.json())

                async with http.post("/optimizations", json={"prompt": "", "qa": []}) as bad:
                    print("invalid:", bad.status, await bad.json())

                # A caller that cannot wait: look once, without waiting.
                async with http.get(location) as peek:
                    print("at once:", peek.status, (await peek.json())["status"])

                # A caller that waits up to 20 s for the result.
                async with http.get(location, params={"wait": "20"}) as done:
                    answer = await done.json()
                    if done.status != 200:
                        raise RuntimeError(answer)
                    print("finished:", answer["status"], answer["best_prompt"].splitlines()[0])
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(demo())
