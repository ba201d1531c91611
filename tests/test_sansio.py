"""The sans-I/O core: requests built, base URLs and task ids checked, answers read into types."""

from __future__ import annotations

import email.utils
import json
from typing import Any

import pytest
from spo_async import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    InsufficientBalanceError,
    InvalidRequestError,
    NotFoundError,
    OptimizationRequest,
    ProtocolError,
    QAPair,
    QuotaExceededError,
    RateLimitError,
    RequestValidationError,
    TaskStatus,
    TransientError,
)
from spo_async._convert import request_to_wire
from spo_async._errors import BODY_SNIPPET_LIMIT
from spo_async._sansio import (
    ERR_CODE_ERRORS,
    MAX_JSON_DEPTH,
    SUBMIT_PATH,
    HTTPResponse,
    build_submit_request,
    build_task_request,
    error_from_response,
    normalize_base_url,
    parse_retry_after,
    parse_submit_response,
    parse_task_response,
    quote_task_id,
)

BASE = "https://api.302.ai"
KEY = "sk-secret-key-0123456789"
NOW = 1_700_000_000.0
REQUEST = OptimizationRequest(
    prompt="Act as the user's girlfriend",
    qa=[QAPair("Good morning", "[thoughts][reply]"), QAPair("你好", "")],
    model="claude-3-5-sonnet-20240620",
    requirements="reply in Chinese",
)


def response(status: int, body: bytes | dict[str, Any] | list[Any], **headers: str) -> HTTPResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HTTPResponse(
        status=status, headers={k.replace("_", "-"): v for k, v in headers.items()}, body=raw
    )


def envelope(code: Any = None, **fields: Any) -> dict[str, Any]:
    error = dict(fields)
    if code is not None:
        error["err_code"] = code
    return {"error": error}


# -- building requests -------------------------------------------------------------------------


def test_submit_request_is_a_json_post_with_bearer_auth() -> None:
    """Submit is POST /302/prompt/spo/submit with Bearer auth, JSON content type and body."""
    request = build_submit_request(BASE, KEY, REQUEST)
    assert (request.method, request.url, request.path) == ("POST", BASE + SUBMIT_PATH, SUBMIT_PATH)
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"].startswith("spo-async/")
    assert "Lang" not in request.headers
    assert request.body is not None
    assert json.loads(request.body) == request_to_wire(REQUEST)
    assert "你好".encode() in request.body  # sent as UTF-8, not \\u escapes


def test_task_request_is_a_bodiless_get_with_the_quoted_id() -> None:
    """Query is GET /302/prompt/spo/tasks/{id}: no body, no Content-Type, id percent-encoded."""
    request = build_task_request(BASE, KEY, "id with space")
    assert request.method == "GET"
    assert request.path == "/302/prompt/spo/tasks/id%20with%20space"
    assert request.url == BASE + request.path
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert "Content-Type" not in request.headers
    assert "Lang" not in request.headers
    assert request.body is None


@pytest.mark.parametrize("lang", ["en", "cn", "jp"])
def test_lang_header_is_sent_only_when_set(lang: str) -> None:
    """A chosen ``lang`` goes out as the Lang header on both calls."""
    assert build_submit_request(BASE, KEY, REQUEST, lang=lang).headers["Lang"] == lang
    assert build_task_request(BASE, KEY, "t", lang=lang).headers["Lang"] == lang


@pytest.mark.parametrize("request_kind", ["submit", "task"], ids=["submit", "task"])
def test_request_repr_never_shows_the_api_key(request_kind: str) -> None:
    """repr(request) redacts the Authorization header."""
    request = (
        build_submit_request(BASE, KEY, REQUEST)
        if request_kind == "submit"
        else build_task_request(BASE, KEY, "t")
    )
    text = repr(request)
    assert KEY not in text
    assert "<redacted>" in text


def test_build_task_request_refuses_a_bad_id_before_any_network() -> None:
    """A task id that cannot be a path segment fails while building the request."""
    with pytest.raises(RequestValidationError):
        build_task_request(BASE, KEY, "../submit")


