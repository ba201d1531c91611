"""``--rate``: hold every HTTP request of the client to at most R per second.

The client does not take a request limiter yet, so this wraps its transport with the
SDK's :class:`~spo_async._limiter.RequestLimiter` (a token bucket that also backs off
on 429). When the client gains a ``limiter=`` option, pass the limiter there instead.
"""

from __future__ import annotations

import time

from spo_async._limiter import RequestLimiter
from spo_async._sansio import HTTPRequest, HTTPResponse, parse_retry_after
from spo_async._transport import AiohttpTransport

__all__ = ["RateLimitedTransport"]


class RateLimitedTransport:
    """An aiohttp transport that lets requests out through a :class:`RequestLimiter`."""

    def __init__(self, rate: float) -> None:
        self.limiter = RequestLimiter(rate=rate)
        self._inner = AiohttpTransport()

    async def send(self, request: HTTPRequest, *, timeout: float) -> HTTPResponse:
        """Wait for a turn, send, and tell the limiter whether the service pushed back."""
        async with self.limiter.slot():
            response = await self._inner.send(request, timeout=timeout)
        if response.status == 429:
            retry_after = response.headers.get("retry-after")
            self.limiter.on_rate_limited(parse_retry_after(retry_after, now=time.time()))
        else:
            self.limiter.on_success()
        return response

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._inner.aclose()
