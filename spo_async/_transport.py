"""The only module that imports aiohttp: ``send(HTTPRequest) -> HTTPResponse``.

It owns the connection pool and turns every aiohttp failure into a
:class:`~spo_async.TransportError` that says whether the request may have reached
the service (``request_sent``), since that decides whether a submit is safe to
retry. Those errors carry text only: no aiohttp exception in their
``__cause__``/``__context__`` (aiohttp's keep the request headers, the API key
among them), and foreign text redacted and escaped. Every status is handed back
as an answer, whatever the session's ``raise_for_status``. Anything smarter
(retries, logging, polling) lives above it.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol, runtime_checkable

import aiohttp

from ._checks import check_count, check_seconds
from ._errors import (
    ClientClosedError,
    RequestTimeoutError,
    SPOError,
    TransportError,
    response_too_large,
)
from ._redact import printable, redactor_for, request_secrets
from ._sansio import HTTPRequest, HTTPResponse

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "AiohttpTransport", "Transport"]

#: Answers larger than this are refused unread: a task with 100 rounds of long
#: prompts and samples stays well under it, a runaway gateway page does not.
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024

_CHUNK = 64 * 1024
#: How much of a foreign error's text a TransportError repeats.
_REASON_LIMIT = 300


def _describe(exc: BaseException, request: HTTPRequest) -> str:
    """A foreign error's text, fit for a message: no credential, no control characters."""
    text = str(exc)
    redactor = redactor_for(request_secrets(request.headers))
    if redactor is not None:
        text = redactor.text(text)
    if len(text) > _REASON_LIMIT:
        text = text[:_REASON_LIMIT] + "..."
    return printable(text)


def _failure(exc: Exception, request: HTTPRequest, timeout: float) -> TransportError:
    """The typed error for an exception of aiohttp's (or any) while sending ``request``."""
    method, path = request.method, request.path
    what = f"{method} {path}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return RequestTimeoutError(
            f"{what}: timed out connecting after {timeout:g} s",
            request_sent=False,
            method=method,
            path=path,
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = _describe(exc.os_error, request)
        return TransportError(
            f"{what}: cannot connect ({reason})", method=method, path=path, request_sent=False
        )
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return RequestTimeoutError(
            f"{what}: no complete answer within {timeout:g} s", method=method, path=path
        )
    if isinstance(
        exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientOSError
    ):
        return TransportError(
            f"{what}: the connection broke before the whole answer arrived",
            method=method,
            path=path,
        )
    if isinstance(exc, aiohttp.ClientError):
        # Only the class: aiohttp's response errors hold the request's headers.
        return TransportError(f"{what}: {type(exc).__name__}", method=method, path=path)
    # aiohttp raises ValueError, TypeError, RuntimeError ("Session is closed"),
    # AssertionError (a caller's session with a base_url) and more for requests it
    # cannot make. Whether anything was sent is not known: request_sent stays true.
    reason = _describe(exc, request)
    return TransportError(f"{what}: {type(exc).__name__}: {reason}", method=method, path=path)


@runtime_checkable
class Transport(Protocol):
    """What the client needs from an HTTP stack; implement it to swap aiohttp out."""

    async def send(self, request: HTTPRequest, *, timeout: float) -> HTTPResponse:
        """Send ``request`` and return the whole answer, or raise a ``TransportError``."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once by the client's ``aclose()``."""
        ...