# -- task ids ----------------------------------------------------------------------------------

QUOTED = [
    ("plain", "abc-123_x.y~z", "abc-123_x.y~z"),
    ("space", "a b", "a%20b"),
    ("unicode", "täsk-日本", "t%C3%A4sk-%E6%97%A5%E6%9C%AC"),
    ("percent", "100%", "100%25"),
    ("colon-plus-equals", "a:b+c=d", "a%3Ab%2Bc%3Dd"),
    ("dots-inside", "a..b", "a..b"),
    ("max-length", "x" * 256, "x" * 256),
]


@pytest.mark.parametrize(("task_id", "quoted"), [q[1:] for q in QUOTED], ids=[q[0] for q in QUOTED])
def test_quote_task_id_percent_encodes_everything_but_unreserved(task_id: str, quoted: str) -> None:
    """Task ids are opaque; everything outside the unreserved set is percent-encoded."""
    assert quote_task_id(task_id) == quoted


BAD_IDS: list[tuple[str, Any]] = [
    ("empty", ""),
    ("leading-space", " x"),
    ("trailing-space", "x "),
    ("dot-dot", ".."),
    ("dot", "."),
    ("slash", "a/b"),
    ("backslash", "a\\b"),
    ("question-mark", "a?b"),
    ("hash", "a#b"),
    ("nul", "a\x00b"),
    ("newline", "a\nb"),
    ("tab", "a\tb"),
    ("del", "a\x7fb"),
    ("too-long", "x" * 257),
    ("int", 123),
    ("none", None),
    ("bytes", b"abc"),
]


@pytest.mark.parametrize("task_id", [b[1] for b in BAD_IDS], ids=[b[0] for b in BAD_IDS])
def test_quote_task_id_refuses_ids_that_could_leave_the_path(task_id: Any) -> None:
    """Ids that are empty, padded, path-like, control-laden, too long or not str are refused."""
    with pytest.raises(RequestValidationError) as info:
        quote_task_id(task_id)
    assert info.value.field == "task_id"


# -- base URLs ---------------------------------------------------------------------------------

GOOD_URLS: list[tuple[str, str, bool, str]] = [
    ("https", "https://api.302.ai", False, "https://api.302.ai"),
    ("trailing-slash", "https://api.302.ai/", False, "https://api.302.ai"),
    ("path-slashes", "https://proxy.example/v1//", False, "https://proxy.example/v1"),
    ("surrounding-space", "  https://api.302.ai  ", False, "https://api.302.ai"),
    ("http-127.0.0.1", "http://127.0.0.1:8080/", False, "http://127.0.0.1:8080"),
    ("http-127.x", "http://127.0.0.2", False, "http://127.0.0.2"),
    ("http-localhost", "http://localhost:1234", False, "http://localhost:1234"),
    ("http-ipv6-loopback", "http://[::1]:9000/", False, "http://[::1]:9000"),
    ("http-remote-opt-in", "http://api.302.ai/", True, "http://api.302.ai"),
]


@pytest.mark.parametrize(
    ("url", "insecure", "expected"), [g[1:] for g in GOOD_URLS], ids=[g[0] for g in GOOD_URLS]
)
def test_normalize_base_url_accepts_https_and_loopback_http(
    url: str, insecure: bool, expected: str
) -> None:
    """https anywhere, http to loopback (or anywhere when opted in); trailing slash stripped."""
    assert normalize_base_url(url, allow_insecure_http=insecure) == expected


BAD_URLS: list[tuple[str, Any]] = [
    ("http-remote", "http://api.302.ai"),
    ("http-any-address", "http://0.0.0.0:80"),
    ("http-private-ip", "http://10.0.0.1"),
    ("ftp", "ftp://api.302.ai"),
    ("relative", "/302/prompt"),
    ("no-scheme", "api.302.ai"),
    ("empty", ""),
    ("no-host", "https://"),
    ("query", "https://api.302.ai/?x=1"),
    ("fragment", "https://api.302.ai/#top"),
    ("credentials", "https://user:pass@api.302.ai"),
    ("username", "https://user@api.302.ai"),
    ("broken-ipv6", "https://[::1"),
    ("port-not-a-number", "https://api.302.ai:abc"),
    ("port-out-of-range", "https://api.302.ai:99999"),
    ("not-a-string", b"https://api.302.ai"),
    ("none", None),
]


