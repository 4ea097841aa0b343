"""The pinned capability table (fixtures/capabilities.py) agrees with the docs, with what every store
advertises, and with what the API does: tests choose their cases from that table, never from the store."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from fixtures.capabilities import CAPABILITIES, ETAG_PATTERNS, Capabilities
from fixtures.stores import BACKENDS, PLUGGABLE_BACKENDS, ComponentUnderTest, key_base
from statestore_sidecar.stores import schema_for

ROOT = Path(__file__).resolve().parents[2]
YES, NO = "\u2713", "\u2013"  # the docs' check mark and en dash
STATE = "/v1.0/state/store"
QUERY = "/v1.0-alpha1/state/store/query"


@pytest.fixture
def k(request: pytest.FixtureRequest) -> str:
    return key_base(request, 10)


def advertised(offers: Capabilities) -> list[str]:
    """`/v1.0/metadata`'s capabilities of a store that offers exactly this (ACTOR last, as daprd)."""
    names = ["ETAG"] + ["QUERY_API"] * offers.query + ["TRANSACTIONAL"] * offers.transactions
    names += ["TTL"] * offers.ttl
    return [*names, *["ACTOR"] * offers.actor_store]


def docs_table() -> dict[str, list[str]]:
    """docs/state-api.md's "Stores" table: type -> its cells (ETag, transactions, TTL, query, actor)."""
    text = (ROOT / "docs" / "state-api.md").read_text()
    section = text.split("## Stores", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        if match := re.match(r"\| `(state\.[a-z-]+)`[^|]*\|(.*)\|$", line):
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


BUILT_IN = [backend for backend in CAPABILITIES if backend not in PLUGGABLE_BACKENDS]


def test_the_table_is_the_documented_one() -> None:
    rows = docs_table()
    assert sorted(rows) == sorted({BACKENDS[backend] for backend in BUILT_IN})
    for backend in BUILT_IN:
        offers = CAPABILITIES[backend]
        etag, transactions, ttl, query, actor = rows[BACKENDS[backend]]
        assert etag == offers.etag, backend
        for cell, offered in (
            (transactions, offers.transactions),
            (ttl, offers.ttl),
            (actor, offers.actor_store),
        ):
            assert cell == (YES if offered else NO), backend
        assert query.startswith(YES if offers.query else NO), backend


@pytest.mark.parametrize("backend", BUILT_IN)
def test_every_store_advertises_what_the_table_says(backend: str) -> None:
    features = sorted(f.value for f in schema_for(BACKENDS[backend]).features)
    assert [*features, *["ACTOR"] * CAPABILITIES[backend].actor_store] == advertised(CAPABILITIES[backend])


async def test_the_api_behaves_as_the_table_says(
    api: httpx.AsyncClient, component: ComponentUnderTest, k: str
) -> None:
    offers = component.offers
    meta = (await api.get("/v1.0/metadata")).json()
    (store,) = meta["components"]
    assert store["capabilities"] == advertised(offers)

    assert (await api.post(STATE, json=[{"key": k, "value": {"n": 1}}])).status_code == 204
    etag = (await api.get(f"{STATE}/{k}")).headers["etag"]
    assert ETAG_PATTERNS[offers.etag].fullmatch(etag), etag

    r = await api.post(QUERY, json={"filter": {"EQ": {"n": 1}}})
    if offers.query:
        assert r.status_code == 200
        assert [item["key"] for item in r.json()["results"] if item["key"] == k] == [k]
    else:
        assert (r.status_code, r.json()["errorCode"]) == (500, "ERR_STATE_STORE_NOT_SUPPORTED")

    r = await api.post(
        f"{STATE}/transaction",
        json={"operations": [{"operation": "upsert", "request": {"key": f"{k}-tx", "value": 2}}]},
    )
    assert r.status_code == (204 if offers.transactions else 500)

    assert (
        await api.post(STATE, json=[{"key": f"{k}-ttl", "value": 3, "metadata": {"ttlInSeconds": "3600"}}])
    ).status_code == 204
    expiry = (await api.get(f"{STATE}/{k}-ttl")).headers.get("metadata.ttlexpiretime")
    assert (expiry is not None) == offers.ttl
