"""The emulator itself: 302.AI's two SPO endpoints served on aiohttp.web over loopback.

``POST /302/prompt/spo/submit`` validates the body like the service and
creates a :class:`~spo_async.testing._tasks.SimulatedTask`; ``GET
/302/prompt/spo/tasks/{task_id}`` reports that task's state at the current clock time.
Around both, the :class:`~spo_async.testing._faults.FaultPlan` may drop, delay or mangle
the exchange, and the emulator records the traffic so tests can assert on what a
client really sent: how many submits, how many polls per task, which faults fired.

Handlers stay cheap (stdlib JSON, a cached body per task state, a request log only
when ``log_requests`` asks for it) because benchmarks run ten thousand tasks against
one emulator.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

import attrs
from aiohttp import web

from spo_async.testing._config import DEFAULT_API_KEY, EmulatorConfig
from spo_async.testing._faults import Fault, FaultKind, FaultPlan, Reply, fault_reply, mutate
from spo_async.testing._log import log_exchange, unrouted_logger
from spo_async.testing._quota import QuotaGate
from spo_async.testing._tasks import SimulatedTask, TaskOutcome
from spo_async.testing._wire import envelope, validate_submit

__all__ = ["SUBMIT_PATH", "TASK_PATH", "Emulator", "RequestRecord", "SubmitRecord"]

SUBMIT_PATH = "/302/prompt/spo/submit"
TASK_PATH = "/302/prompt/spo/tasks/{task_id}"
_REDACTED = "<redacted>"


@attrs.frozen
class SubmitRecord:
    """One submit request as the emulator received it, for assertions in tests.

    ``body`` is the decoded JSON (``None`` if it did not decode), ``headers`` the request
    headers with ``Authorization`` redacted, ``task_id`` the task it created (``None``
    when none was), ``status`` the HTTP status sent (``None`` if the connection was
    dropped) and ``fault`` the fault that fired on it, if any.
    """

    body: Any
    headers: Mapping[str, str]
    task_id: str | None
    status: int | None
    fault: FaultKind | None = None


@attrs.frozen
class RequestRecord:
    """One request in :attr:`Emulator.request_log`: what came in and how it was answered."""

    method: str
    path: str
    status: int | None
    fault: FaultKind | None = None


class Emulator:
    """A local, scriptable stand-in for 302.AI's SPO API, served over real HTTP.

    Use it as ``async with Emulator(config) as emu:`` and point a client at
    ``emu.base_url`` with ``emu.api_key``. Between requests a test can arm faults
    (:meth:`inject`), script task outcomes (:meth:`script_next`) and read the records
    (:attr:`submits`, :attr:`task_gets`, :attr:`request_log`, :attr:`faults_fired`) and
    the true state of every task (:attr:`tasks`, :meth:`task_snapshot`).
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config = config if config is not None else EmulatorConfig()
        self._clock = config.clock
        self._settings = config.simulation_settings()
        self._plan = FaultPlan(config.faults, seed=config.seed)
        self.quota: QuotaGate | None = None
        """The per-key quota of ``config.quota_per_second`` (``None`` without one)."""
        if config.quota_per_second is not None:
            self.quota = QuotaGate(
                config.quota_per_second,
                window=config.quota_window,
                clock=config.clock,
                record=config.record_requests,
            )
        self._scripted: collections.deque[TaskOutcome] = collections.deque()
        self._ids = 0
        nonce = config.task_id_nonce
        self._id_nonce = secrets.token_hex(16) if nonce is None else nonce
        self._occurrences: collections.Counter[str] = collections.Counter()
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()  # replaced at each start, bound to that loop
        self._base_url: str | None = None
        self.tasks: dict[str, SimulatedTask] = {}
        """Every task created, by id, with its whole precomputed timeline."""
        self.submits: list[SubmitRecord] = []
        """Every submit request received, in order (including refused and faulted ones)."""
        self.tasks_created = 0
        """How many tasks were created since the last :meth:`reset_records`."""
        self.task_gets: collections.Counter[str] = collections.Counter()
        """How many queries arrived per task id (known or not)."""
        self.request_log: list[RequestRecord] = []
        """Every request, in order, unless ``config.record_requests`` is off."""

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start serving on ``config.host``/``config.port``; :attr:`base_url` is then set."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        middlewares = [unrouted_logger] if self.config.log_requests else []
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=middlewares)
        app.router.add_post(SUBMIT_PATH, self._handle_submit)
        app.router.add_get(TASK_PATH, self._handle_task)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.config.shutdown_timeout)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._closing = asyncio.Event()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        host = f"[{host}]" if ":" in host else host
        self._base_url = f"http://{host}:{port}"

    async def close(self) -> None:
        """Stop serving: wake delayed answers, wait briefly for open requests, free the port."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._base_url = None
        self._closing.set()
        await runner.cleanup()

    @property
    def base_url(self) -> str:
        """The root URL to give a client, such as ``http://127.0.0.1:54321``."""
        if self._base_url is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._base_url

    @property
    def api_key(self) -> str:
        """A key the emulator accepts (the default one when it is configured)."""
        keys = self.config.api_keys
        return DEFAULT_API_KEY if DEFAULT_API_KEY in keys else min(keys)

    # -- scripting -----------------------------------------------------------------

    def inject(self, *faults: Fault) -> None:
        """Arm ``faults``, after any already armed; each fires per its own settings."""
        for fault in faults:
            self._plan.add(fault)

    def clear_faults(self) -> None:
        """Disarm every fault (what already fired stays counted)."""
        self._plan.clear()

    @property
    def faults(self) -> tuple[Fault, ...]:
        """The faults that may still fire."""
        return self._plan.faults

    def script_next(self, *outcomes: TaskOutcome) -> None:
        """Queue outcomes for the next tasks created, one per task, first in first out."""
        self._scripted.extend(outcomes)

    @property
    def faults_fired(self) -> collections.Counter[FaultKind]:
        """How many times each kind of fault fired."""
        return self._plan.fired

    @property
    def faults_fired_at(self) -> collections.Counter[tuple[str, FaultKind]]:
        """How many times each kind of fault fired per endpoint (``"submit"``/``"task"``)."""
        return self._plan.fired_at

    def reset_records(self) -> None:
        """Forget the traffic records and fault tally; tasks and armed faults remain."""
        self.submits.clear()
        self.tasks_created = 0
        self.task_gets.clear()
        self.request_log.clear()
        self._plan.reset_counts()

    def now(self) -> float:
        """Return the current time of the simulation clock."""
        return self._clock()

    def task_snapshot(self, task_id: str) -> dict[str, Any]:
        """Return the body the task's query would answer now, without any fault."""
        return self.tasks[task_id].snapshot(self._clock())

    # -- handlers ------------------------------------------------------------------

    async def _handle_submit(self, request: web.Request) -> web.StreamResponse:
        """Serve ``POST /302/prompt/spo/submit``."""
        started = time.perf_counter()
        raw: bytes | None
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raw = None
        body = _decode(raw)
        created: list[str] = []
        reply, fault = await self._serve(
            request, "submit", None, lambda: self._submit(request, raw, body, created)
        )
        headers = {
            name: (_REDACTED if name.lower() == "authorization" else value)
            for name, value in request.headers.items()
        }
        self.submits.append(
            SubmitRecord(
                body=None if body is _INVALID else body,
                headers=headers,
                task_id=created[0] if created else None,
                status=None if reply is None else reply.status,
                fault=None if fault is None else fault.kind,
            )
        )
        if self.config.log_requests:
            task_id = created[0] if created else None
            log_exchange(request, started, reply=reply, fault=fault, task_id=task_id, body=body)
        return _respond(request, reply)

    async def _handle_task(self, request: web.Request) -> web.StreamResponse:
        """Serve ``GET /302/prompt/spo/tasks/{task_id}``."""
        started = time.perf_counter()
        task_id = request.match_info["task_id"]
        self.task_gets[task_id] += 1
        reply, fault = await self._serve(
            request, "task", task_id, lambda: self._query(request, task_id)
        )
        if self.config.log_requests:
            log_exchange(request, started, reply=reply, fault=fault, task_id=task_id)
        return _respond(request, reply)

    async def _serve(
        self, request: web.Request, endpoint: str, task_id: str | None, work: Callable[[], Reply]
    ) -> tuple[Reply | None, Fault | None]:
        """Do ``work`` under the fault that fires, if any; a ``None`` reply drops the connection."""
        refused = self._over_quota(request)
        fault = self._plan.pick(endpoint, task_id) if self._plan and refused is None else None
        reply: Reply | None
        if refused is not None:
            reply = refused
        elif fault is None:
            reply = work()
        elif fault.kind is FaultKind.DROP_BEFORE:
            reply = None
        elif fault.kind is FaultKind.DELAY:
            await self._sleep(fault.delay)
            reply = work()
        elif fault.replaces_reply and not fault.after_work:
            reply = fault_reply(fault)
        else:
            done = work()
            if fault.kind is FaultKind.DROP_AFTER:
                reply = None
            elif fault.replaces_reply:
                reply = fault_reply(fault)
            else:
                reply = mutate(fault, done.status, done.body, endpoint)
        if self.config.record_requests:
            self.request_log.append(
                RequestRecord(
                    method=request.method,
                    path=request.path,
                    status=None if reply is None else reply.status,
                    fault=None if fault is None else fault.kind,
                )
            )
        return reply, fault

    def _over_quota(self, request: web.Request) -> Reply | None:
        """The gateway's 429 when the request's key is past its quota (``None``: go on)."""
        if self.quota is None:
            return None
        return self.quota.check(request.headers.get("Authorization", ""))

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of real time, or less if the emulator is closing."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def _authenticate(self, request: web.Request) -> str | None:
        """Return the request's API key if it is one the emulator knows, else ``None``."""
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return None
        if key in self.config.api_keys or key in self.config.insufficient_balance_keys:
            return key
        return None

    def _submit(
        self, request: web.Request, raw: bytes | None, body: Any, created: list[str]
    ) -> Reply:
        """Validate a submit and create its task, appending its id to ``created``."""
        key = self._authenticate(request)
        if key is None:
            return Reply(401, envelope(-10001))
        if key in self.config.insufficient_balance_keys:
            return Reply(402, envelope(-10004))
        if raw is None:
            return Reply(413, envelope(-10011, "the request body is too large"))
        problem = "the body is not valid JSON" if body is _INVALID else None
        problem = problem or validate_submit(body, self.config.max_rounds_limit)
        if problem is not None:
            return Reply(400, envelope(-10011, problem))
        models = self.config.models
        if models is not None and body["model"] not in models:
            return Reply(503, envelope(-10008, f"model {body['model']!r} is not available"))
        task = self._create(body)
        created.append(task.task_id)
        return Reply(200, json.dumps({"task_id": task.task_id}).encode())

    def _create(self, body: dict[str, Any]) -> SimulatedTask:
        """Create, remember and count a task for an accepted submit body."""
        seed = self.config.seed
        self._ids += 1
        id_source = f"spo-task:{self._id_nonce}:{seed}:{self._ids}"
        id_digest = hashlib.sha256(id_source.encode("utf-8", "surrogatepass")).digest()
        task_id = "spo-" + uuid.UUID(bytes=id_digest[:16], version=4).hex
        # Seed each task from its request and how often that same request was seen, so
        # results do not depend on how concurrent submits happen to interleave.
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        request_digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
        occurrence = self._occurrences[request_digest]
        self._occurrences[request_digest] += 1
        task_seed = int.from_bytes(
            hashlib.sha256(f"{seed}:{request_digest}:{occurrence}".encode()).digest()[:8], "big"
        )
        outcome: TaskOutcome | None = None
        if self._scripted:
            outcome = self._scripted.popleft()
        elif self.config.outcome_for is not None:
            outcome = self.config.outcome_for(body)
        task = SimulatedTask(
            task_id,
            body,
            seed=task_seed,
            submitted_at=self._clock(),
            settings=self._settings,
            outcome=outcome,
        )
        self.tasks[task_id] = task
        self.tasks_created += 1
        return task

    def _query(self, request: web.Request, task_id: str) -> Reply:
        """Report a task's state at the current clock time."""
        if self._authenticate(request) is None:
            return Reply(401, envelope(-10001))
        task = self.tasks.get(task_id)
        if task is None:
            return Reply(self.config.not_found_status, envelope(-10010, "no such task"))
        return Reply(200, task.body(self._clock()))


def _respond(request: web.Request, reply: Reply | None) -> web.StreamResponse:
    """Turn a reply into a response, or cut the connection when there is none."""
    if reply is None:
        transport = request.transport
        if transport is not None:  # pragma: no branch - None only if the client left first
            transport.close()
        return web.Response(status=204)  # never reaches the client: the socket is gone
    return web.Response(
        status=reply.status,
        body=reply.body,
        content_type=reply.content_type,
        headers=dict(reply.headers) if reply.headers else None,
    )


_INVALID: Any = object()


def _decode(raw: bytes | None) -> Any:
    """Decode a request body as JSON; ``_INVALID`` when it does not decode."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return _INVALID
