"""What the emulator says on the wire when things are not fine: envelopes, pages, validation.

302.AI answers errors with one envelope carrying an ``err_code`` and the
message in English, Chinese and Japanese; gateways in front of it answer with HTML
pages. This module builds both, and checks a submit body against the
submit contract so the emulator rejects exactly what the service would.
"""

from __future__ import annotations

import json
import math
from http import HTTPStatus
from typing import Any

__all__ = [
    "MESSAGES",
    "envelope",
    "html_page",
    "localized_body",
    "validate_submit",
]

MESSAGES: dict[int | str, tuple[str, str, str]] = {
    -10001: ("Missing 302 API Key", "缺少 302 API 密钥", "302 APIキーがありません"),
    -10002: (
        "This tool has been disabled or deleted",
        "该工具已被禁用或删除",
        "このツールは無効化または削除されました",
    ),
    -10003: (
        "Network error, please try again later",
        "网络错误，请稍后重试",  # noqa: RUF001 - Chinese punctuation
        "ネットワークエラーです。しばらくしてから再試行してください",
    ),
    -10004: ("Insufficient account balance", "账户余额不足", "アカウント残高が不足しています"),
    -10005: (
        "Account credential has expired, please log in again",
        "账户凭证已过期，请重新登录",  # noqa: RUF001 - Chinese punctuation
        "アカウントの認証情報の有効期限が切れました。再度ログインしてください",
    ),
    -10006: ("Total quota has been reached", "总额度已达上限", "総利用枠の上限に達しました"),
    -10007: ("Daily quota has been reached", "今日额度已达上限", "本日の利用枠の上限に達しました"),
    -10008: (
        "No channel is available at the moment",
        "当前无可用渠道",
        "現在利用可能なチャネルがありません",
    ),
    -10009: (
        "This API function is not supported",
        "不支持当前 API 功能",
        "このAPI機能はサポートされていません",
    ),
    -10010: ("Resource not found", "未找到资源", "リソースが見つかりません"),
    -10011: ("Invalid request", "无效的请求", "無効なリクエストです"),
    -10012: (
        "The free tool's hourly quota has been reached",
        "免费工具本小时额度已达上限",
        "無料ツールの1時間あたりの利用枠の上限に達しました",
    ),
    -10018: (
        "Monthly quota has been reached",
        "本月额度已达上限",
        "今月の利用枠の上限に達しました",
    ),
    -1024: (
        "Connection to the AI interface timed out",
        "AI 接口连接超时",
        "AIインターフェースへの接続がタイムアウトしました",
    ),
    "rate_limit": (
        "Too many requests, please retry later",
        "请求过于频繁，请稍后重试",  # noqa: RUF001 - Chinese punctuation
        "リクエストが多すぎます。しばらくしてから再試行してください",
    ),
    "unknown": ("Unknown error", "未知错误", "不明なエラー"),
}
"""English, Chinese and Japanese texts per ``err_code`` (and for a 429 without one)."""


def envelope(err_code: int, detail: str | None = None) -> bytes:
    """Return the 302 error envelope for ``err_code``; ``detail`` is appended to the English."""
    message, message_cn, message_jp = MESSAGES.get(err_code, MESSAGES["unknown"])
    if detail:
        message = f"{message}: {detail}"
    error = {
        "err_code": err_code,
        "message": message,
        "message_cn": message_cn,
        "message_jp": message_jp,
        "type": "api_error",
    }
    return json.dumps({"error": error}, ensure_ascii=False).encode()


def localized_body(key: str) -> bytes:
    """Return an error body with the three messages for ``key`` but no ``err_code``.

    Used for a 429, whose envelope (if any) is undocumented: leaving the code out makes a
    client fall back on the HTTP status, as the service's error mapping orders.
    """
    message, message_cn, message_jp = MESSAGES[key]
    error = {
        "message": message,
        "message_cn": message_cn,
        "message_jp": message_jp,
        "type": "rate_limit_error",
    }
    return json.dumps({"error": error}, ensure_ascii=False).encode()


def html_page(status: int) -> bytes:
    """Return the kind of HTML error page a CDN or gateway sends for a 5xx."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    title = f"{status} {phrase}"
    return (
        "<html>\r\n<head><title>" + title + "</title></head>\r\n<body>\r\n"
        "<center><h1>" + title + "</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


def _is_int(value: object) -> bool:
    """Whether ``value`` is a JSON integer (a ``bool`` is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """Whether ``value`` is a finite JSON number (a ``bool`` is not)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return _is_int(value)


def validate_submit(body: Any, max_rounds_limit: int) -> str | None:
    """Return what is wrong with a decoded submit body, or ``None`` if it is acceptable.

    Checks the submit contract: ``qa`` a non-empty list of objects with string ``question`` and
    ``answer`` (extra keys allowed), ``prompt`` and ``model`` strings, ``max_rounds`` an
    integer from 1 to ``max_rounds_limit``, and the optional ``requirements`` (string or
    null), ``language`` (string) and ``temperature`` (number). Unknown keys are ignored.
    Whether the model exists is the caller's business (it is a 503, not a 400).
    """
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    qa = body.get("qa")
    if not isinstance(qa, list) or not qa:
        return "qa must be a non-empty array"
    for index, item in enumerate(qa):
        if not isinstance(item, dict):
            return f"qa[{index}] must be an object"
        for key in ("question", "answer"):
            if not isinstance(item.get(key), str):
                return f"qa[{index}].{key} must be a string"
    for key in ("prompt", "model"):
        if not isinstance(body.get(key), str):
            return f"{key} must be a string"
    max_rounds = body.get("max_rounds")
    if not isinstance(max_rounds, int) or isinstance(max_rounds, bool):
        return "max_rounds must be an integer"
    if not 1 <= max_rounds <= max_rounds_limit:
        return f"max_rounds must be between 1 and {max_rounds_limit}"
    if "requirements" in body and not isinstance(body["requirements"], str | None):
        return "requirements must be a string or null"
    if "language" in body and not isinstance(body["language"], str):
        return "language must be a string"
    if "temperature" in body and not _is_number(body["temperature"]):
        return "temperature must be a number"
    return None
