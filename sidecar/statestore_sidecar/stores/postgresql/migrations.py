"""daprd's `state.postgresql` v1 migrations, run the way daprd runs them, plus the conversion of
this server's earlier layout.

daprd keeps its migration level under the key `migrations` of the metadata table (the number of
migrations applied: 1 creates the table, 2 adds `expiredate`) and serialises replicas by locking
the row `lock` of that table. Doing the same here means either server finds the other's database
at level 2 and has nothing to do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import StoreError
from .metadata import quote_table

if TYPE_CHECKING:
    import asyncpg

LEVEL = 2
_REQUIRED_COLUMNS = frozenset({"key", "value", "isbinary", "insertdate", "updatedate", "expiredate"})
# This server's layout before it adopted daprd's: exact bytes in `value bytea`, JSON in `doc`.
_OLD_COLUMNS = frozenset({"key", "value", "doc", "etag", "expiredate"})


async def _columns(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
        table,
    )
    return {r[0]: r[1] for r in rows}


async def _convert_old_layout(conn: asyncpg.Connection, table: str, table_name: str) -> None:
    """Our earlier layout to daprd's: JSON values from `doc`, others as base64 with `isbinary`.

    ETags handed out before the conversion no longer match (daprd's ETag is the row's xmin).
    """
    await conn.execute(f"ALTER TABLE {table} ADD COLUMN isbinary boolean NOT NULL DEFAULT false")
    await conn.execute(f"UPDATE {table} SET isbinary = (doc IS NULL)")
    # PostgreSQL's base64 breaks lines every 76 characters; daprd's (Go's StdEncoding) does not.
    await conn.execute(
        f"ALTER TABLE {table} ALTER COLUMN value TYPE jsonb USING (CASE WHEN doc IS NOT NULL THEN doc "
        "ELSE to_jsonb(translate(encode(value, 'base64'), E'\\n', '')) END), "
        "ALTER COLUMN isbinary DROP DEFAULT, DROP COLUMN doc, DROP COLUMN etag"
    )
    schema, _, name = table_name.rpartition(".")
    index = quote_table((schema + "." if schema else "") + name[:40] + "_expiredate_idx")
    await conn.execute(f"DROP INDEX IF EXISTS {index}")


async def _lock_and_level(conn: asyncpg.Connection, m: str, level_key: str) -> int:
    """In the caller's transaction: take the migration locks, then read the level under `level_key`.

    Our replicas queue on an advisory lock (so none races another's CREATE TABLE), then all
    servers, daprd included, on the row lock daprd takes.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"statestore-migrate:{m}")
    await conn.execute(f"CREATE TABLE IF NOT EXISTS {m} (key text NOT NULL PRIMARY KEY, value text NOT NULL)")
    await conn.execute(f"INSERT INTO {m} (key, value) VALUES ('lock', 'lock') ON CONFLICT (key) DO NOTHING")
    await conn.execute(f"SELECT value FROM {m} WHERE key = 'lock' FOR UPDATE")
    stored = await conn.fetchval(f"SELECT value FROM {m} WHERE key = $1", level_key)
    return int(stored) if stored is not None and stored.isdigit() else 0


async def _set_level(conn: asyncpg.Connection, m: str, level_key: str, level: int) -> None:
    await conn.execute(
        f"INSERT INTO {m} (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        level_key,
        str(level),
    )


async def migrate(conn: asyncpg.Connection, table: str, metadata_table: str, table_name: str) -> None:
    """Bring `table` to daprd's level 2 layout, holding daprd's migration lock."""
    m = metadata_table
    async with conn.transaction():
        level = await _lock_and_level(conn, m, "migrations")
        columns = await _columns(conn, table)
        if columns.keys() >= _OLD_COLUMNS and columns["value"] == "bytea":
            await _convert_old_layout(conn, table, table_name)
            columns = await _columns(conn, table)
        if not columns:
            # daprd's migration 1 (even when the level says done: a metadata table shared by
            # several state tables holds one level for all, and daprd would then never create it).
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (key text NOT NULL PRIMARY KEY, value jsonb NOT NULL, "
                "isbinary boolean NOT NULL, insertdate TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(), "
                "updatedate TIMESTAMP WITH TIME ZONE NULL)"
            )
        if level < LEVEL or "expiredate" not in columns:
            # daprd's migration 2.
            await conn.execute(
                f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS expiredate TIMESTAMP WITH TIME ZONE"
            )
        if level < LEVEL:
            await _set_level(conn, m, "migrations", LEVEL)
        columns = await _columns(conn, table)
    missing = _REQUIRED_COLUMNS - columns.keys()
    if missing or columns.get("value") != "jsonb":
        raise StoreError(
            f"table {table_name} exists but does not have daprd's state.postgresql layout "
            f"(no column {', '.join(sorted(missing)) or 'value of type jsonb'}); choose another tableName"
        )


_V2_COLUMNS = frozenset({"key", "value", "etag", "created_at", "updated_at", "expires_at"})


async def migrate_v2(
    conn: asyncpg.Connection, table: str, metadata_table: str, table_name: str, prefix: str
) -> None:
    """daprd's v2 migration 1: the state table and its `expires_at` index."""
    level_key = f"migrations-state-v2-{prefix}"
    async with conn.transaction():
        level = await _lock_and_level(conn, metadata_table, level_key)
        columns = await _columns(conn, table)
        if not columns:
            await conn.execute(
                f"CREATE TABLE {table} (key text NOT NULL PRIMARY KEY, value bytea NOT NULL, "
                "etag uuid NOT NULL DEFAULT gen_random_uuid(), "
                "created_at timestamp with time zone NOT NULL DEFAULT now(), "
                "updated_at timestamp with time zone, expires_at timestamp with time zone)"
            )
            await conn.execute(f"CREATE INDEX ON {table} (expires_at)")
            columns = await _columns(conn, table)
        if level < 1:
            await _set_level(conn, metadata_table, level_key, 1)
    missing = _V2_COLUMNS - columns.keys()
    if missing or columns.get("value") != "bytea":
        raise StoreError(
            f"table {table_name} exists but does not have daprd's state.postgresql v2 layout "
            f"(no column {', '.join(sorted(missing)) or 'value of type bytea'}); choose another tablePrefix"
        )
