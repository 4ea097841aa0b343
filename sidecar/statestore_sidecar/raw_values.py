"""The exact JSON text of each value in a save or transaction body, so values are stored as sent.

Decoding and re-encoding a value would rewrite it (`1e3` as `1000.0`, `"\\u00e9"` as `"é"`, key
order and spacing compacted); instead each item's `value` in the decoded body is replaced by a
`RawValue` holding its text exactly as it appears in the body (surrounding whitespace excluded).
The body has already been validated by the decoder; the walk only finds where values start and
end, with the standard library's C scanner, and leaves the body as it was if anything is unusual.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_scanstring = json.decoder.scanstring  # type: ignore[attr-defined]
_WS = re.compile(r"[ \t\n\r]*")

Span = tuple[int, int]


@dataclass(frozen=True, slots=True)
class RawValue:
    """A value's JSON text as sent, and the decoded value (for checks on its shape)."""

    text: bytes
    value: Any


def _ws(s: str, i: int) -> int:
    match = _WS.match(s, i)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _members(s: str, i: int) -> tuple[list[tuple[str, Span]], int]:
    """The members (name, span of the value) of the object starting at `s[i]`, and its end."""
    out: list[tuple[str, Span]] = []
    i = _ws(s, i + 1)
    if s[i] == "}":
        return out, i + 1
    while True:
        name, i = _scanstring(s, i + 1)
        i = _ws(s, _ws(s, i) + 1)  # past the colon
        _, end = _scan(s, i)
        out.append((name, (i, end)))
        i = _ws(s, end)
        if s[i] == "}":
            return out, i + 1
        i = _ws(s, i + 1)  # past the comma


def _elements(s: str, i: int) -> list[Span]:
    """The spans of the elements of the array starting at `s[i]`."""
    out: list[Span] = []
    i = _ws(s, i + 1)
    if s[i] == "]":
        return out
    while True:
        _, end = _scan(s, i)
        out.append((i, end))
        i = _ws(s, end)
        if s[i] == "]":
            return out
        i = _ws(s, i + 1)


def _last_spans(s: str, start: int, wanted: str) -> dict[str, Span]:
    """Per exact member name matching `wanted` case-insensitively (as Go matches fields), the
    span of its last occurrence (duplicates: the last wins, as in the decoded object)."""
    members, _ = _members(s, start)
    return {name: span for name, span in members if name.lower() == wanted}


def _attach(s: str, item: Any, start: int) -> None:
    """Replace the `value` members of the decoded item object at `s[start]` with their raw text."""
    if not isinstance(item, dict) or s[start] != "{":
        return
    for name, (a, b) in _last_spans(s, start, "value").items():
        if name in item:
            item[name] = RawValue(s[a:b].encode(), item[name])


def _compact_single(body: bytes, decoded: list[Any]) -> bool:
    """The common save body, one item sent compactly with `value` last (`[{..."value":V}]`):
    attach V without scanning when V is exactly what orjson would write for the decoded value.

    Sound because `,"value":` or `{"value":` cannot occur inside a string, V is followed by one
    `}` and the end of the array (so it is the item's own last member, not a nested one), and two
    JSON values starting at one place and ending before a `}` are the same text.
    """
    if len(decoded) != 1 or not isinstance(item := decoded[0], dict) or "value" not in item:
        return False
    if sum(1 for name in item if name.lower() == "value") != 1:  # Go's case-insensitive names
        return False
    try:
        text = orjson.dumps(item["value"])
    except TypeError:
        return False
    tail = body.rstrip(b" \t\r\n")
    if not tail.endswith(b"}]") or not tail[:-2].endswith(text):
        return False
    if not tail[: -2 - len(text)].endswith((b',"value":', b'{"value":')):
        return False
    item["value"] = RawValue(text, item["value"])
    return True


def attach_to_save(body: bytes, decoded: Any) -> None:
    """In the decoded array of a save body, each item's value becomes a RawValue."""
    if isinstance(decoded, list) and _compact_single(body, decoded):
        return
    try:
        s = body.decode()
        start = _ws(s, 0)
        if not isinstance(decoded, list) or s[start] != "[":
            return
        spans = _elements(s, start)
        if len(spans) != len(decoded):
            return
        for item, (a, _) in zip(decoded, spans, strict=True):
            _attach(s, item, a)
    except (StopIteration, ValueError, IndexError, RecursionError):  # left as decoded
        return


def attach_to_transaction(body: bytes, decoded: Any) -> None:
    """In the decoded transaction body, each operation's request value becomes a RawValue."""
    try:
        s = body.decode()
        start = _ws(s, 0)
        if not isinstance(decoded, dict) or s[start] != "{":
            return
        for name, (a, _) in _last_spans(s, start, "operations").items():
            operations = decoded.get(name)
            if not isinstance(operations, list) or s[a] != "[":
                continue
            spans = _elements(s, a)
            if len(spans) != len(operations):
                continue
            for op, (op_start, _) in zip(operations, spans, strict=True):
                if not isinstance(op, dict) or s[op_start] != "{":
                    continue
                for request_name, (r, _) in _last_spans(s, op_start, "request").items():
                    if request_name in op:
                        _attach(s, op[request_name], r)
    except (StopIteration, ValueError, IndexError, RecursionError):  # left as decoded
        return