@pytest.mark.parametrize("url", [b[1] for b in BAD_URLS], ids=[b[0] for b in BAD_URLS])
def test_normalize_base_url_refuses_unsafe_or_malformed_urls(url: Any) -> None:
    """Every unusable or unsafe base URL raises ConfigurationError, never ValueError."""
    with pytest.raises(ConfigurationError):
        normalize_base_url(url)


# -- Retry-After -------------------------------------------------------------------------------

RETRY_AFTER: list[tuple[str, str | None, float | None]] = [
    ("absent", None, None),
    ("seconds", "30", 30.0),
    ("zero", "0", 0.0),
    ("fractional", "1.5", 1.5),
    ("padded", " 7 ", 7.0),
    ("date-future", email.utils.formatdate(NOW + 90, usegmt=True), 90.0),
    ("date-past", email.utils.formatdate(NOW - 90, usegmt=True), 0.0),
    ("date-numeric-zone", email.utils.formatdate(NOW + 10, usegmt=True)[:-3] + "+0000", 10.0),
    ("date-other-zone", email.utils.formatdate(NOW + 3600 + 10, usegmt=True)[:-3] + "+0100", 10.0),
    ("date-without-zone", "Tue, 14 Nov 2023 22:13:20", None),
    ("garbage", "soon", None),
    ("empty", "", None),
    ("negative", "-1", None),
    ("nan", "nan", None),
    ("infinity", "inf", None),
    ("hex", "0x10", None),
    ("impossible-date", "Mon, 32 Jan 2000 00:00:00 GMT", None),
    ("year-out-of-range", "Mon, 01 Jan 99999 00:00:00 GMT", None),
    ("absurd-zone", "Mon, 01 Jan 2000 00:00:00 +9999", None),
]


@pytest.mark.parametrize(
    ("value", "expected"), [r[1:] for r in RETRY_AFTER], ids=[r[0] for r in RETRY_AFTER]
)
def test_parse_retry_after_reads_seconds_or_a_date(
    value: str | None, expected: float | None
) -> None:
    """Seconds or an HTTP-date relative to ``now``; anything unreadable or negative is None."""
    assert parse_retry_after(value, now=NOW) == expected


# -- error_from_response -----------------------------------------------------------------------

#: 302.AI's documented error codes, row by row: err_code -> the class the SDK raises.
SPEC_ERR_CODES: list[tuple[int, type[APIError]]] = [
    (-10001, AuthenticationError),
    (-10002, AuthenticationError),
    (-10003, TransientError),
    (-10004, InsufficientBalanceError),
    (-10005, AuthenticationError),
    (-10006, QuotaExceededError),
    (-10007, QuotaExceededError),
    (-10008, InvalidRequestError),
    (-10009, InvalidRequestError),
    (-10010, NotFoundError),
    (-10011, InvalidRequestError),
    (-10012, QuotaExceededError),
    (-10018, QuotaExceededError),
    (-1024, TransientError),
]


def test_err_code_table_matches_the_spec_exactly() -> None:
    """ERR_CODE_ERRORS holds exactly the spec's rows, no more."""
    assert dict(ERR_CODE_ERRORS) == dict(SPEC_ERR_CODES)


#: An envelope's err_code decides the class whatever the HTTP status says.
STATUSES_FOR_CODES = [400, 401, 404, 429, 503]


@pytest.mark.parametrize(
    ("code", "cls", "status"),
    [(c, k, s) for c, k in SPEC_ERR_CODES for s in STATUSES_FOR_CODES],
    ids=[f"{c}-http{s}" for c, _ in SPEC_ERR_CODES for s in STATUSES_FOR_CODES],
)
def test_known_err_code_decides_the_class_before_the_http_status(
    code: int, cls: type[APIError], status: int
) -> None:
    """Each documented err_code maps to its class at any HTTP status, and the code is kept."""
    error = error_from_response(response(status, envelope(code, message="m")))
    assert type(error) is cls
    assert (error.err_code, error.status) == (code, status)
    assert error.retryable is (cls in {TransientError, RateLimitError})


