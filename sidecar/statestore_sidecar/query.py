"""The state query language (`v1.0-alpha1` query API) as one parsed tree.

`parse` turns a request body into a `Query`; each store either evaluates it here (`matches`,
`sort_key`) or translates it to its own query language. The semantics all stores share:

* only values that are JSON documents are searched; binary values are never results;
* paths are dot-separated object keys into the stored JSON value; a missing path or a non-object
  value never matches, not even `NEQ`;
* comparisons are JSON-type aware: `EQ 1` matches `1` and `1.0` but not `"1"`; `GT`/`LT` compare
  numbers with numbers and strings with strings (by code point), and never across types;
* without `sort`, results are ordered by key; `sort` orders by its keys, then by key, so pages are
  stable. Across types, ascending order is: missing or null, booleans, numbers, strings, other;
* `page.token` is the decimal offset of the next page, returned whenever `page.limit` > 0.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Scalar = str | int | float | bool | None


class QuerySyntaxError(ValueError):
    """The query body does not follow the grammar."""


class Op(enum.StrEnum):
    EQ = "EQ"
    NEQ = "NEQ"
    GT = "GT"
    GTE = "GTE"
    LT = "LT"
    LTE = "LTE"
    IN = "IN"
    AND = "AND"
    OR = "OR"


COMPARISONS = frozenset({Op.EQ, Op.NEQ, Op.GT, Op.GTE, Op.LT, Op.LTE})
ORDERINGS = frozenset({Op.GT, Op.GTE, Op.LT, Op.LTE})
# Filter nodes on one path from the root, leaves included: the deepest tree every store can run
# (SQLite's parser overflows its stack beyond 24 levels of nested conditions).
MAX_DEPTH = 24


@dataclass(frozen=True, slots=True)
class Compare:
    op: Op  # one of COMPARISONS
    path: tuple[str, ...]
    value: Scalar


@dataclass(frozen=True, slots=True)
class In:
    path: tuple[str, ...]
    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Logical:
    op: Op  # AND or OR
    children: tuple[Filter, ...]


Filter = Compare | In | Logical


@dataclass(frozen=True, slots=True)
class SortKey:
    path: tuple[str, ...]
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    filter: Filter | None = None
    sort: tuple[SortKey, ...] = ()
    limit: int = 0  # 0: no limit
    offset: int = 0


def _path(text: Any) -> tuple[str, ...]:
    if not isinstance(text, str) or not text:
        raise QuerySyntaxError("a path must be a non-empty string")
    parts = tuple(text.split("."))
    if any(not p for p in parts):
        raise QuerySyntaxError(f"path {text!r} has an empty segment")
    return parts


def _scalar(op: str, value: Any) -> Scalar:
    if value is None or isinstance(value, str | bool | int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise QuerySyntaxError(f"{op} value must be finite")
        return value
    raise QuerySyntaxError(f"{op} value must be a string, number, boolean or null")


def _filter(node: Any, depth: int) -> Filter:
    if depth > MAX_DEPTH:
        raise QuerySyntaxError(f"filter is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(node, Mapping) or len(node) != 1:
        raise QuerySyntaxError("filter unit must have a single element")
    ((name, arg),) = node.items()
    try:
        op = Op(name)
    except ValueError:
        raise QuerySyntaxError(f'unsupported filter "{name}"') from None
    if op in (Op.AND, Op.OR):
        if not isinstance(arg, list) or len(arg) < 2:
            raise QuerySyntaxError(f"{op} filter must be an array of at least two filters")
        return Logical(op, tuple(_filter(child, depth + 1) for child in arg))
    if not isinstance(arg, Mapping) or len(arg) != 1:
        raise QuerySyntaxError(f"{op} filter must be an object with exactly one path")
    ((path, value),) = arg.items()
    if op is Op.IN:
        if not isinstance(value, list):
            raise QuerySyntaxError("IN filter value must be an array")
        if not value:
            raise QuerySyntaxError("empty IN operator")
        return In(_path(path), tuple(_scalar("IN", v) for v in value))
    scalar = _scalar(op, value)
    if op in ORDERINGS and (scalar is None or isinstance(scalar, bool)):
        raise QuerySyntaxError(f"{op} value must be a number or a string")
    return Compare(op, _path(path), scalar)


def parse(body: Any) -> Query:
    """A `Query` from a decoded JSON body, or QuerySyntaxError."""
    if not isinstance(body, Mapping):
        raise QuerySyntaxError("query must be a JSON object")
    raw_filter = body.get("filter")
    flt: Filter | None = None
    if raw_filter is not None and raw_filter != {}:
        flt = _filter(raw_filter, 1)
    sort: list[SortKey] = []
    raw_sort = body.get("sort") or []
    if not isinstance(raw_sort, list):
        raise QuerySyntaxError("sort must be an array")
    for entry in raw_sort:
        if not isinstance(entry, Mapping):
            raise QuerySyntaxError("each sort entry must be an object with a key")
        order = entry.get("order") or "ASC"
        if order not in ("ASC", "DESC"):
            raise QuerySyntaxError(f"sort order must be ASC or DESC, not {order!r}")
        sort.append(SortKey(_path(entry.get("key")), descending=order == "DESC"))
    limit, offset = 0, 0
    page = body.get("page") or {}
    if not isinstance(page, Mapping):
        raise QuerySyntaxError("page must be an object")
    raw_limit = page.get("limit", 0)
    if isinstance(raw_limit, bool) or not isinstance(raw_limit, int) or raw_limit < 0:
        raise QuerySyntaxError("page.limit must be a non-negative integer")
    limit = raw_limit
    token = page.get("token")
    if token not in (None, ""):
        if not isinstance(token, str) or not token.isdigit():
            raise QuerySyntaxError(f"page.token {token!r} is not a token this server issued")
        offset = int(token)
    return Query(flt, tuple(sort), limit, offset)


_MISSING = object()


def lookup(doc: Any, path: Sequence[str]) -> Any:
    """The value at `path` in a decoded JSON document, or `_MISSING`."""
    for part in path:
        if not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def _type_class(value: Any) -> int:
    """Rank of a JSON value's type in the cross-type sort order."""
    if value is None or value is _MISSING:
        return 0
    if isinstance(value, bool):
        return 1
    if isinstance(value, int | float):
        return 2
    if isinstance(value, str):
        return 3
    return 4


