"""JSON values as daprd reads and writes them, for bodies, stored values and query documents."""

from __future__ import annotations

import json
from typing import Any

import orjson

from .raw_values import RawValue


class Malformed(ValueError):
    """The body or a parameter does not decode; the message is shown to the client."""


def decode_json(body: bytes) -> Any:
    """Parse a JSON body; integers beyond 64 bits fall back to the standard library, as Go accepts them."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not body.strip():
            raise Malformed("unexpected end of JSON input") from None
        if "Integer" in str(exc):
            try:
                return json.loads(body, parse_constant=_refuse_constant)
            except ValueError:
                pass
        raise Malformed(f"invalid JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


# orjson writes JSON nested at most this deep (it reads up to 1024 levels).
MAX_VALUE_DEPTH = 254


def encode_value(value: Any) -> bytes:
    """A value's JSON: its text as sent (a RawValue), else the decoded value as compact JSON;
    Malformed when it cannot be stored."""
    if isinstance(value, RawValue):
        if len(value.text) > 2 * MAX_VALUE_DEPTH:  # shorter text cannot nest that deep
            encode_value(value.value)
        return value.text
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        if "Recursion" in str(exc):
            raise Malformed(f"value is nested deeper than {MAX_VALUE_DEPTH} levels") from None
    try:  # an integer beyond 64 bits, decoded by the fallback
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except (RecursionError, ValueError) as exc:
        raise Malformed(f"value cannot be stored as JSON: {exc}") from None
