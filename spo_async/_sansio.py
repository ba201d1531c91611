"""The sans-I/O core: build the service's HTTP requests, read its answers.

Nothing here awaits or touches a socket (gidgethub's ``sansio.py`` and h11 are
the models). Every function maps plain values to plain values, so the whole
wire contract is tested synchronously, table by table, and a hostile answer can
only ever come out as a model or a typed :class:`~spo_async.SPOError`.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import math
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

import attrs
import cattrs

from ._convert import request_to_wire, result_problem, task_from_wire
from ._errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    InsufficientBalanceError,
    InvalidRequestError,
    NotFoundError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    RequestValidationError,
    TransientError,
)
from ._models import OptimizationRequest, TaskResult
from ._redact import Redactor, has_unsafe_characters, printable, redactor_for, request_secrets
from ._state import TaskStatus
from ._version import __version__

__all__ = [
    "ERR_CODE_ERRORS",
    "PARSE_IN_THREAD_ABOVE",
    "SUBMIT_PATH",
    "TASK_PATH",
    "HTTPRequest",
    "HTTPResponse",
    "build_submit_request",
    "build_task_request",
    "error_from_response",
    "is_loopback",
    "normalize_base_url",
    "parse_retry_after",
    "parse_submit_response",
    "parse_task_response",
    "quote_task_id",
    "redact_response",
]

SUBMIT_PATH: Final = "/302/prompt/spo/submit"
TASK_PATH: Final = "/302/prompt/spo/tasks/"
USER_AGENT: Final = f"spo-async/{__version__}"
MAX_TASK_ID_LENGTH: Final = 256
#: Deeper JSON is refused as unreadable: no answer of the service nests more than a few levels.
MAX_JSON_DEPTH: Final = 64
#: An answer with more commas, or more brackets, than this (outside strings) is refused
#: as unreadable, before ``json.loads`` builds its values: so it holds at most about
#: twice as many values. A task of 1,000 rounds with three samples each holds about
#: 20,000; building a value costs the event loop up to a third of a microsecond and
#: structuring it a microsecond, so this bounds what one answer costs the loop beyond
#: its size (bench/loop_stall.py).
MAX_JSON_VALUES: Final = 100_000
#: A task answer larger than this is parsed in a worker thread by the client: parsing
#: stays pure, and the event loop is free between the parse's Python steps.
PARSE_IN_THREAD_ABOVE: Final = 1024 * 1024

#: The service's err_codes and what they mean.
ERR_CODE_ERRORS: Mapping[int, type[APIError]] = {
    -10001: AuthenticationError,
    -10002: AuthenticationError,
    -10003: TransientError,
    -10004: InsufficientBalanceError,
    -10005: AuthenticationError,
    -10006: QuotaExceededError,
    -10007: QuotaExceededError,
    -10008: InvalidRequestError,
    -10009: InvalidRequestError,
    -10010: NotFoundError,
    -10011: InvalidRequestError,
    -10012: QuotaExceededError,
    -10018: QuotaExceededError,
    -1024: TransientError,
}

#: What an HTTP status means when the body carries no known err_code.
_STATUS_ERRORS: Mapping[int, type[APIError]] = {
    401: AuthenticationError,
    403: AuthenticationError,
    402: InsufficientBalanceError,
    404: NotFoundError,
    408: TransientError,
    429: RateLimitError,
}


def _redact_headers(headers: Mapping[str, str]) -> str:
    return repr(
        {k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in headers.items()}
    )


@attrs.frozen
class HTTPRequest:
    """One HTTP request, ready to send. Its ``repr`` never shows the API key."""

    method: str
    url: str
    #: The URL's path, for logs and errors (the base URL may hold secrets of its own).
    path: str
    headers: Mapping[str, str] = attrs.field(repr=_redact_headers)
    body: bytes | None = None


@attrs.frozen
class HTTPResponse:
    """One HTTP answer: status, headers with lower-cased names, and the whole body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost`` or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_base_url(url: str, *, allow_insecure_http: bool = False) -> str:
    """Check a base URL and strip its trailing slash.

    Plain ``http://`` is refused for any host but loopback unless
    ``allow_insecure_http`` is set, since the API key travels in a header.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"base_url must be a string, got {type(url).__name__}")
    if has_unsafe_characters(url.strip()):
        # Not echoed, like every malformed base URL: it may hold a pasted secret.
        raise ConfigurationError("base_url contains control, invisible or unencodable characters")
    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError:
        # Not echoed: a malformed "port" may be a pasted secret.
        raise ConfigurationError("base_url is not a valid URL: malformed host or port") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        # The URL itself is never echoed: a malformed one may hold a pasted secret.
        raise ConfigurationError(
            "base_url must be an absolute http(s) URL such as https://api.302.ai"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(
            f"base_url for {parts.scheme}://{parts.hostname} must not have a query or fragment"
        )
    if parts.username or parts.password:
        raise ConfigurationError("base_url must not hold credentials; pass api_key instead")
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(parts.hostname):
        raise ConfigurationError(
            f"refusing plain http:// to {parts.hostname}: the API key would travel unencrypted; "
            "use https:// or pass allow_insecure_http=True"
        )
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


#: C0 controls and DEL: never part of a task id, and unsafe in a log line.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def quote_task_id(task_id: str) -> str:
    """Check a task id and percent-encode it for the query path.

    Refused, with :class:`RequestValidationError` and before any request: ids that
    could leave their path segment, control and invisible format characters (C0,
    DEL, C1, bidi overrides: they rewrite a terminal or a log line that shows the
    id), and ids that cannot be encoded at all (a lone surrogate, which would
    otherwise fail deep in the HTTP stack with an untyped ``UnicodeEncodeError``).
    """
    if not isinstance(task_id, str):
        raise RequestValidationError("task_id", f"expected a string, got {type(task_id).__name__}")
    if not task_id or task_id.strip() != task_id:
        raise RequestValidationError("task_id", "must be non-empty, without surrounding spaces")
    if len(task_id) > MAX_TASK_ID_LENGTH:
        raise RequestValidationError("task_id", f"longer than {MAX_TASK_ID_LENGTH} characters")
    if task_id in {".", ".."} or any(ch in task_id for ch in "/\\?#"):
        raise RequestValidationError("task_id", f"{task_id!r} is not a task id")
    if task_id.isascii():
        if _CONTROL_CHARACTER.search(task_id):
            raise RequestValidationError("task_id", "contains control characters")
    elif has_unsafe_characters(task_id):
        try:
            task_id.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestValidationError(
                "task_id", "cannot be encoded: it holds a lone surrogate"
            ) from None
        raise RequestValidationError("task_id", "contains control or invisible format characters")
    return urllib.parse.quote(task_id, safe="")


def _headers(api_key: str, lang: str | None) -> dict[str, str]:
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }
    if lang is not None:
        headers["Lang"] = lang
    return headers


def build_submit_request(
    base_url: str, api_key: str, request: OptimizationRequest, *, lang: str | None = None
) -> HTTPRequest:
    """The ``POST`` that submits ``request``.

    Every text of ``request`` was checked when it was made (a lone surrogate
    is refused there, naming its field), so the body always encodes.
    """
    wire = request_to_wire(request)
    body = json.dumps(wire, ensure_ascii=False, allow_nan=False).encode()
    headers = _headers(api_key, lang)
    headers["Content-Type"] = "application/json"
    return HTTPRequest("POST", base_url + SUBMIT_PATH, SUBMIT_PATH, headers, body)


def redact_response(
    response: HTTPResponse, request: HTTPRequest, redactor: Redactor | None = None
) -> HTTPResponse:
    """``response`` with the credentials ``request`` carried taken out of it.

    A server (or a proxy) that echoes the ``Authorization`` header would otherwise
    put the API key into a model, an error, a log line or a file. The body and the
    headers are redacted in every encoding :class:`~spo_async._redact.Redactor`
    knows (raw, JSON-escaped, percent- or entity-encoded, any case). The client
    calls this on every answer, before parsing it; the same object comes back
    when there was nothing to take out. A caller that knows the request's only
    credential (a client, its key) passes its :class:`~spo_async._redact.Redactor`,
    built once, instead of having one looked up for every answer.
    """
    if redactor is None:
        redactor = redactor_for(request_secrets(request.headers))
    if redactor is None:
        return response
    body = redactor.data(response.body)
    headers = response.headers
    joined = "\n".join(f"{name}: {value}" for name, value in headers.items())
    if redactor.holds(joined.encode("utf-8", "surrogatepass")):
        headers = {redactor.text(name): redactor.text(value) for name, value in headers.items()}
    if body is response.body and headers is response.headers:
        return response
    return HTTPResponse(response.status, headers, body)


def build_task_request(
    base_url: str, api_key: str, task_id: str, *, lang: str | None = None
) -> HTTPRequest:
    """The ``GET`` that reads one snapshot of ``task_id``."""
    path = TASK_PATH + quote_task_id(task_id)
    return HTTPRequest("GET", base_url + path, path, _headers(api_key, lang))


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Read a ``Retry-After`` header in either form: seconds or an HTTP-date.

    ``now`` is the current wall-clock time (``time.time()``), passed in so that
    the function stays pure. A date in the past means "now" (0 s).
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - now)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


#: A ``\uXXXX`` escape that starts a surrogate: the cheap test before the exact one.
_SURROGATE_HINT: Final = re.compile(r"\\u[dD][89a-fA-F]")
#: A JSON escape of a lone surrogate (a high one not followed by a low one, or a low one
#: not preceded by a high one), behind an even run of backslashes (so a real escape).
_LONE_SURROGATE: Final = re.compile(
    r"(?<!\\)((?:\\\\)*)"
    r"(?:\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)


def _replace_lone_surrogates(text: str) -> str:
    r"""``text`` (JSON) with every escaped lone surrogate written as ``\ufffd`` instead.

    JSON may escape half of a surrogate pair (a JavaScript string cut in the middle of
    an emoji does), and ``json.loads`` returns such a half as is: a string that no
    UTF-8 stream, file, journal or terminal can take, which would fail later with an
    untyped ``UnicodeEncodeError``. The replacement character keeps the rest exact.
    """
    if _SURROGATE_HINT.search(text) is None:
        return text
    return _LONE_SURROGATE.sub(lambda m: m.group(1) + "\\ufffd", text)


#: ``bytes.translate`` arguments that keep only brackets, all written as ``[`` and ``]``.
_SQUARE: Final = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")


def _shape_problem(body: bytes) -> str | None:
    """Why the JSON in ``body`` is too large or too deep to read, if it is.

    Judged on the bytes, with C-speed counts, splits and replaces, before
    ``json.loads`` spends time (and stack) building values: each value but the first
    of its container needs a comma before it, each container a bracket, and there
    are at most two strings (a key and its value) per value. Commas, brackets and
    quotes inside strings count too at first; only when those rough counts are high
    are the strings cut out (escaped backslashes and quotes dropped, then the bytes
    split at the remaining quotes) and the rest counted again, so that text full of
    commas or code passes. Depth is measured on the brackets alone: each pass that
    removes the innermost ``[]`` pairs peels one level. A body that does not balance
    is left for ``json.loads`` to refuse.
    """
    limit = MAX_JSON_VALUES
    too_many = f"more than {limit} JSON values"
    shallow = body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH
    if shallow and len(body) <= limit:
        return None  # the usual answer: too small to hold that many values, too few brackets
    quotes = body.count(b'"')
    if shallow and quotes <= 4 * limit and body.count(b",") <= limit:
        return None
    # Each string is two quotes; "\"" inside one is not (nor the quote of "\\"", which
    # this count wrongly takes off too: the count stays a lower bound).
    if quotes > 4 * limit and quotes - body.count(b'\\"') > 4 * limit:
        return too_many
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in body else body
    pieces = unescaped.split(b'"')
    if len(pieces) > 4 * limit + 1:
        return too_many
    bare = b"".join(pieces[::2])  # what lies between strings
    if bare.count(b",") > limit:
        return too_many
    skeleton = bare.translate(_SQUARE, _NOT_BRACKETS)
    if len(skeleton) > 2 * limit:
        return too_many
    for _ in range(MAX_JSON_DEPTH):
        peeled = skeleton.replace(b"[]", b"")
        if len(peeled) == len(skeleton):
            return None  # no brackets left, or unbalanced ones
        skeleton = peeled
    return f"JSON nested deeper than {MAX_JSON_DEPTH} levels" if b"[]" in skeleton else None


def _decode_json(body: bytes, *, keep_lone_surrogates: bool = False) -> Any:
    """Decode JSON, or raise ``ValueError``.

    Refused as well: bytes that are not UTF-8, absurd nesting, and more values than
    any answer of the service holds (:data:`MAX_JSON_VALUES`). JSON between systems
    is UTF-8 (RFC 8259 §8.1): ``json.loads`` would also guess UTF-16 and UTF-32,
    which no answer of the service uses, and which would let text past the
    redaction of the raw body. A UTF-8 byte order mark is allowed. A body nested
    near the interpreter's recursion limit would otherwise raise ``RecursionError``
    here, or later wherever the value is copied or pickled. Escaped lone surrogates
    become U+FFFD unless ``keep_lone_surrogates`` (see :func:`_replace_lone_surrogates`).
    """
    problem = _shape_problem(body)
    if problem is not None:
        raise ValueError(problem)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not keep_lone_surrogates:
        text = _replace_lone_surrogates(text)
    try:
        payload = json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    return payload


def _envelope(payload: Any) -> Mapping[str, Any] | None:
    """The ``error`` object of a 302 error envelope, if ``payload`` is one."""
    if isinstance(payload, Mapping):
        error = payload.get("error")
        if isinstance(error, Mapping):
            return error
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _api_error_from_envelope(
    status: int, envelope: Mapping[str, Any], body: bytes, retry_after: float | None
) -> APIError:
    raw_code = envelope.get("err_code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    cls = ERR_CODE_ERRORS.get(code) if code is not None else None
    if cls is None:
        cls = _class_for_status(status)
    messages = {
        lang: text
        for lang, key in (("en", "message"), ("cn", "message_cn"), ("jp", "message_jp"))
        if (text := _text(envelope.get(key))) is not None
    }
    message = next(iter(messages.values()), None) or f"the service returned HTTP {status}"
    return cls(
        message,
        status=status,
        err_code=code,
        error_type=_text(envelope.get("type")),
        messages=messages,
        body=body,
        retry_after=retry_after,
    )


def _class_for_status(status: int) -> type[APIError]:
    if status in _STATUS_ERRORS:
        return _STATUS_ERRORS[status]
    if status >= 500:
        return TransientError
    if 400 <= status < 500:
        return InvalidRequestError
    return APIError


def error_from_response(response: HTTPResponse, *, now: float = 0.0) -> APIError:
    """The typed error for a non-2xx answer, or a 2xx answer holding an error envelope.

    The service's ``err_code`` decides the class when the body is a 302 error
    envelope; otherwise the HTTP status does. Non-JSON bodies (a gateway's HTML
    page) keep a snippet of their text. ``now`` is the wall-clock time used to
    read a ``Retry-After`` date.
    """
    retry_after = parse_retry_after(response.headers.get("retry-after"), now=now)
    try:
        payload = _decode_json(response.body)
    except ValueError:
        payload = None
    envelope = _envelope(payload)
    if envelope is not None:
        return _api_error_from_envelope(response.status, envelope, response.body, retry_after)
    cls = _class_for_status(response.status)
    reason = "an empty body" if not response.body.strip() else "a body that is not an error object"
    return cls(
        f"the service returned HTTP {response.status} with {reason}",
        status=response.status,
        body=response.body,
        retry_after=retry_after,
    )


def _ok_json(
    response: HTTPResponse, *, now: float, keep_lone_surrogates: bool = False
) -> Mapping[str, Any]:
    """The JSON object of a 2xx answer; any other answer raises a typed error."""
    if not 200 <= response.status < 300:
        raise error_from_response(response, now=now)
    try:
        payload = _decode_json(response.body, keep_lone_surrogates=keep_lone_surrogates)
    except ValueError as exc:
        # The decoder's own message is left out: it quotes the body's position, not its text.
        reason = "" if isinstance(exc, json.JSONDecodeError) else f" ({exc})"
        raise ProtocolError(
            f"HTTP {response.status} answer is not valid JSON{reason}",
            status=response.status,
            body=response.body,
        ) from None
    if not isinstance(payload, Mapping):
        raise ProtocolError(
            f"HTTP {response.status} answer is JSON but not an object",
            status=response.status,
            body=response.body,
        )
    return payload


def parse_submit_response(response: HTTPResponse, *, now: float = 0.0) -> str:
    """The task id from a submit answer, or a typed error.

    An id that cannot be queried (a lone surrogate, control or bidi characters, a
    path separator) or that is a number instead of a string raises
    :class:`ProtocolError`: the task probably exists and is billed, so the error
    keeps the id in ``task_id`` (escaped by :func:`~spo_async._redact.printable`,
    so that it can be printed, logged and journaled) instead of losing it.
    """
    # A lone surrogate in the id is kept, to be refused below with the id on the error:
    # replaced, it would become another id, polled in vain while the real one is lost.
    payload = _ok_json(response, now=now, keep_lone_surrogates=True)
    task_id = payload.get("task_id")
    problem: str | None = None
    if isinstance(task_id, str) and task_id:
        try:
            quote_task_id(task_id)
        except RequestValidationError as exc:
            problem = exc.problem
        else:
            return task_id
    elif isinstance(task_id, int) and not isinstance(task_id, bool):
        task_id, problem = str(task_id), "it is a number, not a string"
    if problem is not None:
        # Raised here, outside the except clause, so that no other error rides along.
        shown = printable(str(task_id))
        error = ProtocolError(
            f"submit answer has a task_id that cannot be queried ({problem}): {shown}",
            status=response.status,
            body=response.body,
        )
        error.task_id = shown
        raise error
    envelope = _envelope(payload)
    if envelope is not None and "err_code" in envelope:
        raise _api_error_from_envelope(response.status, envelope, response.body, None)
    raise ProtocolError(
        "submit answer has no task_id string", status=response.status, body=response.body
    )


def parse_task_response(
    response: HTTPResponse,
    task_id: str,
    *,
    max_rounds: int | None = None,
    strict_status: bool = False,
    now: float = 0.0,
) -> TaskResult:
    """One :class:`TaskResult` from a query answer, or a typed error.

    With ``strict_status`` an unknown ``status`` string raises
    :class:`ProtocolError`; by default it becomes ``TaskStatus.UNKNOWN``.
    """
    payload = _ok_json(response, now=now)
    envelope = _envelope(payload)
    if envelope is not None and "err_code" in envelope and "status" not in payload:
        raise _api_error_from_envelope(response.status, envelope, response.body, None)
    try:
        result = task_from_wire(payload, task_id=task_id, max_rounds=max_rounds)
    except cattrs.BaseValidationError as exc:
        detail = "; ".join(cattrs.transform_error(exc))
        raise ProtocolError(
            f"task answer breaks the contract: {detail}", status=response.status, body=response.body
        ) from None
    except (TypeError, ValueError) as exc:
        raise ProtocolError(
            f"task answer breaks the contract: {exc}", status=response.status, body=response.body
        ) from None
    problem = result_problem(result)
    if problem is not None:
        # Retried like any unreadable answer (is_query_retryable): a service that writes
        # ``status`` before ``best_prompt`` is read half-way now and whole a moment later,
        # and a success that never gains substance costs only the retry policy's
        # attempts before this error reaches the caller.
        raise ProtocolError(
            f"task answer breaks the contract: {problem}",
            status=response.status,
            body=response.body,
        )
    if strict_status and result.status is TaskStatus.UNKNOWN:
        raise ProtocolError(
            f"unknown task status {result.raw_status!r}", status=response.status, body=response.body
        )
    return result