UNKNOWN_CODES: list[tuple[Any, int, type[APIError], int | None]] = [
    (-99, 400, InvalidRequestError, -99),
    (-10013, 403, AuthenticationError, -10013),
    (-100, 503, TransientError, -100),
    (-101, 429, RateLimitError, -101),
    (-10019, 418, InvalidRequestError, -10019),
    (0, 302, APIError, 0),
    (12345, 200, APIError, 12345),
    ("-10001", 404, NotFoundError, None),
    (True, 402, InsufficientBalanceError, None),
    (-10001.0, 500, TransientError, None),
]


@pytest.mark.parametrize(
    ("code", "status", "cls", "kept"),
    UNKNOWN_CODES,
    ids=[f"{c!r}-http{s}" for c, s, _, _ in UNKNOWN_CODES],
)
def test_unknown_or_mistyped_err_code_falls_back_to_the_http_status(
    code: Any, status: int, cls: type[APIError], kept: int | None
) -> None:
    """An err_code not documented (or not an int) leaves the class to the HTTP status."""
    error = error_from_response(response(status, envelope(code, message="m")))
    assert type(error) is cls
    assert error.err_code == kept


NO_ENVELOPE: list[tuple[int, type[APIError]]] = [
    (401, AuthenticationError),
    (402, InsufficientBalanceError),
    (403, AuthenticationError),
    (404, NotFoundError),
    (408, TransientError),
    (429, RateLimitError),
    (400, InvalidRequestError),
    (418, InvalidRequestError),
    (451, InvalidRequestError),
    (500, TransientError),
    (502, TransientError),
    (503, TransientError),
    (504, TransientError),
    (599, TransientError),
    (302, APIError),
    (200, APIError),
]


@pytest.mark.parametrize(("status", "cls"), NO_ENVELOPE, ids=[f"http{s}" for s, _ in NO_ENVELOPE])
@pytest.mark.parametrize(
    "body",
    [b"", b"<html>Bad Gateway</html>", b'{"message": "x"}', b'{"error": "text"}', b"[1]"],
    ids=["empty", "html", "object-no-error", "error-is-a-string", "array"],
)
def test_without_an_envelope_the_http_status_decides_the_class(
    status: int, cls: type[APIError], body: bytes
) -> None:
    """401/403 auth, 402 balance, 404 not found, 408/5xx transient, 429 rate, other 4xx invalid."""
    error = error_from_response(response(status, body))
    assert type(error) is cls
    assert error.err_code is None
    assert error.status == status
    assert error.messages == {}


def test_envelope_messages_in_three_languages_are_kept() -> None:
    """message, message_cn and message_jp are kept, and localized() picks one."""
    error = error_from_response(
        response(
            500,
            envelope(
                -10003,
                message="Network error",
                message_cn="网络错误",
                message_jp="ネットワークエラー",
                type="api_error",
            ),
        )
    )
    assert error.message == "Network error"
    assert error.messages == {"en": "Network error", "cn": "网络错误", "jp": "ネットワークエラー"}
    assert error.localized("cn") == "网络错误"
    assert error.localized("jp") == "ネットワークエラー"
    assert error.localized("en") == "Network error"
    assert error.localized("de") == "Network error"
    assert error.error_type == "api_error"
    assert str(error) == "HTTP 500 err_code=-10003: Network error"


MESSAGE_FALLBACK: list[tuple[str, dict[str, Any], str, dict[str, str]]] = [
    ("cn-only", {"message_cn": "中文"}, "中文", {"cn": "中文"}),
    ("none", {}, "the service returned HTTP 400", {}),
    (
        "empty-and-wrong-types",
        {"message": "", "message_cn": 5, "type": 3},
        "the service returned HTTP 400",
        {},
    ),
]


