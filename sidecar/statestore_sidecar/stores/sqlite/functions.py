"""JSON lookups as SQL functions, for rows SQLite's JSON paths cannot address exactly.

SQLite 3.40 ends a quoted path label at the first `"` and compares labels with the raw (still
escaped) text of a document; these functions look the path up in the decoded document instead, and
answer as `json_type`/`json_extract` would.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from typing import Any

import orjson

_INT64 = (-(2**63), 2**63 - 1)
_MISSING = object()
_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (int, "integer"),
    (float, "real"),
    (str, "text"),
    (list, "array"),
    (dict, "object"),
)
_last_doc: list[tuple[object, Any]] = [(None, None)]


def _load(text: object) -> Any:
    """The decoded document, remembering the last one (a row's filter asks several times)."""
    last_text, last_doc = _last_doc[0]
    if text is last_text or (type(text) is type(last_text) and text == last_text):
        return last_doc
    try:
        doc = orjson.loads(text) if isinstance(text, str | bytes) else _MISSING
    except orjson.JSONDecodeError:
        doc = _MISSING
    _last_doc[0] = (text, doc)
    return doc


@functools.lru_cache(maxsize=256)
def _path_of(path_json: str) -> tuple[str, ...]:
    return tuple(orjson.loads(path_json))


def _lookup(text: object, path_json: str) -> Any:
    doc = _load(text)
    for part in _path_of(path_json):
        if not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def _json_type(found: Any) -> str | None:
    if found is _MISSING:
        return None
    if found is None:
        return "null"
    if isinstance(found, bool):
        return "true" if found else "false"
    for kind, name in _JSON_TYPES:
        if isinstance(found, kind):
            return name
    return None


def _sql_value(found: Any) -> Any:
    """What json_extract would return for the decoded value."""
    if found is _MISSING or found is None:
        return None
    if isinstance(found, bool):
        return int(found)
    if isinstance(found, int):
        return found if _INT64[0] <= found <= _INT64[1] else float(found)
    if isinstance(found, float | str):
        return found
    return orjson.dumps(found).decode("utf-8")


def _fn_type(text: object, path_json: str) -> str | None:
    try:
        return _json_type(_lookup(text, path_json))
    except Exception:  # a SQL function must never raise
        return None


def _fn_extract(text: object, path_json: str) -> Any:
    try:
        return _sql_value(_lookup(text, path_json))
    except Exception:
        return None


def _fn_valid(text: object) -> int:
    try:
        return 0 if _load(text) is _MISSING else 1
    except Exception:
        return 0


def _fn_canonical(text: object) -> str | None:
    """Objects and arrays order by their JSON text with sorted keys, exactly as query.sort_key does."""
    try:
        return json.dumps(orjson.loads(text), sort_keys=True, separators=(",", ":"))  # type: ignore[arg-type]
    except Exception:
        return None


def register(conn: sqlite3.Connection) -> None:
    """Add the functions that look paths up in decoded documents (see dialect.py) to a connection."""
    conn.create_function("statestore_json_type", 2, _fn_type, deterministic=True)
    conn.create_function("statestore_json_extract", 2, _fn_extract, deterministic=True)
    conn.create_function("statestore_json_valid", 1, _fn_valid, deterministic=True)
    conn.create_function("statestore_json_canonical", 1, _fn_canonical, deterministic=True)