class AiohttpTransport:
    """A :class:`Transport` on one lazily created :class:`aiohttp.ClientSession`.

    The session is created on the first request, inside the running event
    loop, with a connector bounded to ``max_connections``. A session passed in
    by the caller is used as it is and never closed here: its owner closes it.
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None = None,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        connect_timeout: float = 10.0,
        verify_ssl: bool | ssl.SSLContext = True,
        trust_env: bool = False,
    ) -> None:
        check_count("max_connections", max_connections)
        check_count("max_response_bytes", max_response_bytes)
        check_seconds("connect_timeout", connect_timeout, allow_none=False)
        self._session = session
        self._owns_session = session is None
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._connect_timeout = connect_timeout
        self._ssl: bool | ssl.SSLContext = verify_ssl
        self._trust_env = trust_env
        self._closed = False
        # Requests wait for a free connection here, before their timeout starts: time
        # spent queueing for the pool must not turn into a RequestTimeoutError, which for
        # a submit would mean "outcome unknown" although nothing was sent.
        limit = (
            max_connections
            if session is None
            else (session.connector.limit if session.connector else 0)
        )
        self._slots = asyncio.Semaphore(limit) if limit else None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    @classmethod
    def _for_client(
        cls,
        *,
        session: aiohttp.ClientSession | None,
        max_connections: int,
        max_response_bytes: int,
    ) -> AiohttpTransport:
        """The transport a client makes for itself: without a queue of its own.

        The client queues every request on its own cap (``Core.slots``, the size of
        this pool) before the limiter and before the transport, so a second queue
        here would never hold a request back and would only cost each one a pass
        through it: a client has one concurrency cap.
        """
        transport = cls(
            session=session, max_connections=max_connections, max_response_bytes=max_response_bytes
        )
        transport._slots = None
        return transport

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientClosedError("the transport is closed")
        if self._session is not None and self._session.closed:
            # A caller's session closed by its owner: aiohttp would raise RuntimeError.
            raise ClientClosedError("the aiohttp session given as session= is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=self._max_connections, ssl=self._ssl
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                trust_env=self._trust_env,
                auto_decompress=True,
            )
            # aiohttp (3.10+) silently sends a GET again, at once, when its connection
            # drops. The retry policy alone decides repeats here (with its backoff, its
            # attempt budget and one log line per attempt), so turn that off. There is no
            # public switch; the attribute is looked up so that a future aiohttp without it
            # keeps working.
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        return self._session

    @property
    def connector(self) -> aiohttp.BaseConnector | None:
        """The pool in use, for tests and diagnostics (``None`` before the first request)."""
        return self._session.connector if self._session is not None else None

    async def send(self, request: HTTPRequest, *, timeout: float) -> HTTPResponse:
        """Send one request; see :class:`Transport`.

        ``timeout`` starts once a connection of the pool is free for this request.
        """
        # The queue by hand rather than with ``async with``, and the exchange in this
        # one coroutine: this runs for every request, and each coroutine or context
        # manager on the way is an allocation that lives as long as the request.
        slots = self._slots  # None for a client's own transport: the client queued it
        if slots is not None:
            await slots.acquire()
        try:
            session = self._get_session()
            async with session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.body,
                timeout=self._timeout(timeout),
                allow_redirects=False,
                # A caller's session may say raise_for_status=True: a 401 or 429 would then
                # arrive as an aiohttp exception (and, on a submit, as a false "outcome
                # unknown"). Every status is an answer here; the sans-I/O core reads it.
                raise_for_status=False,
            ) as resp:
                body = await self._read_limited(resp)
                headers = {k.lower(): v for k, v in resp.headers.items()}
                return HTTPResponse(resp.status, headers, body)
        except SPOError:
            raise  # too large (a ProtocolError), made without any aiohttp error behind it
        except Exception as exc:  # every failure leaves as a typed error
            error = _failure(exc, request, timeout)
        finally:
            if slots is not None:
                slots.release()
        # Raised here, after the except clauses, so that the error has no __context__:
        # ``raise ... from None`` only hides the aiohttp exception, which keeps the
        # request's Authorization header in its request_info.
        raise error

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        cached = self._timeouts.get(seconds)
        if cached is None:
            if len(self._timeouts) > 64:
                self._timeouts.clear()
            cached = self._timeouts[seconds] = aiohttp.ClientTimeout(
                total=seconds, sock_connect=min(seconds, self._connect_timeout)
            )
        return cached

    async def _read_limited(self, resp: aiohttp.ClientResponse) -> bytes:
        limit = self._max_response_bytes
        if resp.content_length is not None and "Content-Encoding" not in resp.headers:
            if resp.content_length > limit:
                resp.close()
                raise response_too_large(limit=limit, status=resp.status)
            return await resp.read()
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > limit:
                resp.close()
                raise response_too_large(limit=limit, status=resp.status)
            chunks.append(chunk)
        return b"".join(chunks)

    def __del__(self) -> None:
        # Dropped without aclose(): the client that owned this transport has already
        # warned once (ResourceWarning from AsyncSPOClient.__del__). Close the sockets of
        # the session created here, the synchronous part of what aclose() does, so that
        # aiohttp does not add "Unclosed client session", "Unclosed connector" and
        # unclosed-socket warnings of its own.
        session = getattr(self, "_session", None)
        if session is None or not self._owns_session or session.closed:
            return
        connector = session.connector
        close_now = getattr(connector, "_close", None)
        if callable(close_now):
            close_now()  # aiohttp's own BaseConnector.__del__ calls it the same way
            session.detach()

    async def aclose(self) -> None:
        """Close the session if this transport created it."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()
            # Give the SSL transports a tick to shut down (aiohttp's documented advice).
            await asyncio.sleep(0)
