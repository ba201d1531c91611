"""Control characters: the service's text cannot forge log lines or rewrite a terminal.

Server text reaches log records (an error message in a retry line, a status in a
warning). CR/LF there plant a fake log line, ESC sequences and C1 controls drive the
terminal that shows the log, bidi overrides show something else than the file holds.
Every record of the ``spo_async`` logger is escaped; ``printable`` is the helper the
CLI uses for the same job; models keep the service's text exactly.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import unicodedata
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from spo_async import AsyncSPOClient, RequestLimiter, RetryPolicy, TransientError
from spo_async._logging import EscapingFilter
from spo_async._redact import printable
from spo_async._sansio import HTTPResponse, parse_task_response
from spo_async.polling import FixedSchedule
from spo_async.testing import Emulator, Fault, FaultKind

#: Characters that must never reach a log line or a terminal raw.
DANGEROUS = {
    "CR LF (a forged log line)": "ok\r\n2024-01-01 INFO spo_async: all good",
    "ESC sequence (clear screen)": "\x1b[2J\x1b[H",
    "OSC sequence (window title)": "\x1b]0;pwned\x07",
    "C1 CSI": "\x9b31m red",
    "NEL": "a\x85b",
    "bidi override": "user\u202egnp.exe",
    "bidi isolate": "\u2066hidden\u2069",
    "left-to-right mark": "a\u200eb",
    "line separator": "a\u2028b",
    "paragraph separator": "a\u2029b",
    "lone surrogate": "a\ud800b",
    "byte order mark": "\ufeffa",
    "tag characters (hidden text)": "a\U000e0041\U000e0042",
    "NUL": "a\x00b",
    "DEL": "a\x7fb",
    "backspace": "secret\x08\x08\x08\x08\x08\x08public",
}

#: Text that must come through unchanged.
HARMLESS = {
    "ASCII": "Act as a careful reviewer (v2): 100% sure?",
    "Chinese": "扮演用户的女朋友",
    "Japanese": "ユーザーの彼女として振る舞う",
    "Arabic (right to left, no override)": "تصرف كصديقة",
    "emoji with zero-width joiners": "👨\u200d👩\u200d👧",
    "Persian with a zero-width non-joiner": "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
    "non-breaking and ideographic spaces": "a\u00a0b\u3000c",
    "backslashes": "C:\\temp\\x1b",
}


def unsafe_left(text: str) -> list[str]:
    """The characters of ``text`` that a terminal or a log should never get raw."""
    return [
        ch
        for ch in text
        if unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Zl", "Zp"} and ch not in "\u200c\u200d"
    ]


@pytest.mark.parametrize("text", DANGEROUS.values(), ids=list(DANGEROUS))
def test_printable_escapes_what_could_rewrite_a_terminal(text: str) -> None:
    """Controls, bidi and invisible format characters come out as visible escapes."""
    shown = printable(text)
    assert unsafe_left(shown) == []
    assert shown != text
    shown.encode("utf-8")  # a lone surrogate no longer breaks a UTF-8 stream


@pytest.mark.parametrize("text", HARMLESS.values(), ids=list(HARMLESS))
def test_printable_keeps_every_script_and_emoji(text: str) -> None:
    """Ordinary text of any script, emoji sequences included, is returned as it is."""
    assert printable(text) is text


def test_printable_multiline_keeps_newlines_and_tabs_only() -> None:
    """For a prompt on a terminal, newlines and tabs stay; CR and the rest are escaped."""
    assert printable("a\n\tb\r\x1b", multiline=True) == "a\n\tb\\x0d\\x1b"
    assert printable("a\n\tb") == "a\\x0a\\x09b"


def test_printable_escapes_every_control_and_format_character_python_knows() -> None:
    """The escaped set covers the running Python's Unicode database (Cc, Cf, Cs, Zl, Zp)."""
    every = "".join(
        chr(code)
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) in {"Cc", "Cf", "Cs", "Zl", "Zp"}
    )
    assert unsafe_left(printable(every)) == []


@given(st.text())
def test_printable_leaves_nothing_unsafe_and_spares_clean_text(text: str) -> None:
    """Any text comes out with no unsafe character; text without any comes out unchanged."""
    shown = printable(text)
    assert unsafe_left(shown) == []
    if not unsafe_left(text):
        assert shown == text


