"""How `state.postgresql` writes its `value` column and its queries (its dialect of the translator).

Values are daprd's: JSON as jsonb, other bytes as a base64 JSON string marked `isbinary`. Queries
read `value` of the rows that are not binary: scalars compare as jsonb within their type, strings
by code point (`COLLATE "C"`).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import Any

import orjson

from ... import query as q
from ..sql import translate

LIVE = "(expiredate IS NULL OR expiredate > now())"


def _has_nul(doc: Any) -> bool:
    if isinstance(doc, str):
        return "\x00" in doc
    if isinstance(doc, list):
        return any(_has_nul(v) for v in doc)
    if isinstance(doc, dict):
        return any("\x00" in k or _has_nul(v) for k, v in doc.items())
    return False


def json_doc(value: bytes) -> str | None:
    """The value as JSON text for the `value` column, or None when it is not JSON jsonb can hold."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if b"\\u0000" in value and _has_nul(doc):
        return None  # jsonb cannot hold NUL characters
    return value.decode()


def binary_doc(value: bytes) -> tuple[str, bool]:
    """Bytes that are not JSON as daprd stores them: a JSON string of their base64, `isbinary`."""
    return '"' + base64.b64encode(value).decode() + '"', True


def stored_bytes(value: str, isbinary: bool) -> bytes:
    """The value of a row: jsonb's text of a JSON value, the decoded bytes of a binary one."""
    if isbinary:
        return base64.b64decode(orjson.loads(value))
    return value.encode()


class Translator(translate.Translator):
    NULL = ("null",)
    BOOLEAN = ("boolean",)
    NUMBER = ("number",)
    STRING = ("string",)
    CONTAINER = ("object", "array")
    KEY = 'key COLLATE "C"'

    def __init__(self) -> None:
        super().__init__()
        self._paths: dict[tuple[str, ...], str] = {}

    def placeholder(self, number: int, value: object) -> str:
        return f"${number}"

    def _doc(self, path: Sequence[str]) -> str:
        """The jsonb at `path` of `value`, NULL when missing or when an intermediate is not an object."""
        key = tuple(path)
        if key not in self._paths:
            expr = f"value #> {self.bind(list(path))}::text[]"
            if any(re.fullmatch(r"-?\d+", part) for part in path):
                # `#>` would index arrays with numeric segments; paths only ever name object keys.
                guards = " AND ".join(
                    f"jsonb_typeof(value #> {self.bind(list(path[:i]))}::text[]) = 'object'"
                    for i in range(len(path))
                )
                expr = f"CASE WHEN {guards} THEN {expr} END"
            self._paths[key] = f"({expr})"
        return self._paths[key]

    def type_of(self, path: Sequence[str]) -> str:
        return f"jsonb_typeof({self._doc(path)})"

    def value(self, path: Sequence[str], kind: tuple[str, ...]) -> str:
        x = self._doc(path)
        if kind == self.STRING:
            return f"({x} #>> '{{}}') COLLATE \"C\""
        if kind == self.CONTAINER:
            return f'({x})::text COLLATE "C"'
        return x

    def param(self, value: q.Scalar) -> str:
        if isinstance(value, str):
            return f'{self.bind(value)}::text COLLATE "C"'
        return f"{self.bind(orjson.dumps(value).decode())}::jsonb"


def build_query(table: str, query: q.Query, key_prefix: str) -> tuple[str, list[Any]]:
    """SQL and its parameters for one page of a query over `table`."""
    t = Translator()
    where = ["NOT isbinary", f"starts_with(key, {t.bind(key_prefix)}::text)", LIVE]
    if query.filter is not None:
        where.append(t.condition(query.filter))
    text = f"SELECT key, value, xmin::text FROM {table} WHERE {' AND '.join(where)} ORDER BY {t.order_by(query.sort)}"
    if query.limit:
        text += f" LIMIT {int(query.limit)}"
    if query.offset:
        text += f" OFFSET {int(query.offset)}"
    return text, t.params
