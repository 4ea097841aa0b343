"""`state.sqlite` settings: the schema and the parsers of its values (connection strings, pragmas)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from ...schema import Field, Kind, MetadataError, Persistence, Resolved, StoreSchema
from ..base import Feature

_PRAGMA = re.compile(r"([A-Za-z_]+)\(([A-Za-z0-9_.+-]*)\)")
_FORBIDDEN_PRAGMAS = {
    "busy_timeout": "use the busyTimeout metadata instead",
    "journal_mode": "use the disableWAL metadata instead",
    "foreign_keys": "it is not configurable",
    "query_only": "it is not configurable",
}


def check(md: Resolved) -> None:
    """Rules across settings (opaque values pass)."""
    known = md.known("tableName") and md.known("metadataTableName")
    if known and md["tableName"] == md["metadataTableName"]:
        raise MetadataError("metadataTableName", "tableName and metadataTableName must name different tables")


# Dapr's ValidIdentifier (ASCII letters, digits, underscore); SQLite reserves names starting `sqlite_`.
IDENTIFIER = r"(?!(?i:sqlite_))[A-Za-z0-9_]{1,128}"


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect, from `connectionString` (Dapr's syntax, `_pragma`/`_txlock` included)."""

    database: str
    uri: bool
    in_memory: bool
    read_only: bool
    pragmas: tuple[str, ...]
    file: str | None = None  # the database file's path, for files

    def create_folder(self) -> None:
        """Create the folder of a database file that does not exist yet, as a relative `.data/state.db` needs."""
        if self.file and not self.in_memory and not self.read_only:
            Path(self.file).parent.mkdir(parents=True, exist_ok=True)


def parse_connection_string(text: str) -> Target:
    """The connection target, or MetadataError for options this store cannot honour."""
    text = text.strip()
    lowered = text.lower()
    base, sep, query_string = text.partition("?")
    kept: list[tuple[str, str]] = []
    pragmas: list[str] = []
    params: dict[str, str] = {}
    for name, value in parse_qsl(query_string, keep_blank_values=True) if sep else []:
        if name == "_pragma":
            match = _PRAGMA.fullmatch(value.strip())
            if match is None:
                raise MetadataError("connectionString", f"_pragma={value!r} is not of the form name(value)")
            pragma = match.group(1).lower()
            if pragma in _FORBIDDEN_PRAGMAS:
                raise MetadataError(
                    "connectionString", f"_pragma={pragma} is not allowed: {_FORBIDDEN_PRAGMAS[pragma]}"
                )
            pragmas.append(f"PRAGMA {pragma}({match.group(2)})")
        elif name == "_txlock":
            # Dapr's driver option; transactions here always begin IMMEDIATE.
            if value.lower() not in ("immediate", "deferred", "exclusive"):
                raise MetadataError(
                    "connectionString", f"_txlock={value!r} is not immediate, deferred or exclusive"
                )
        else:
            params.setdefault(name, value)
            kept.append((name, value))
    in_memory = (
        lowered.startswith((":memory:", "file::memory:")) or params.get("mode", "").lower() == "memory"
    )
    read_only = params.get("mode", "").lower() == "ro" or params.get("immutable", "") == "1"
    if not in_memory:
        # A shared cache would make this store's own connections lock tables against each other
        # (SQLITE_LOCKED, which no busy timeout waits for); files use a private cache.
        kept = [(name, value) for name, value in kept if name != "cache"]
    if lowered.startswith("file:"):
        database = base + ("?" + urlencode(kept) if kept else "")
        file = unquote(urlsplit(base).path) or None
        return Target(database, True, in_memory, read_only, tuple(pragmas), file)
    if not kept:
        return Target(base, False, in_memory, read_only, tuple(pragmas), base)
    path = "" if base.lower() == ":memory:" else quote(base, safe="/")
    if base.lower() == ":memory:" and "mode" not in params:
        kept.append(("mode", "memory"))
    return Target(f"file:{path}?{urlencode(kept)}", True, in_memory, read_only, tuple(pragmas), base)


def quote_ident(name: str) -> str:
    """A table name as an SQL identifier: validated, then quoted."""
    if not re.fullmatch(IDENTIFIER, name):
        raise MetadataError("tableName", f"{name!r} is not a valid table name (letters, digits and _ only)")
    return f'"{name}"'


SCHEMA = StoreSchema(
    type="state.sqlite",
    fields=(
        # A file path, a file: URI (query parameters, _pragma and _txlock allowed) or :memory:.
        Field("connectionString", required=True, aliases=("url",), check=parse_connection_string),
        Field("tableName", default="state", pattern=IDENTIFIER),
        # Holds the schema version and the last cleanup time.
        Field("metadataTableName", default="metadata", pattern=IDENTIFIER),
        # The deadline of every database operation.
        Field("timeout", Kind.DURATION, default=20.0, aliases=("timeoutInSeconds",), minimum=1.0),
        # How long to wait for another connection's lock; 0 does not wait.
        Field("busyTimeout", Kind.DURATION, default=2.0),
        # How often expired rows are deleted; 0 never (they are never read anyway).
        Field("cleanupInterval", Kind.DURATION, default=0.0, aliases=("cleanupIntervalInSeconds",)),
        Field("disableWAL", Kind.BOOL, default=False),  # a rollback journal instead of WAL
    ),
    features=frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API}),
    check=check,
    persistence=Persistence.LOCAL_FILES,
)
