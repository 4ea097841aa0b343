"""The etag write ladder every SQL store follows, decided once.

A write with an etag is a conditional UPDATE (DELETE) of the live row carrying it; a first-write
without one is an INSERT that may replace only an expired row; anything else is an upsert (plain
DELETE). Each statement does its check itself, so concurrent writers are serialised by the
database's row locks; a statement that changed no row means the rule refused the write.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..base import Concurrency, EtagMismatch, Operation, SetRequest, etag_mismatch, first_write_conflict


class Statement(enum.Enum):
    UPSERT = "upsert"
    INSERT_FIRST = "insert_first"  # insert, or replace an expired row
    UPDATE_ETAG = "update_etag"  # update the live row carrying the etag
    DELETE = "delete"
    DELETE_ETAG = "delete_etag"  # delete the live row carrying the etag


@dataclass(frozen=True, slots=True)
class Step:
    statement: Statement
    refusal: EtagMismatch | None = None  # raised when the statement changed no row

    def check(self, rows: int) -> None:
        if self.refusal is not None and rows == 0:
            raise self.refusal


def step(op: Operation) -> Step:
    """The statement that carries out `op`, and what it means when it changes no row."""
    if isinstance(op, SetRequest):
        if op.etag:
            return Step(Statement.UPDATE_ETAG, etag_mismatch(op.key))
        if op.concurrency is Concurrency.FIRST_WRITE:
            return Step(Statement.INSERT_FIRST, first_write_conflict(op.key))
        return Step(Statement.UPSERT)
    if op.etag:
        return Step(Statement.DELETE_ETAG, etag_mismatch(op.key))
    return Step(Statement.DELETE)
