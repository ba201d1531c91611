"""Where the CPU goes when the client reads one large task answer.

``python bench/parse_cost.py [--size BYTES] [--repeats N]`` builds task answers of
several shapes, each just under ``--size`` bytes (the client's default
``max_response_bytes``, 8 MiB, unless told), and times the stages of reading one:

* ``redact``: the API key taken out of the raw body (``spo_async._redact``), when the
  tree has that module;
* ``json``: ``json.loads`` of the bytes (what it costs whether or not the client
  calls it);
* ``checks``: the size and nesting checks (on a tree that judges the bytes first,
  ``_sansio._shape_problem``; on an older one, what ``_decode_json`` adds to ``json``);
* ``structure``: the cattrs converter, rounds normalized (``task_from_wire``);
* ``total``: ``parse_task_response`` as the client calls it, end to end, until it
  returns a model or refuses the answer (``outcome`` says which).

Each figure is the best of ``--repeats`` runs, in milliseconds of one CPU. The
shapes are the ways a large answer can be large: one long text, many rounds, many
samples, many unknown keys, a long list of small values in an unknown field, and a
body whose every character is ``\\uXXXX``-escaped (a server writing ASCII-only JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from spo_async import SPOError, _sansio
from spo_async._convert import task_from_wire
from spo_async._sansio import HTTPRequest, HTTPResponse, parse_task_response
from spo_async._transport import DEFAULT_MAX_RESPONSE_BYTES

KEY = "sk-bench-0123456789abcdef0123456789abcdef"


def _round(number: int, samples: int, text: str = "x") -> dict[str, Any]:
    return {
        "round": number,
        "prompt": f"prompt {number} {text}",
        "success": number % 3 == 1,
        "sample": [{"question": f"q{i}", "answer": f"a{i}"} for i in range(samples)],
    }


def _plain(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def _fill(
    make: Callable[[int], dict[str, Any]], size: int, encode: Callable[[Any], bytes] = _plain
) -> bytes:
    """The largest ``encode(make(n))`` that stays under ``size`` bytes (binary search)."""
    low, high = 1, 1
    while len(encode(make(high))) < size:
        low, high = high, high * 2
    while low + 1 < high:
        middle = (low + high) // 2
        if len(encode(make(middle))) < size:
            low = middle
        else:
            high = middle
    return encode(make(low))


def _task(rounds: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"status": "processing", "round_data_list": rounds, **extra}


SHAPES: dict[str, Callable[[int], dict[str, Any]]] = {
    "one long prompt": lambda n: _task([_round(1, 3, "y" * n)]),
    "many rounds": lambda n: _task([_round(i + 1, 3) for i in range(n)]),
    "many samples": lambda n: _task([_round(i + 1, n // 100 + 1) for i in range(100)]),
    "many unknown keys": lambda n: _task([_round(1, 3)], **{f"k{i}": i for i in range(n)}),
    "long list in an unknown key": lambda n: _task([_round(1, 3)], trace=[0] * n),
    "many small objects in an unknown key": lambda n: _task([_round(1, 3)], trace=[{}] * n),
    "rounds with unknown keys": lambda n: _task(
        [{**_round(i + 1, 3), "tokens": i, "time": 1.5} for i in range(n)]
    ),
}


#: Answers made to cost the most while staying under the byte-count gates of
#: ``_sansio._too_many_tokens`` (100,000 commas and 100,000 brackets outside strings,
#: 400,000 quotes), for a tree that has them: what an attacker who read the code sends.
CRAFTED: dict[str, Callable[[], dict[str, Any]]] = {
    "crafted: 99,000 string members": lambda: _task(
        [], **{f"k{i}": f"v{i}" for i in range(99_000)}
    ),
    "crafted: the same, and 2,000,000 commas in a string": lambda: _task(
        [], pad="," * 2_000_000, **{f"k{i}": f"v{i}" for i in range(99_000)}
    ),
    "crafted: 99,000 empty lists": lambda: _task([], trace=[[]] * 99_000),
}


def _ascii_escaped(payload: dict[str, Any]) -> bytes:
    """``payload`` as JSON with every character of every string written as ``\\uXXXX``."""
    text = json.dumps(payload)
    out: list[str] = []
    inside = False
    escaped = False
    for ch in text:
        if inside and not escaped and ch not in '"\\':
            out.append(f"\\u{ord(ch):04x}")
            continue
        out.append(ch)
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            inside = not inside
    return "".join(out).encode()


def best(call: Callable[[], object], repeats: int) -> float:
    """The shortest of ``repeats`` runs of ``call``, in milliseconds (raising counts too)."""
    times = []
    for _ in range(repeats):
        started = time.process_time()
        # A refusal is an outcome too: its cost is what is measured.
        with contextlib.suppress(ValueError, TypeError, SPOError):
            call()
        times.append(time.process_time() - started)
    return min(times) * 1000


def outcome(body: bytes) -> str:
    """What the client makes of ``body``: read, or refused and why."""
    try:
        parse_task_response(HTTPResponse(200, {}, body), "t")
    except SPOError as exc:
        return "refused: " + str(exc).split(": ", 1)[-1][:48]
    return "read"


def measure(body: bytes, repeats: int) -> dict[str, Any]:
    """The cost of each stage of reading ``body``, in milliseconds."""
    response = HTTPResponse(200, {"content-type": "application/json"}, body)
    figures: dict[str, Any] = {"MiB": len(body) / 2**20}
    redact = getattr(_sansio, "redact_response", None)  # only on trees that have it
    if redact is not None:
        request = HTTPRequest("GET", "http://x/t", "/t", {"Authorization": f"Bearer {KEY}"})
        figures["redact"] = best(lambda: redact(response, request), repeats)
    figures["json"] = best(lambda: json.loads(body), repeats)
    if hasattr(_sansio, "_too_deep"):  # a tree that checks the decoded value afterwards
        figures["checks"] = best(lambda: _sansio._decode_json(body), repeats) - figures["json"]
    else:  # a tree that judges the bytes first
        figures["checks"] = best(lambda: _sansio._shape_problem(body), repeats)
    payload = json.loads(body)
    figures["structure"] = best(lambda: task_from_wire(payload, task_id="t"), repeats)
    figures["total"] = best(lambda: parse_task_response(response, "t"), repeats)
    figures["outcome"] = outcome(body)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=DEFAULT_MAX_RESPONSE_BYTES - 1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows: list[tuple[str, dict[str, float]]] = []
    for name, make in SHAPES.items():
        rows.append((name, measure(_fill(make, args.size), args.repeats)))
    for name, make_crafted in CRAFTED.items():
        rows.append((name, measure(_plain(make_crafted()), args.repeats)))
    escaped = _fill(SHAPES["many rounds"], args.size, _ascii_escaped)
    rows.append(("many rounds, every character \\u-escaped", measure(escaped, args.repeats)))
    names = ("MiB", "redact", "json", "checks", "structure", "total")
    columns = [c for c in names if c in rows[0][1]]
    print("| shape | " + " | ".join(columns) + " | outcome |")
    print("|---|" + "---:|" * len(columns) + "---|")
    for name, figures in rows:
        cells = " | ".join(f"{figures[c]:.1f}" for c in columns)
        print(f"| {name} | {cells} | {figures['outcome']} |")


if __name__ == "__main__":
    main()
