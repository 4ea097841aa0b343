"""`state.postgresql` with `spec.version: v2`: daprd's v2 layout.

The table `<tablePrefix>state`: `key text PRIMARY KEY`, `value bytea` (the exact bytes given), `etag
uuid` (a new UUID per write), `created_at`, `updated_at`, `expires_at timestamptz` (NULL: never
expires), indexed on `expires_at`. daprd keeps its migration level under
`migrations-state-v2-<tablePrefix>` and its cleanup time under `last-cleanup-state-v2-<tablePrefix>`
of the metadata table. Like daprd's v2, it has no query API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ... import query as q
from ..base import Item, QueryError, QueryPage
from . import migrations
from .metadata import SCHEMA_V2
from .store import PostgresStore

if TYPE_CHECKING:
    import asyncpg

LIVE = "(expires_at IS NULL OR expires_at > now())"
_EXPIRY = "CASE WHEN $3::integer > 0 THEN now() + make_interval(secs => $3::integer) END"


class PostgresV2Store(PostgresStore):
    features = SCHEMA_V2.features
    expiry_column = "expires_at"

    def __init__(self, config: Any) -> None:
        self.prefix: str = config.metadata["tablePrefix"]
        super().__init__(config)
        self.cleanup_key = f"last-cleanup-state-v2-{self.prefix}"

    @staticmethod
    def table_name_of(md: Any) -> str:
        return str(md["tablePrefix"]) + "state"

    def _statements(self) -> dict[str, str]:
        t = self.table
        values = f"$1, $2, gen_random_uuid(), {_EXPIRY}"
        update = "value = excluded.value, etag = excluded.etag, updated_at = now(), expires_at = excluded.expires_at"
        read = "value, etag::text, extract(epoch FROM expires_at)::float8"
        insert = f"INSERT INTO {t} (key, value, etag, expires_at) VALUES ({values}) ON CONFLICT (key) DO UPDATE SET {update}"
        return {
            "get": f"SELECT {read} FROM {t} WHERE key = $1 AND {LIVE}",
            "bulk_get": f"SELECT key, {read} FROM {t} WHERE key = ANY($1::text[]) AND {LIVE}",
            "upsert": insert,
            "insert_first": f"{insert} WHERE {t}.expires_at IS NOT NULL AND {t}.expires_at <= now()",
            "update_etag": (
                f"UPDATE {t} SET value = $2, etag = gen_random_uuid(), updated_at = now(), expires_at = {_EXPIRY} "
                f"WHERE key = $1 AND etag::text = $4 AND {LIVE}"
            ),
            "delete": f"DELETE FROM {t} WHERE key = $1",
            "delete_etag": f"DELETE FROM {t} WHERE key = $1 AND etag::text = $2 AND {LIVE}",
        }

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        await migrations.migrate_v2(conn, self.table, self.metadata_table, self._table_name, self.prefix)

    @staticmethod
    def _item(row: asyncpg.Record, at: int) -> Item:
        return Item(bytes(row[at]), row[at + 1], row[at + 2])

    @staticmethod
    def _value_args(value: bytes) -> tuple[object, ...]:
        return (value,)

    async def query(self, query: q.Query, key_prefix: str) -> QueryPage:
        raise QueryError("state store does not support querying: state.postgresql v2 has no query support")
