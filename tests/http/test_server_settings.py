"""Server-wide behaviour: no stores, the API token, and key prefix strategies."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.stores import ComponentUnderTest

MakeApi = Callable[..., Any]


def memory() -> ComponentUnderTest:
    return ComponentUnderTest("in_memory", "state.in-memory", {})


async def test_no_store_configured_is_500(make_api: MakeApi) -> None:
    api: httpx.AsyncClient = await make_api({})
    r = await api.get("/v1.0/state/anything/k")
    body = r.json()
    assert r.status_code == 500
    assert body["errorCode"] == "ERR_STATE_STORE_NOT_CONFIGURED"
    assert body["message"] == "state store anything is not configured"
    assert body["details"][0]["reason"] == "DAPR_STATE_NOT_CONFIGURED"
    assert body["details"][0]["metadata"] == {"appID": "myapp"}
    assert (await api.get("/v1.0/healthz")).status_code == 204


async def test_api_token(make_api: MakeApi) -> None:
    api: httpx.AsyncClient = await make_api({"store": memory()}, api_token="s3cret")
    for r in (
        await api.get("/v1.0/state/store/k"),
        await api.get("/v1.0/metadata"),
        await api.get("/v1.0/state/store/k", headers={"dapr-api-token": "wrong"}),
        await api.post("/v1.0/state/store", json=[]),
    ):
        assert r.status_code == 401
        assert r.text == "invalid api token\n"
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
    # Health stays open so probes need no secret.
    assert (await api.get("/v1.0/healthz")).status_code == 204
    assert (await api.get("/v1.0/healthz/outbound")).status_code == 204
    ok = await api.post(
        "/v1.0/state/store", json=[{"key": "k", "value": 1}], headers={"dapr-api-token": "s3cret"}
    )
    assert ok.status_code == 204
    got = await api.get("/v1.0/state/store/k", headers={"dapr-api-token": "s3cret"})
    assert got.json() == 1


def stored_keys(db: Path) -> set[str]:
    """Keys as the backend holds them, read straight from the SQLite file."""
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute('SELECT "key" FROM "state"')}


@pytest.mark.parametrize(
    ("strategy", "stored"),
    [
        (None, "myapp||k"),
        ("appid", "myapp||k"),
        ("name", "prefixed||k"),
        ("namespace", "team-a.myapp||k"),
        ("none", "k"),
        ("Custom-Prefix", "custom-prefix||k"),
    ],
)
async def test_key_prefix_strategies(
    make_api: MakeApi, tmp_path: Path, strategy: str | None, stored: str
) -> None:
    db = tmp_path / "state.db"
    metadata = {"connectionString": str(db), **({"keyPrefix": strategy} if strategy else {})}
    api: httpx.AsyncClient = await make_api(
        {"prefixed": ComponentUnderTest("sqlite", "state.sqlite", metadata)}, namespace="team-a"
    )
    assert (await api.post("/v1.0/state/prefixed", json=[{"key": "k", "value": "v"}])).status_code == 204
    assert stored_keys(db) == {stored}
    got = await api.get("/v1.0/state/prefixed/k")
    assert got.json() == "v"
    # Bulk get and query give back the application's key, not the stored one.
    bulk = await api.post("/v1.0/state/prefixed/bulk", json={"keys": ["k"]})
    assert bulk.json() == [{"key": "k", "data": "v", "etag": got.headers["etag"]}]
    query = await api.post("/v1.0-alpha1/state/prefixed/query", json={})
    assert [r["key"] for r in query.json()["results"]] == ["k"]


async def test_namespace_prefix_falls_back_to_app_id(make_api: MakeApi, tmp_path: Path) -> None:
    db = tmp_path / "ns.db"
    api: httpx.AsyncClient = await make_api(
        {
            "a": ComponentUnderTest(
                "sqlite", "state.sqlite", {"connectionString": str(db), "keyPrefix": "namespace"}
            )
        }
    )
    await api.post("/v1.0/state/a", json=[{"key": "k", "value": 1}])
    assert stored_keys(db) == {"myapp||k"}


async def test_queries_see_only_their_own_prefix(make_api: MakeApi, tmp_path: Path) -> None:
    db = {"connectionString": str(tmp_path / "shared.db")}
    api: httpx.AsyncClient = await make_api(
        {
            "one": ComponentUnderTest("sqlite", "state.sqlite", {**db, "keyPrefix": "one"}),
            "two": ComponentUnderTest("sqlite", "state.sqlite", {**db, "keyPrefix": "two"}),
        }
    )
    await api.post("/v1.0/state/one", json=[{"key": "a", "value": 1}])
    await api.post("/v1.0/state/two", json=[{"key": "b", "value": 2}])
    one = await api.post("/v1.0-alpha1/state/one/query", json={})
    assert [r["key"] for r in one.json()["results"]] == ["a"]
    assert (await api.get("/v1.0/state/two/a")).status_code == 204