def test_models_keep_the_services_text_exactly() -> None:
    """Escaping is for display: a parsed answer keeps control characters as they came."""
    prompt = "line 1\r\nline 2\x1b[0m\u202e"
    body = {
        "status": "success",
        "best_prompt": prompt,
        "round_data_list": [{"round": 1, "prompt": prompt, "success": True, "sample": []}],
    }
    result = parse_task_response(HTTPResponse(200, {}, json.dumps(body).encode()), "t")
    assert result.best_prompt == prompt
    assert result.rounds[0].prompt == prompt


# -- log records ---------------------------------------------------------------------------


class Lines:
    """What a plain text handler on the SDK's logger writes."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(
            logging.Formatter("%(levelname)s %(name)s %(message)s [%(task_id)s]")
        )
        self.records: list[logging.LogRecord] = []

    def written(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def lines() -> Iterator[Lines]:
    logger = logging.getLogger("spo_async")
    collected = Lines()

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if not hasattr(record, "task_id"):
                record.task_id = None
            collected.records.append(record)

    keep = Keep()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(keep)  # first, so that every record has task_id for the formatter
    logger.addHandler(collected.handler)
    yield collected
    logger.removeHandler(keep)
    logger.removeHandler(collected.handler)
    logger.setLevel(level)


def envelope(message: str) -> str:
    return json.dumps({"error": {"err_code": -10003, "message": message, "message_cn": message}})


@pytest.mark.parametrize("text", DANGEROUS.values(), ids=list(DANGEROUS))
async def test_server_text_in_a_retry_line_cannot_forge_a_line(
    emu: Emulator, lines: Lines, text: str
) -> None:
    """An error message full of control characters logs as one escaped line per record."""
    emu.inject(Fault(FaultKind.STATUS, status=503, body=envelope(text), endpoint="task"))
    async with AsyncSPOClient(
        api_key=emu.api_key,
        base_url=emu.base_url,
        retry=RetryPolicy.no_wait(attempts=3),
        schedule=FixedSchedule(interval=0.0),
        limiter=RequestLimiter(min_rate=100_000.0),
    ) as client:
        with pytest.raises(TransientError) as caught:
            await client.wait_for_result("spo-x", timeout=10)
    # The error keeps the service's words as they came (half a surrogate pair excepted,
    # which no stream could carry: it is read as U+FFFD).
    said = "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    assert said in str(caught.value)
    written = lines.written()
    assert written.count("\n") == len(lines.records)
    assert unsafe_left(written.replace("\n", "")) == []
    retries = [line for line in written.splitlines() if "retrying GET task" in line]
    assert len(retries) == 2
    assert all(printable(said) in line for line in retries)


def test_extra_strings_and_exception_text_are_escaped(lines: Lines) -> None:
    """A task id passed with extra= and an attached exception's message are escaped too."""
    logger = logging.getLogger("spo_async")
    try:
        try:
            raise ValueError("inner\r\nINFO spo_async: forged")
        except ValueError as inner:
            raise RuntimeError("outer\x1b[2J") from inner
    except RuntimeError:
        logger.exception("the callback raised for %s", "task\n1", extra={"task_id": "t\x9b1"})
    written = lines.written()
    assert unsafe_left(written.replace("\n", "")) == []
    assert "inner\\x0d\\x0aINFO spo_async: forged" in written
    assert "outer\\x1b[2J" in written
    assert "[t\\x9b1]" in written
    assert not any(line.startswith("INFO spo_async: forged") for line in written.splitlines())


def test_a_clean_record_keeps_its_template_and_arguments() -> None:
    """Only a record that needed escaping is flattened; tools grouping by template still work."""
    record = logging.LogRecord("spo_async", logging.INFO, __file__, 1, "got %s", ("ok",), None)
    assert EscapingFilter().filter(record)
    assert (record.msg, record.args) == ("got %s", ("ok",))
    dirty = logging.LogRecord("spo_async", logging.INFO, __file__, 1, "got %s", ("a\nb",), None)
    EscapingFilter().filter(dirty)
    assert dirty.getMessage() == "got a\\x0ab"


def test_the_sdk_logger_carries_the_filter_once() -> None:
    """The filter is attached when the package is imported, and only once."""
    import spo_async._logging as module

    module._install_filter()
    filters = logging.getLogger("spo_async").filters
    assert sum(isinstance(f, EscapingFilter) for f in filters) == 1
