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
from collections.abc import Callable
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
    if i < len(s) and s[i] not in " \t\n\r":  # compact JSON, the common case: no regex call
        return i
    match = _WS.match(s, i)
    assert match is not None  # the pattern matches the empty string
    return match.end()


# Where the value at s[i] ends. Values the walk does not descend into are scanned once, by the
# standard library's C scanner; those it descends into are walked instead, so no text is scanned
# twice (a transaction's 1 KB value was once decoded four times over).
def _skip(s: str, i: int) -> int:
    end: int = _scan(s, i)[1]
    return end


def _object(s: str, i: int, member: Callable[[str, int], int]) -> int:
    """Walk the object starting at `s[i]`: `member(name, start)` returns where each member's value
    ends; the object's end."""
    i = _ws(s, i + 1)
    if s[i] == "}":
        return i + 1
    while True:
        name, i = _scanstring(s, i + 1)
        i = _ws(s, _ws(s, i) + 1)  # past the colon
        i = _ws(s, member(name, i))
        if s[i] == "}":
            return i + 1
        i = _ws(s, i + 1)  # past the comma


def _array(s: str, i: int, element: Callable[[int], int]) -> int:
    """Walk the array starting at `s[i]`: `element(start)` returns where each element ends; the
    array's end."""
    i = _ws(s, i + 1)
    if s[i] == "]":
        return i + 1
    while True:
        i = _ws(s, element(i))
        if s[i] == "]":
            return i + 1
        i = _ws(s, i + 1)


def _value_spans(s: str, i: int, found: dict[str, Span]) -> int:
    """Walk the item object at `s[i]`, noting the span of each member named `value` in any case
    (as Go matches fields), per exact name, the last occurrence winning as in the decoded object."""

    def member(name: str, a: int) -> int:
        b = _skip(s, a)
        if name.lower() == "value":
            found[name] = (a, b)
        return b

    return _object(s, i, member)


def _item_spans(s: str, i: int, items: list[dict[str, Span] | None]) -> int:
    """An array element: the `value` spans of an item object, None for anything else."""
    if s[i] != "{":
        items.append(None)
        return _skip(s, i)
    found: dict[str, Span] = {}
    items.append(found)
    return _value_spans(s, i, found)


def _attach(s: str, item: Any, spans: dict[str, Span] | None) -> None:
    """Replace the `value` members of a decoded item with their raw text."""
    if not isinstance(item, dict) or spans is None:
        return
    for name, (a, b) in spans.items():
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
        items: list[dict[str, Span] | None] = []
        _array(s, start, lambda i: _item_spans(s, i, items))
        if len(items) != len(decoded):
            return
        for item, spans in zip(decoded, items, strict=True):
            _attach(s, item, spans)
    except (StopIteration, ValueError, IndexError, RecursionError):  # left as decoded
        return


def attach_to_transaction(body: bytes, decoded: Any) -> None:
    """In the decoded transaction body, each operation's request value becomes a RawValue."""
    # Per exact member name, as in the decoded objects (the last occurrence wins): for each
    # `operations` member, per operation, per `request` member, the spans of its `value`s.
    Requests = dict[str, dict[str, Span]]

    def operation(i: int, ops: list[Requests | None]) -> int:
        if s[i] != "{":
            ops.append(None)
            return _skip(s, i)
        requests: Requests = {}
        ops.append(requests)

        def member(name: str, a: int) -> int:
            if name.lower() != "request" or s[a] != "{":
                return _skip(s, a)
            requests[name] = {}
            return _value_spans(s, a, requests[name])

        return _object(s, i, member)

    found: dict[str, list[Requests | None]] = {}

    def top(name: str, a: int) -> int:
        if name.lower() != "operations" or s[a] != "[":
            return _skip(s, a)
        ops: list[Requests | None] = []
        found[name] = ops
        return _array(s, a, lambda i: operation(i, ops))

    try:
        s = body.decode()
        start = _ws(s, 0)
        if not isinstance(decoded, dict) or s[start] != "{":
            return
        _object(s, start, top)
        for name, ops in found.items():
            operations = decoded.get(name)
            if not isinstance(operations, list) or len(operations) != len(ops):
                continue
            for op, requests in zip(operations, ops, strict=True):
                if not isinstance(op, dict) or requests is None:
                    continue
                for request_name, spans in requests.items():
                    if request_name in op:
                        _attach(s, op[request_name], spans)
    except (StopIteration, ValueError, IndexError, RecursionError):  # left as decoded
        return
