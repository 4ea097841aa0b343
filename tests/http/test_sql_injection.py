"""SQL injection through every client-controlled text (keys, values, ETags, query paths, query values,
sort keys) on every SQL store: the table and its rows survive, and the hostile text is stored as data.

The API's answers are checked, then the database itself is read with its own client, so a store that
lost, widened or rewrote rows cannot pass.
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import asyncpg
import httpx
import orjson
import pymysql  # type: ignore[import-untyped]
import pytest

from fixtures.backends import MariaDBServer, PostgresServer
from fixtures.stores import ComponentUnderTest

if TYPE_CHECKING:
    from conftest import MakeApi

STATE = "/v1.0/state/store"
QUERY = "/v1.0-alpha1/state/store/query"
SERVERS = {"postgresql": "postgres_server", "mysql": "mariadb_server"}


def hostile(table: str) -> list[str]:
    """Texts that would destroy `table` or widen a match if pasted into SQL, in every quoting style."""
    return [
        f"'; DROP TABLE {table}; --",
        f'"; DROP TABLE "{table}"; --',
        f"`; DROP TABLE `{table}`; -- ",
        f"x'); DELETE FROM {table}; --",
        "x' OR '1'='1",
        "x\\' OR 1=1 #",
        "$1 $2 %s %(x)s ? :name",
        f"' + (SELECT count(*) FROM {table}) + '",  # '||' is not allowed in keys
    ]


async def database_rows(backend: str, metadata: dict[str, str], server: Any) -> dict[str, bytes]:
    """Every row of the store's table, read with the database's own client: stored key -> value."""
    table = metadata.get("tableName", "state")
    if backend == "sqlite":
        with sqlite3.connect(metadata["connectionString"]) as conn:
            rows = conn.execute(f'SELECT key, value FROM "{table}"').fetchall()
        return {key: value.encode() for key, value in rows}
    if backend == "postgresql":
        assert isinstance(server, PostgresServer)
        conn = await asyncpg.connect(server.connection_string(form="url"))
        try:
            return {
                row["key"]: row["value"].encode()  # jsonb, as text
                for row in await conn.fetch(f'SELECT key, value FROM "{table}"')
            }
        finally:
            await conn.close()
    assert isinstance(server, MariaDBServer)
    my = pymysql.connect(host=server.host, port=server.port, user=server.user, password=server.password)
    try:
        with my.cursor() as cur:
            cur.execute(f"SELECT id, value FROM `dapr_state_store`.`{table}`")
            return {key: value.encode() for key, value in cur.fetchall()}  # daprd's layout: text
    finally:
        my.close()


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("sqlite"),
        pytest.param("postgresql", marks=pytest.mark.backends),
        pytest.param("mysql", marks=pytest.mark.backends),
    ],
)
async def test_hostile_text_is_stored_as_data_and_the_table_survives(
    backend: str, request: pytest.FixtureRequest, make_api: MakeApi
) -> None:
    metadata: dict[str, str] = dict(request.getfixturevalue(f"{backend}_metadata"))
    server = request.getfixturevalue(SERVERS[backend]) if backend in SERVERS else None
    texts = hostile(metadata.get("tableName", "state"))
    base = uuid.uuid4().hex[:8]
    api: httpx.AsyncClient = await make_api(
        {"store": ComponentUnderTest(backend, f"state.{backend}", metadata)}
    )

    bystander = {"key": f"{base}-bystander", "value": {"owner": "someone else"}}
    assert (await api.post(STATE, json=[bystander])).status_code == 204
    bystander_etag = (await api.get(f"{STATE}/{base}-bystander")).headers["etag"]

    # Hostile keys and values saved; deletes with hostile ETags; a transaction of hostile keys.
    items: list[dict[str, Any]] = [
        {"key": f"{base}-{i}{text}", "value": {"v": text}} for i, text in enumerate(texts)
    ]
    assert (await api.post(STATE, json=items)).status_code == 204
    for item, text in zip(items, texts, strict=True):
        r = await api.delete(f"{STATE}/{quote(item['key'], safe='')}", headers={"if-match": text})
        assert r.status_code == 409, r.text  # a hostile ETag is a mismatch, never a match-all
    tx = [{"operation": "upsert", "request": {"key": f"{base}-tx{t}", "value": t}} for t in texts]
    assert (await api.post(f"{STATE}/transaction", json={"operations": tx})).status_code == 204

    # Hostile query values match exactly the row holding that text; hostile paths and sort keys are
    # answered without error and match nothing they should not.
    for item, text in zip(items, texts, strict=True):
        r = await api.post(QUERY, json={"filter": {"EQ": {"v": text}}})
        assert r.status_code == 200, r.text
        assert [result["key"] for result in r.json()["results"]] == [item["key"]]
        assert (await api.post(QUERY, json={"filter": {"EQ": {text: "x"}}})).status_code == 204
        r = await api.post(QUERY, json={"filter": {"IN": {"v": [text, "x"]}}, "sort": [{"key": text}]})
        assert [result["key"] for result in r.json()["results"]] == [item["key"]]
        r = await api.post(QUERY, json={"sort": [{"key": text, "order": "DESC"}], "page": {"limit": 100}})
        assert r.status_code == 200 and len(r.json()["results"]) == 2 * len(texts) + 1  # every row

    # Through the API: everything reads back as written.
    got = await api.get(f"{STATE}/{base}-bystander")
    assert (got.json(), got.headers["etag"]) == (bystander["value"], bystander_etag)
    for item in items:
        assert (await api.get(f"{STATE}/{quote(item['key'], safe='')}")).json() == item["value"]

    # In the database: the table is there with every row, the hostile text as data.
    rows = await database_rows(backend, metadata, server)
    expected = {f"myapp||{item['key']}": orjson.dumps(item["value"]) for item in [bystander, *items]}
    expected |= {f"myapp||{base}-tx{t}": orjson.dumps(t) for t in texts}
    assert {key: orjson.loads(value) for key, value in rows.items()} == {
        key: orjson.loads(value) for key, value in expected.items()
    }