@pytest.mark.parametrize(
    ("fields", "message", "messages"),
    [m[1:] for m in MESSAGE_FALLBACK],
    ids=[m[0] for m in MESSAGE_FALLBACK],
)
def test_envelope_fields_are_all_optional(
    fields: dict[str, Any], message: str, messages: dict[str, str]
) -> None:
    """Missing, empty or mistyped envelope fields never fail: the message falls back."""
    error = error_from_response(response(400, envelope(-10011, **fields)))
    assert error.message == message
    assert error.messages == messages
    assert error.localized("en") == message
    assert error.error_type is None


RETRY_AFTER_HEADERS = [
    ("seconds", "12", 12.0),
    ("date", email.utils.formatdate(NOW + 5, usegmt=True), 5.0),
    ("garbage", "later", None),
]


@pytest.mark.parametrize(
    ("value", "expected"),
    [r[1:] for r in RETRY_AFTER_HEADERS],
    ids=[r[0] for r in RETRY_AFTER_HEADERS],
)
def test_429_carries_retry_after_from_the_header(value: str, expected: float | None) -> None:
    """A 429's Retry-After header (seconds or date) becomes ``retry_after``."""
    error = error_from_response(response(429, b"", retry_after=value), now=NOW)
    assert isinstance(error, RateLimitError)
    assert error.retry_after == expected


def test_envelope_error_also_carries_retry_after() -> None:
    """Retry-After is read whatever the body, so an envelope error keeps it too."""
    error = error_from_response(response(503, envelope(-10003), retry_after="3"), now=NOW)
    assert error.retry_after == 3.0


NON_JSON_BODIES: list[tuple[str, bytes, str]] = [
    ("html-502", b"<html><body><h1>502 Bad Gateway</h1></body></html>", "502 Bad Gateway"),
    ("empty", b"", "an empty body"),
    ("whitespace", b" \r\n", "an empty body"),
    ("truncated-json", b'{"error": {"err_code": -10003, "mess', "not an error object"),
    ("non-utf8", b"\xff\xfe\x80 gateway", "\ufffd"),
]


@pytest.mark.parametrize(
    ("body", "needle"), [n[1:] for n in NON_JSON_BODIES], ids=[n[0] for n in NON_JSON_BODIES]
)
def test_non_json_error_body_becomes_transient_with_a_snippet(body: bytes, needle: str) -> None:
    """A gateway's 502 page (or any unreadable body) is a TransientError keeping its text."""
    error = error_from_response(response(502, body))
    assert type(error) is TransientError
    assert needle in error.body or needle in str(error)
    assert error.body == body.decode("utf-8", errors="replace")


def test_huge_error_body_is_truncated_in_the_snippet() -> None:
    """Only the first BODY_SNIPPET_LIMIT bytes of a body are kept, with a note of the rest."""
    body = b"<p>" + b"x" * 100_000
    error = error_from_response(response(503, body))
    assert error.body.startswith("<p>xxx")
    assert error.body.endswith(f"... [{len(body) - BODY_SNIPPET_LIMIT} more bytes]")
    assert len(error.body) < BODY_SNIPPET_LIMIT + 40


@pytest.mark.parametrize(
    "depth", [MAX_JSON_DEPTH + 1, 5_000, 200_000], ids=["over-limit", "deep", "very-deep"]
)
def test_absurdly_nested_json_is_unreadable_not_a_recursion_error(depth: int) -> None:
    """JSON nested past the limit is treated like non-JSON everywhere."""
    body = b"[" * depth + b"]" * depth
    assert type(error_from_response(response(500, body))) is TransientError
    with pytest.raises(ProtocolError, match="not valid JSON"):
        parse_task_response(response(200, body), "t")
    with pytest.raises(ProtocolError, match="not valid JSON"):
        parse_submit_response(response(200, body))


def test_json_nested_up_to_the_limit_is_read() -> None:
    """Nesting within the limit parses; the nested value is kept in ``extra``."""
    deep: Any = "leaf"
    for _ in range(MAX_JSON_DEPTH - 1):
        deep = [deep]
    result = parse_task_response(response(200, {"status": "queue", "deep": deep}), "t")
    assert result.extra["deep"] == deep


