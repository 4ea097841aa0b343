"""The official Go SDK (github.com/dapr/go-sdk, hack/sdk/go-client) against the real server over gRPC,
on every backend, and against daprd on the same backend (the `served` fixture)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from grpc_testing import STORE

from conftest import serve_impl
from fixtures.go_client import go_client
from fixtures.sidecar import Sidecar
from fixtures.stores import ComponentUnderTest

# go-client is built with the backends' set-up (`make go-client`); `make unit` needs Python alone.
pytestmark = pytest.mark.backends

# As in test_sdk.py: daprd's Redis and PostgreSQL fail a first-write conflict with a plain error.
FIRST_WRITE_CONFLICT = {("daprd", "redis"): "INTERNAL", ("daprd", "postgresql"): "INTERNAL"}
DAPRD_QUERY_BACKENDS = frozenset({"postgresql"})
# The Go SDK sends an explicit last-write with every save; daprd's Redis then ignores the ETag (saves
# and transactions). Ours enforces a given ETag whatever the concurrency (docs/state-api.md).
ETAG_IGNORED = frozenset({("daprd", "redis")})


def run(server: Sidecar, *ops: dict[str, Any]) -> list[dict[str, Any]]:
    return go_client([{"store": STORE, **op} for op in ops], address=server.grpc_address)


def test_save_get_etags_first_write_bulk_and_delete(
    served: Sidecar, impl: str, component: ComponentUnderTest
) -> None:
    saved, got = run(served, {"op": "save", "key": "o1", "value": {"n": 1}}, {"op": "get", "key": "o1"})
    assert saved["ok"] and got["found"] and got["value"] == {"n": 1} and got["etag"]
    first = got["etag"]
    updated, current, stale, stale_delete = run(
        served,
        {"op": "save", "key": "o1", "value": {"n": 2}, "etag": first},
        {"op": "get", "key": "o1"},
        {"op": "save", "key": "o1", "value": {"n": 3}, "etag": first},
        {"op": "delete", "key": "o1", "etag": first},
    )
    assert updated["ok"] and current["value"] == {"n": 2} and current["etag"] != first
    if (impl, component.family) in ETAG_IGNORED:
        assert stale["ok"], stale
    else:
        assert stale["ok"] is False and stale["code"] == "ABORTED", stale
        assert "possible etag mismatch" in stale["message"]
    assert stale_delete["ok"] is False and stale_delete["code"] == "ABORTED", stale_delete
    (current,) = run(served, {"op": "get", "key": "o1"})

    created, conflict, kept = run(
        served,
        {"op": "save", "key": "fresh", "text": "one", "concurrency": "first-write"},
        {"op": "save", "key": "fresh", "text": "two", "concurrency": "first-write"},
        {"op": "get", "key": "fresh"},
    )
    assert created["ok"] and kept["data"] == "one"
    assert conflict["code"] == FIRST_WRITE_CONFLICT.get((impl, component.family), "ABORTED"), conflict

    bulk_saved, bulk, deleted, gone = run(
        served,
        {"op": "save_bulk", "items": [{"key": "b1", "value": [1, 2]}, {"key": "b2", "text": "plain"}]},
        {"op": "get_bulk", "keys": ["b1", "b2", "missing"], "parallelism": 2},
        {"op": "delete", "key": "o1", "etag": current["etag"]},
        {"op": "get", "key": "o1"},
    )
    assert bulk_saved["ok"] and deleted["ok"] and gone["found"] is False
    items = {i["key"]: i for i in bulk["items"]}
    assert items["b1"]["value"] == [1, 2] and items["b2"]["data"] == "plain"
    assert items["missing"]["found"] is False and not items["missing"].get("error")


def test_transactions_and_bulk_delete(served: Sidecar, impl: str, component: ComponentUnderTest) -> None:
    run(served, {"op": "save", "key": "keep", "text": "before"})
    (got,) = run(served, {"op": "get", "key": "keep"})
    failed, t1, kept = run(
        served,
        {
            "op": "transaction",
            "operations": [
                {"operation": "upsert", "key": "t1", "text": "one"},
                {"operation": "upsert", "key": "keep", "text": "after", "etag": "999999"},
            ],
        },
        {"op": "get", "key": "t1"},
        {"op": "get", "key": "keep"},
    )
    if (impl, component.family) in ETAG_IGNORED:
        assert failed["ok"] and t1["data"] == "one" and kept["data"] == "after", (failed, t1, kept)
    else:
        assert failed["code"] == "INTERNAL", failed
        assert failed["message"].startswith("error while executing state transaction")
        assert t1["found"] is False and kept["data"] == "before"
    done, bulk, removed, after = run(
        served,
        {
            "op": "transaction",
            "operations": [
                {"operation": "upsert", "key": "keep", "text": "after", "etag": got["etag"]},
                {"operation": "upsert", "key": "t2", "text": "two"},
            ],
        },
        {"op": "get_bulk", "keys": ["keep", "t2"]},
        {"op": "delete_bulk", "keys": ["keep", "t2"]},
        {"op": "get_bulk", "keys": ["keep", "t2"]},
    )
    assert done["ok"] and removed["ok"], (done, removed)
    assert {i["key"]: i["data"] for i in bulk["items"]} == {"keep": "after", "t2": "two"}
    assert all(i["found"] is False for i in after["items"])


def test_ttl_and_metadata(served: Sidecar, component: ComponentUnderTest) -> None:
    short, long, bad, meta = run(
        served,
        {"op": "save", "key": "session", "text": "abc", "metadata": {"ttlInSeconds": "1"}},
        {"op": "save", "key": "lasting", "text": "xyz", "metadata": {"ttlInSeconds": "3600"}},
        {"op": "save", "key": "k", "text": "v", "metadata": {"ttlInSeconds": "soon"}},
        {"op": "metadata"},
    )
    assert short["ok"] and long["ok"] and bad["code"] == "INTERNAL"
    assert meta["app_id"] == "myapp"
    (registered,) = meta["components"]
    assert (registered["name"], registered["type"]) == (STORE, component.type)
    assert {"ETAG", "TRANSACTIONAL", "ACTOR"} <= set(registered["capabilities"])
    deadline = time.monotonic() + 30
    while run(served, {"op": "get", "key": "session"})[0]["found"]:
        assert time.monotonic() < deadline, "the item did not expire"
        time.sleep(0.25)
    assert run(served, {"op": "get", "key": "lasting"})[0]["data"] == "xyz"


def test_query(impl: str, query_component: ComponentUnderTest, tmp_path: Path) -> None:
    with serve_impl(impl, query_component, tmp_path / "server") as server:
        as_json = {"contentType": "application/json"}
        saves = [
            {"op": "save", "key": f"c{i}", "value": {"city": city, "i": i}, "metadata": as_json}
            for i, city in enumerate(["Paris", "Oslo", "Paris"])
        ]
        query = {"filter": {"EQ": {"city": "Paris"}}, "sort": [{"key": "i"}]}
        found = run(server, *saves, {"op": "query", "query": query})[-1]
    if impl == "daprd" and query_component.backend not in DAPRD_QUERY_BACKENDS:
        assert found["code"] == "INTERNAL"
        assert any(d.get("reason") == "DAPR_STATE_QUERYING_NOT_SUPPORTED" for d in found["details"]), found
        return
    assert found["ok"], found
    assert [(r["key"], r["value"]["i"]) for r in found["results"]] == [("c0", 0), ("c2", 2)]


def test_api_token(impl: str, tmp_path: Path) -> None:
    memory = ComponentUnderTest("in_memory", "state.in-memory", {})
    token = {"DAPR_API_TOKEN": "s3cret"}
    with serve_impl(impl, memory, tmp_path / "server", token) as server:
        endpoint = {"DAPR_GRPC_ENDPOINT": server.grpc_address}
        get = [{"op": "get", "store": STORE, "key": "k"}]
        (without,) = go_client(get, env=endpoint)
        (wrong,) = go_client(get, env={**endpoint, "DAPR_API_TOKEN": "guess"})
        (right,) = go_client(get, env={**endpoint, **token})
    assert without["code"] == wrong["code"] == "UNAUTHENTICATED"
    assert any(d.get("reason") == "Unauthorized" for d in wrong["details"]), wrong
    assert right["ok"] and right["found"] is False
