"""How `state.sqlite` writes its columns and its queries (its dialect of the shared translator).

* Values: valid UTF-8 without NUL bytes is stored as TEXT; anything else base64-encoded with
  `is_binary = 1`, as Dapr stores bytes. Queries only look at TEXT values that are valid JSON.
* `expiration_time` is a UTC timestamp text `YYYY-MM-DD HH:MM:SS.mmm`, which orders like the
  instants it names and compares correctly with Dapr's `CURRENT_TIMESTAMP` values.
* Queries: a row without a backslash in its value has no escaped object keys, so `json_type` /
  `json_extract` with a quoted path (`$."a"."b"`) find exactly the keys Python would; rows with
  escapes, and path segments a JSON path cannot quote, use the functions of `functions.py`.
"""

from __future__ import annotations

import base64
import contextlib
import math
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson

from ... import query as q
from ..sql import translate
from .metadata import quote_ident

_INT64 = (-(2**63), 2**63 - 1)
# Path segments `$."..."` can carry: SQLite 3.40 ends a quoted label at the first `"` and compares
# labels with the raw (still escaped) text of the document, so these characters need Python.
_UNQUOTABLE = re.compile(r'["\\\x00-\x1f]')
# Rows whose value holds no backslash: no escapes anywhere, so SQLite's raw label compare is exact.
_PLAIN = "instr(value, '\\') = 0"


# --- columns --------------------------------------------------------------------------------


def encode(value: bytes) -> tuple[str, int]:
    """(column text, is_binary): UTF-8 text as is, anything else base64 as Dapr stores bytes."""
    if b"\x00" not in value:
        with contextlib.suppress(UnicodeDecodeError):
            return value.decode("utf-8"), 0
    return base64.b64encode(value).decode("ascii"), 1


def decode(raw: bytes | str, is_binary: object) -> bytes:
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    return base64.b64decode(data) if is_binary else data


def stamp(t: float) -> str:
    """A Unix time as `YYYY-MM-DD HH:MM:SS.mmm` (UTC), the column format of expiration_time."""
    whole = math.floor(t)
    millis = min(999, int((t - whole) * 1000))
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole)) + f".{millis:03d}"


def unstamp(value: object) -> float | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# --- queries --------------------------------------------------------------------------------


def prefix_end(prefix: str) -> str | None:
    """The least string above every string starting with `prefix` (code point order), if any."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code <= 0x10FFFF:
            if 0xD800 <= code <= 0xDFFF:
                code = 0xE000
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


class Translator(translate.Translator):
    NULL = ("null",)
    BOOLEAN = ("true", "false")
    NUMBER = ("integer", "real")
    STRING = ("text",)
    CONTAINER = ("array", "object")

    def __init__(self) -> None:
        super().__init__()
        # Which rows the expressions are for: plain (True), escaped (False), or either (None).
        self.plain: bool | None = None
        self._paths: dict[tuple[tuple[str, ...], bool], tuple[str, str]] = {}

    def placeholder(self, number: int, value: object) -> str:
        return f":p{number}"

    def _one(self, path: tuple[str, ...], plain: bool) -> tuple[str, str]:
        """SQL for (JSON type, value) at `path`; SQLite's functions for plain rows when possible."""
        native = plain and not any(_UNQUOTABLE.search(segment) for segment in path)
        cached = self._paths.get((path, native))
        if cached is not None:
            return cached
        if native:
            ref = self.bind("$" + "".join(f'."{segment}"' for segment in path))
            result = (f"json_type(value, {ref})", f"json_extract(value, {ref})")
        else:
            ref = self.bind(orjson.dumps(list(path)).decode("utf-8"))
            result = (f"statestore_json_type(value, {ref})", f"statestore_json_extract(value, {ref})")
        self._paths[(path, native)] = result
        return result

    def _access(self, path: Sequence[str]) -> tuple[str, str]:
        if self.plain is not None:
            return self._one(tuple(path), self.plain)
        (native_kind, native_val), (py_kind, py_val) = (
            self._one(tuple(path), True),
            self._one(tuple(path), False),
        )
        return (
            f"(CASE WHEN {_PLAIN} THEN {native_kind} ELSE {py_kind} END)",
            f"(CASE WHEN {_PLAIN} THEN {native_val} ELSE {py_val} END)",
        )

    def type_of(self, path: Sequence[str]) -> str:
        return self._access(path)[0]

    def value(self, path: Sequence[str], kind: tuple[str, ...]) -> str:
        val = self._access(path)[1]
        # Objects and arrays order by their JSON text with sorted keys, exactly as query.sort_key does.
        return f"statestore_json_canonical({val})" if kind == self.CONTAINER else val

    def sort_values(self, path: Sequence[str]) -> list[str]:
        # Within one rank the types agree (integers and reals compare as numbers): one term will do.
        kind, val = self._access(path)
        containers = ", ".join(f"'{name}'" for name in self.CONTAINER)
        return [f"(CASE WHEN {kind} IN ({containers}) THEN statestore_json_canonical({val}) ELSE {val} END)"]

    def param(self, value: q.Scalar) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
            return self.bind(float(value))
        return self.bind(value)

    def where(self, flt: q.Filter | None) -> str:
        """Valid JSON and the filter, each row checked by SQLite or, when it has escapes, by Python."""
        if flt is None:
            return f"CASE WHEN {_PLAIN} THEN json_valid(value) ELSE statestore_json_valid(value) END"
        self.plain = True
        native = self.condition(flt)
        self.plain = False
        escaped = self.condition(flt)
        self.plain = None
        return (
            f"CASE WHEN {_PLAIN} THEN CASE WHEN json_valid(value) THEN coalesce({native}, 0) ELSE 0 END"
            f" WHEN statestore_json_valid(value) THEN coalesce({escaped}, 0) ELSE 0 END"
        )


def build_query(table: str, query: q.Query, key_prefix: str, now: float) -> tuple[str, dict[str, object]]:
    """The SELECT (and its parameters) answering `query` over the rows under `key_prefix`."""
    t = Translator()
    conditions: list[str] = []
    if key_prefix:
        conditions.append(f"key >= {t.bind(key_prefix)}")
        end = prefix_end(key_prefix)
        if end is not None:
            conditions.append(f"key < {t.bind(end)}")
    conditions.append(f"(expiration_time IS NULL OR expiration_time > {t.bind(stamp(now))})")
    conditions.append("is_binary = 0")
    conditions.append(t.where(query.filter))
    sql = (
        f"SELECT key, CAST(value AS BLOB), etag FROM {quote_ident(table)}"
        f" WHERE {' AND '.join(conditions)}"
        f" ORDER BY {t.order_by(query.sort)}"
        f" LIMIT {t.bind(query.limit if query.limit > 0 else -1)} OFFSET {t.bind(query.offset)}"
    )
    return sql, {f"p{n}": value for n, value in enumerate(t.params, 1)}
