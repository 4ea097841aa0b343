"""How `state.mysql` writes its `value` column and its queries (its dialect of the translator).

Values are daprd's: JSON text as given, other bytes as a base64 JSON string marked `isbinary`.
Queries use JSON_EXTRACT / JSON_TYPE / JSON_UNQUOTE over `value` of rows that are not binary, comparing strings as binary (code
points) and numbers as doubles. Parameters are positional (`%s`), so they are bound in text order.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import orjson

from ... import query as q
from ..sql import translate

LIVE = "(expiredate IS NULL OR expiredate > CURRENT_TIMESTAMP)"
# A TTL (the parameter, twice) to an expiry in whole seconds, rounded up so an item never expires early.
EXPIRY = "IF(%s IS NULL, NULL, FROM_UNIXTIME(CEIL(UNIX_TIMESTAMP(NOW(6))) + %s))"

# MariaDB 10.11's JSON_VALID refuses 32 nested levels (MySQL: 100); deeper values stay bytes only.
MAX_JSON_DEPTH = 31


def _too_deep(doc: Any, depth: int) -> bool:
    if isinstance(doc, dict):
        return depth >= MAX_JSON_DEPTH or any(_too_deep(v, depth + 1) for v in doc.values())
    if isinstance(doc, list):
        return depth >= MAX_JSON_DEPTH or any(_too_deep(v, depth + 1) for v in doc)
    return False


def json_doc(value: bytes) -> str | None:
    """The value as JSON text for the `value` column, or None when it is not (storable) JSON."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if _too_deep(doc, 0):
        return None
    return value.decode()


def binary_doc(value: bytes) -> tuple[str, bool]:
    """Bytes that are not JSON as daprd stores them: a JSON string of their base64, `isbinary`."""
    return '"' + base64.b64encode(value).decode() + '"', True


def stored_bytes(value: str | bytes, isbinary: bool) -> bytes:
    """The value of a row: its JSON text, or the decoded bytes of a binary one."""
    if isbinary:
        return base64.b64decode(orjson.loads(value))
    return value.encode() if isinstance(value, str) else bytes(value)


def json_path(path: Sequence[str]) -> str:
    """A MySQL JSON path naming object members only: `$."a"."b"`."""
    return "$" + "".join("." + orjson.dumps(part).decode() for part in path)


def like_prefix(prefix: bytes) -> bytes:
    """A LIKE pattern (escape character '!') matching everything that starts with `prefix`."""
    return prefix.replace(b"!", b"!!").replace(b"%", b"!%").replace(b"_", b"!_") + b"%"


class Translator(translate.Translator):
    NULL = ("NULL",)
    BOOLEAN = ("BOOLEAN",)
    NUMBER = ("INTEGER", "UNSIGNED INTEGER", "DOUBLE", "DECIMAL")
    STRING = ("STRING",)
    CONTAINER = ("OBJECT", "ARRAY")
    KEY = "id"

    def placeholder(self, number: int, value: object) -> str:
        return "%s"

    def _doc(self, path: Sequence[str]) -> str:
        # Every mention of a path is its own parameter: positional parameters cannot be reused.
        return f"JSON_EXTRACT(value, {self.bind(json_path(path))})"

    def type_of(self, path: Sequence[str]) -> str:
        return f"JSON_TYPE({self._doc(path)})"

    def value(self, path: Sequence[str], kind: tuple[str, ...]) -> str:
        if kind == self.BOOLEAN:
            return f"(JSON_UNQUOTE({self._doc(path)}) = 'true')"
        if kind == self.NUMBER:
            return f"CAST({self._doc(path)} AS DOUBLE)"
        if kind == self.STRING:
            return f"CAST(JSON_UNQUOTE({self._doc(path)}) AS BINARY)"
        return f"CAST({self._doc(path)} AS BINARY)"

    def param(self, value: q.Scalar) -> str:
        if isinstance(value, str):
            return f"CAST({self.bind(value)} AS BINARY)"
        return self.bind(value)


def build_query(table: str, query: q.Query, key_prefix: str) -> tuple[str, list[Any]]:
    t = Translator()
    pattern = t.bind(like_prefix(key_prefix.encode()).decode())
    where = ["NOT isbinary", f"id LIKE {pattern} ESCAPE '!'", LIVE]
    if query.filter is not None:
        where.append(t.condition(query.filter))
    conditions = " AND ".join(where)  # before the ORDER BY: parameters bind in text order
    text = f"SELECT id, value, eTag FROM {table} WHERE {conditions} ORDER BY {t.order_by(query.sort)}"
    if query.limit or query.offset:
        text += f" LIMIT {int(query.limit) if query.limit else 18446744073709551615}"
    if query.offset:
        text += f" OFFSET {int(query.offset)}"
    return text, t.params