# -- parse_submit_response ---------------------------------------------------------------------


def test_submit_answer_yields_the_task_id() -> None:
    """A 2xx body with a task_id string returns it, whatever else it holds."""
    assert parse_submit_response(response(200, {"task_id": "abc", "x": 1})) == "abc"
    assert (
        parse_submit_response(response(201, {"task_id": "abc", "error": {"err_code": 1}})) == "abc"
    )


BAD_SUBMITS: list[tuple[str, int, bytes | dict[str, Any] | list[Any]]] = [
    ("missing", 200, {"id": "abc"}),
    ("empty", 200, {"task_id": ""}),
    ("int", 200, {"task_id": 123}),
    ("null", 200, {"task_id": None}),
    ("list", 200, {"task_id": ["abc"]}),
    ("error-without-code", 200, {"error": {"message": "x"}}),
    ("error-string", 200, {"error": "x"}),
    ("html", 200, b"<html>ok</html>"),
    ("empty-body", 204, b""),
    ("truncated", 200, b'{"task_id": "ab'),
    ("array", 200, [{"task_id": "abc"}]),
    ("string", 200, b'"abc"'),
]


@pytest.mark.parametrize(
    ("status", "body"), [b[1:] for b in BAD_SUBMITS], ids=[b[0] for b in BAD_SUBMITS]
)
def test_submit_answer_without_a_usable_task_id_is_a_protocol_error(
    status: int, body: bytes | dict[str, Any] | list[Any]
) -> None:
    """A 2xx answer that is not JSON, not an object, or lacks a task_id string is a breach."""
    with pytest.raises(ProtocolError) as info:
        parse_submit_response(response(status, body))
    assert info.value.status == status


@pytest.mark.parametrize(("code", "cls"), SPEC_ERR_CODES, ids=[str(c) for c, _ in SPEC_ERR_CODES])
def test_2xx_submit_answer_with_an_err_code_is_an_api_error(code: int, cls: type[APIError]) -> None:
    """A 200 whose body is an error envelope raises the err_code's class."""
    with pytest.raises(cls) as info:
        parse_submit_response(response(200, envelope(code, message="no")))
    assert (info.value.err_code, info.value.status) == (code, 200)


def test_2xx_submit_envelope_with_unusable_code_is_a_plain_api_error() -> None:
    """An envelope whose err_code is present but not an int still reports an APIError."""
    with pytest.raises(APIError) as info:
        parse_submit_response(response(200, envelope("x")))
    assert type(info.value) is APIError


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, InvalidRequestError), (401, AuthenticationError), (503, TransientError)],
    ids=["400", "401", "503"],
)
def test_non_2xx_submit_answer_is_an_api_error(status: int, cls: type[APIError]) -> None:
    """A non-2xx submit answer raises the typed error even if it holds a task_id."""
    with pytest.raises(cls):
        parse_submit_response(response(status, {"task_id": "abc"}))


# -- parse_task_response -----------------------------------------------------------------------

TASK_BODY = {
    "status": "processing",
    "round_data_list": [{"round": 1, "prompt": "p", "success": True, "sample": []}],
}


def test_task_answer_becomes_a_task_result_with_max_rounds_filled() -> None:
    """A 200 task body parses; the task id and the known max_rounds are filled in."""
    result = parse_task_response(response(200, TASK_BODY), "t-9", max_rounds=4)
    assert (result.task_id, result.status, result.max_rounds) == ("t-9", TaskStatus.PROCESSING, 4)
    assert result.rounds[0].number == 1


