"""The HTTP seam: what :class:`~spo_async.AsyncSPOClient` needs from an HTTP stack.

Most programs never need this module: the client sends through
:class:`AiohttpTransport`, and ``AsyncSPOClient(session=...)`` lends it your own
:class:`aiohttp.ClientSession`. Implement :class:`Transport` (``send`` and
``aclose``) to put another stack underneath; it receives finished
:class:`HTTPRequest` objects (the API key already in their headers, never in
their ``repr``) and returns :class:`HTTPResponse` objects, raising
:class:`~spo_async.TransportError` with ``request_sent`` set truthfully when the
exchange fails, since that decides whether a submit may be retried.
"""

from ._sansio import HTTPRequest, HTTPResponse
from ._transport import AiohttpTransport, Transport

__all__ = ["AiohttpTransport", "HTTPRequest", "HTTPResponse", "Transport"]
