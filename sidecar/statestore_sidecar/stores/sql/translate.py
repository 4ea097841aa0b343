"""One translation of a `query.Query` to SQL; each SQL store subclasses `Translator` as its dialect.

The shared parts are the parameter collector, the operator table, the type-aware comparisons of
`query`'s semantics and the type-ranked ORDER BY (missing or null, booleans, numbers, strings,
other; then the key). A dialect says how its JSON functions read a path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from ... import query as q

Path = Sequence[str]

_SYMBOLS = {q.Op.EQ: "=", q.Op.GT: ">", q.Op.GTE: ">=", q.Op.LT: "<", q.Op.LTE: "<="}


class Translator:
    """Collects parameters (in text order) while SQL conditions and orderings are written."""

    # The names the dialect's `type_of` gives each JSON type.
    NULL: ClassVar[tuple[str, ...]]
    BOOLEAN: ClassVar[tuple[str, ...]]
    NUMBER: ClassVar[tuple[str, ...]]
    STRING: ClassVar[tuple[str, ...]]
    CONTAINER: ClassVar[tuple[str, ...]]
    KEY: ClassVar[str] = "key"  # the last ORDER BY term, so pages are stable

    def __init__(self) -> None:
        self.params: list[object] = []

    def bind(self, value: object) -> str:
        self.params.append(value)
        return self.placeholder(len(self.params), value)

    # -- the dialect's hooks -------------------------------------------------------------------------

    def placeholder(self, number: int, value: object) -> str:
        """How the `number`th parameter (1-based) is written in the statement."""
        raise NotImplementedError

    def type_of(self, path: Path) -> str:
        """The JSON type name at `path` of the stored document, NULL when missing."""
        raise NotImplementedError

    def value(self, path: Path, kind: tuple[str, ...]) -> str:
        """The value at `path`, comparable and sortable among values of the type `kind` (a type
        tuple of this class): strings by code point, objects and arrays by a stable text."""
        raise NotImplementedError

    def param(self, value: q.Scalar) -> str:
        """A query value, comparable with `value(path, kind)` of its type."""
        return self.bind(value)

    # -- shared --------------------------------------------------------------------------------------

    def is_type(self, path: Path, kind: tuple[str, ...]) -> str:
        names = ", ".join(f"'{name}'" for name in kind)
        return f"{self.type_of(path)} IN ({names})" if len(kind) > 1 else f"{self.type_of(path)} = {names}"

    def _kind(self, value: q.Scalar) -> tuple[str, ...]:
        if value is None:
            return self.NULL
        if isinstance(value, bool):
            return self.BOOLEAN
        if isinstance(value, int | float):
            return self.NUMBER
        return self.STRING

    def compare(self, path: Path, op: q.Op, value: q.Scalar) -> str:
        """A comparison within the value's JSON type: values of other types never match."""
        kind = self._kind(value)
        if value is None:
            return f"({self.is_type(path, kind)})" if op is q.Op.EQ else "FALSE"
        if isinstance(value, bool) and op is not q.Op.EQ:
            return "FALSE"  # the parser refuses orderings on booleans
        return f"({self.is_type(path, kind)} AND {self.value(path, kind)} {_SYMBOLS[op]} {self.param(value)})"

    def condition(self, flt: q.Filter) -> str:
        match flt:
            case q.Logical(op=op, children=children):
                joiner = " AND " if op is q.Op.AND else " OR "
                return "(" + joiner.join(self.condition(child) for child in children) + ")"
            case q.In(path=path, values=values):
                # One test per JSON type among the values, each reading the path once.
                by_kind: dict[tuple[str, ...], list[q.Scalar]] = {}
                for v in values:
                    by_kind.setdefault(self._kind(v), []).append(v)
                parts = []
                for kind, group in by_kind.items():
                    if kind == self.NULL:
                        parts.append(f"({self.is_type(path, kind)})")
                        continue
                    test = f"{self.is_type(path, kind)} AND {self.value(path, kind)}"
                    parts.append(f"({test} IN ({', '.join(self.param(v) for v in group)}))")
                return "(" + " OR ".join(parts) + ")"
            case q.Compare(op=q.Op.NEQ, path=path, value=value):
                # Present, and not equal: a missing path matches no comparison, not even NEQ.
                present = f"{self.type_of(path)} IS NOT NULL"  # parameters are collected in text order
                return f"({present} AND NOT COALESCE({self.compare(path, q.Op.EQ, value)}, FALSE))"
            case q.Compare(op=op, path=path, value=value):
                return self.compare(path, op, value)
        raise AssertionError(f"unknown filter {flt!r}")

    def order_by(self, sort: Sequence[q.SortKey]) -> str:
        """Per sort key: the type's rank, then the value within each type; then the key."""
        terms: list[str] = []
        kinds = (self.BOOLEAN, self.NUMBER, self.STRING, self.CONTAINER)
        for sk in sort:
            direction = " DESC" if sk.descending else ""
            # A simple CASE reads the type once.
            ranks = " ".join(f"WHEN '{name}' THEN {n}" for n, kind in enumerate(kinds, 1) for name in kind)
            terms.append(f"(CASE {self.type_of(sk.path)} {ranks} ELSE 0 END){direction}")
            terms += [term + direction for term in self.sort_values(sk.path)]
        terms.append(self.KEY)
        return ", ".join(terms)

    def sort_values(self, path: Path) -> list[str]:
        """ORDER BY terms ordering values within their type (the type's rank comes before them).

        One term per type; a dialect whose values of different types compare without error may
        give one term for all.
        """
        kinds = (self.BOOLEAN, self.NUMBER, self.STRING, self.CONTAINER)
        return [f"(CASE WHEN {self.is_type(path, kind)} THEN {self.value(path, kind)} END)" for kind in kinds]