def _equal(left: Any, right: Scalar) -> bool:
    return _type_class(left) == _type_class(right) and left == right


def matches(flt: Filter | None, doc: Any) -> bool:
    """Whether a decoded JSON document satisfies the filter."""
    if flt is None:
        return True
    match flt:
        case Logical(op=Op.AND, children=children):
            return all(matches(c, doc) for c in children)
        case Logical(children=children):
            return any(matches(c, doc) for c in children)
        case In(path=path, values=values):
            found = lookup(doc, path)
            return found is not _MISSING and any(_equal(found, v) for v in values)
        case Compare(op=op, path=path, value=value):
            found = lookup(doc, path)
            if found is _MISSING:
                return False
            if op is Op.EQ:
                return _equal(found, value)
            if op is Op.NEQ:
                return not _equal(found, value)
            if _type_class(found) != _type_class(value) or _type_class(found) not in (2, 3):
                return False
            if op is Op.GT:
                return bool(found > value)
            if op is Op.GTE:
                return bool(found >= value)
            if op is Op.LT:
                return bool(found < value)
            return bool(found <= value)
    raise AssertionError(f"unknown filter {flt!r}")


class _Desc:
    """Inverts the ordering of a sort key component."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __lt__(self, other: _Desc) -> bool:
        return bool(other.key < self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and bool(self.key == other.key)

    def __hash__(self) -> int:
        return hash(self.key)


def _orderable(value: Any) -> tuple[int, Any]:
    rank = _type_class(value)
    if rank == 0:
        return (0, 0)
    if rank == 4:
        return (4, json.dumps(value, sort_keys=True, separators=(",", ":")))
    return (rank, value)


def sort_key(query: Query, key: str, doc: Any) -> tuple[Any, ...]:
    """A key for `sorted` that orders documents as the query asks, then by key."""
    parts: list[Any] = []
    for sk in query.sort:
        component = _orderable(lookup(doc, sk.path))
        parts.append(_Desc(component) if sk.descending else component)
    parts.append(key)
    return tuple(parts)


def next_token(query: Query, returned: int) -> str | None:
    return str(query.offset + returned) if query.limit > 0 else None
