"""The tables of `state.mysql`: daprd's layout, created and upgraded as daprd does, and the
conversion of this server's earlier layout.

daprd's state table: `id VARCHAR(255) PRIMARY KEY`, `value JSON` (JSON values; other bytes as a
base64 JSON string with `isbinary` set), `isbinary`, `insertDate`, `updateDate` (kept by the
database), `eTag VARCHAR(36)` (a UUID per write), `expiredate TIMESTAMP NULL` with its index
`expiredate_idx`; its metadata table: `id VARCHAR(255) PRIMARY KEY, value TEXT`. daprd has no
migration level for MySQL: it creates what is missing and adds `expiredate` to tables older than it.

Where this server creates the table, `id` compares byte for byte (a binary collation without pad
space), which daprd's own statements work with; a table daprd created keeps its server's collation.
"""

from __future__ import annotations

from typing import Any

from ..base import StoreError
from .metadata import quote_ident

_REQUIRED_COLUMNS = frozenset({"id", "value", "isbinary", "etag", "expiredate"})
# This server's layout before it adopted daprd's: exact bytes in `value`, JSON in `doc`.
_OLD_COLUMNS = frozenset({"id", "value", "doc", "etag", "expires_at"})


def state_table_ddl(table: str, key_collation: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table} ("
        f"id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE {key_collation} NOT NULL PRIMARY KEY, "
        "value JSON NOT NULL, isbinary BOOLEAN NOT NULL, "
        "insertDate TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, "
        "updateDate TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, "
        "eTag VARCHAR(36) NOT NULL, expiredate TIMESTAMP NULL, INDEX expiredate_idx(expiredate))"
    )


async def _columns(cur: Any, schema: str, table: str) -> set[str]:
    await cur.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        (schema, table),
    )
    return {str(row[0]).lower() for row in await cur.fetchall()}


async def _convert_old_layout(cur: Any, table: str, schema: str, name: str, key_collation: str) -> None:
    """Copy the rows of our earlier layout into daprd's, then swap the tables.

    ETags are kept; expiries are rounded up to whole seconds (TIMESTAMP) and capped at its end.
    """
    # MySQL names are at most 64 characters long, as `quote_ident` checks.
    new = f"{quote_ident(schema, 'schemaName')}.{quote_ident(name[:56] + '__daprd', 'tableName')}"
    old = f"{quote_ident(schema, 'schemaName')}.{quote_ident(name[:54] + '__earlier', 'tableName')}"
    await cur.execute(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
        (schema, f"{name[:56]}__daprd"),
    )
    if (await cur.fetchone())[0]:  # left by a conversion that was interrupted
        await cur.execute(f"DROP TABLE {new}")
    await cur.execute(state_table_ddl(new, key_collation))
    # MariaDB's TO_BASE64 breaks lines every 76 characters; daprd's (Go's StdEncoding) does not.
    await cur.execute(
        f"INSERT INTO {new} (id, value, isbinary, insertDate, updateDate, eTag, expiredate) "
        "SELECT CONVERT(id USING utf8mb4), "
        "IF(doc IS NOT NULL, doc, JSON_QUOTE(REPLACE(TO_BASE64(value), '\\n', ''))), doc IS NULL, "
        "insertdate, COALESCE(updatedate, insertdate), LEFT(etag, 36), "
        "IF(expires_at IS NULL, NULL, FROM_UNIXTIME(LEAST(CEIL(expires_at / 1000), 2147483647))) "
        f"FROM {table}"
    )
    await cur.execute(f"RENAME TABLE {table} TO {old}, {new} TO {table}")
    await cur.execute(f"DROP TABLE {old}")


async def migrate(
    cur: Any, *, schema: str, table: str, table_name: str, metadata_table: str, metadata_name: str
) -> None:
    """Create or upgrade the tables, one replica at a time (a named lock)."""
    await cur.execute("SELECT VERSION()")
    version = str((await cur.fetchone())[0])
    key_collation = "utf8mb4_nopad_bin" if "mariadb" in version.lower() else "utf8mb4_0900_bin"
    await cur.execute("SELECT GET_LOCK(%s, 60)", (f"statestore-migrate:{schema}.{table_name}",))
    if (await cur.fetchone())[0] != 1:
        raise StoreError(f"could not take the migration lock of table {schema}.{table_name} within 60s")
    try:
        # Look before creating: "IF NOT EXISTS" on an existing object raises a client-side Warning.
        await cur.execute(
            "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = %s", (schema,)
        )
        if not (await cur.fetchone())[0]:
            quoted_schema = quote_ident(schema, "schemaName")
            await cur.execute(f"CREATE DATABASE IF NOT EXISTS {quoted_schema} CHARACTER SET utf8mb4")
        await cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        )
        tables = {str(row[0]) for row in await cur.fetchall()}
        if metadata_name not in tables:
            await cur.execute(
                f"CREATE TABLE IF NOT EXISTS {metadata_table} (id VARCHAR(255) NOT NULL PRIMARY KEY, value TEXT NOT NULL)"
            )
        if table_name not in tables:
            await cur.execute(state_table_ddl(table, key_collation))
        columns = await _columns(cur, schema, table_name)
        if columns >= _OLD_COLUMNS and "isbinary" not in columns:
            await _convert_old_layout(cur, table, schema, table_name, key_collation)
            columns = await _columns(cur, schema, table_name)
        if "expiredate" not in columns and columns >= _REQUIRED_COLUMNS - {"expiredate"}:
            # As daprd does for tables created before it had TTLs.
            await cur.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS expiredate TIMESTAMP NULL")
            await cur.execute(f"CREATE INDEX IF NOT EXISTS expiredate_idx ON {table} (expiredate)")
            columns.add("expiredate")
    finally:
        await cur.execute("SELECT RELEASE_LOCK(%s)", (f"statestore-migrate:{schema}.{table_name}",))
        await cur.fetchall()
    missing = _REQUIRED_COLUMNS - columns
    if missing:
        raise StoreError(
            f"table {schema}.{table_name} exists but does not have daprd's state.mysql layout "
            f"(no column {', '.join(sorted(missing))}); choose another tableName"
        )