BAD_TASK_ANSWERS: list[tuple[str, bytes | dict[str, Any] | list[Any], str]] = [
    ("html", b"<html>maintenance</html>", "not valid JSON"),
    ("truncated", b'{"status": "proc', "not valid JSON"),
    ("empty", b"", "not valid JSON"),
    ("non-utf8", b'{"status": "\xff"}', "not valid JSON"),
    ("array", [TASK_BODY], "not an object"),
    ("number", b"5", "not an object"),
    ("null", b"null", "not an object"),
    ("no-status", {"round_data_list": []}, "breaks the contract"),
    ("status-int", {"status": 3}, "breaks the contract"),
    (
        "round-str",
        {"status": "queue", "round_data_list": [{"round": "1", "prompt": "p"}]},
        "breaks",
    ),
    ("rounds-object", {"status": "queue", "round_data_list": {"1": {}}}, "breaks the contract"),
    (
        "success-int",
        {"status": "queue", "round_data_list": [{"round": 1, "prompt": "p", "success": 1}]},
        "breaks",
    ),
    ("best-round-str", {"status": "success", "best_round": "2"}, "breaks the contract"),
    (
        "duplicate-rounds-differ",
        {
            "status": "queue",
            "round_data_list": [{"round": 1, "prompt": "a"}, {"round": 1, "prompt": "b"}],
        },
        "listed twice",
    ),
    ("error-object-no-code", {"error": {"message": "x"}}, "breaks the contract"),
]


@pytest.mark.parametrize(
    ("body", "match"), [b[1:] for b in BAD_TASK_ANSWERS], ids=[b[0] for b in BAD_TASK_ANSWERS]
)
def test_unreadable_200_task_answer_is_a_protocol_error(
    body: bytes | dict[str, Any] | list[Any], match: str
) -> None:
    """HTML, bad JSON, non-objects and wrong types raise ProtocolError, never cattrs/TypeError."""
    with pytest.raises(ProtocolError, match=match) as info:
        parse_task_response(response(200, body), "t")
    assert type(info.value) is ProtocolError
    assert info.value.status == 200


def test_200_envelope_without_status_is_an_api_error() -> None:
    """A 200 holding an error envelope and no status is the service's error, typed by err_code."""
    with pytest.raises(NotFoundError) as info:
        parse_task_response(response(200, envelope(-10010, message="no such task")), "t")
    assert info.value.err_code == -10010


def test_200_envelope_with_status_is_a_failed_task() -> None:
    """An error object next to a status is the task's own failure detail, not an API error."""
    result = parse_task_response(
        response(200, {"status": "processing", **envelope(-10003, message="m")}), "t"
    )
    assert result.failed
    assert result.error is not None
    assert result.error.err_code == -10003


@pytest.mark.parametrize(
    ("status", "cls"),
    [(404, NotFoundError), (502, TransientError), (429, RateLimitError)],
    ids=["404", "502", "429"],
)
def test_non_2xx_task_answer_is_an_api_error(status: int, cls: type[APIError]) -> None:
    """A non-2xx query answer raises the typed error, with Retry-After read against ``now``."""
    with pytest.raises(cls) as info:
        parse_task_response(response(status, b"", retry_after="2"), "t", now=NOW)
    assert info.value.retry_after == 2.0


@pytest.mark.parametrize("raw", ["paused", "apikeyFail"])
def test_unknown_status_is_kept_or_refused_under_strict_status(raw: str) -> None:
    """By default an unknown status is UNKNOWN; with strict_status it is a ProtocolError."""
    answer = response(200, {"status": raw})
    assert parse_task_response(answer, "t").status is TaskStatus.UNKNOWN
    with pytest.raises(ProtocolError, match=f"unknown task status '{raw}'"):
        parse_task_response(answer, "t", strict_status=True)


def test_strict_status_accepts_known_statuses() -> None:
    """strict_status only refuses statuses the SDK does not know."""
    body = {"status": "success", "best_prompt": "p"}
    result = parse_task_response(response(200, body), "t", strict_status=True)
    assert result.succeeded


def test_a_submit_answer_with_an_unusable_task_id_keeps_the_id() -> None:
    """A task id that cannot be queried is refused, but the error still carries it."""
    response = HTTPResponse(200, {}, b'{"task_id": "a/b"}')
    with pytest.raises(ProtocolError) as info:
        parse_submit_response(response)
    assert info.value.task_id == "a/b"
