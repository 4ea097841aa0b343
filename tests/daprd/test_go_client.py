"""The official Dapr Go SDK (hack/sdk/go-client) against the reference daprd, over gRPC."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from fixtures.go_client import go_client
from statestore_testing.daprd import DaprComponent, Daprd

pytestmark = pytest.mark.backends


def key() -> str:
    return f"k-{uuid.uuid4().hex}"


def test_save_get_and_etags(tmp_path: Path) -> None:
    k, other = key(), key()
    with Daprd([DaprComponent("store", "state.in-memory")], tmp_path) as daprd:
        address = daprd.grpc_address
        saved, got = go_client(
            [
                {"op": "save", "store": "store", "key": k, "value": {"n": 1}},
                {"op": "get", "store": "store", "key": k},
            ],
            address=address,
        )
        assert saved == {"op": "save", "ok": True}
        assert got["ok"] and got["found"] and got["value"] == {"n": 1} and got["data"] == '{"n":1}'
        first = got["etag"]

        results = go_client(
            [
                {"op": "save", "store": "store", "key": k, "value": {"n": 2}, "etag": first, "id": 1},
                {"op": "get", "store": "store", "key": k},
                {"op": "save", "store": "store", "key": k, "value": {"n": 3}, "etag": first},
                {"op": "save", "store": "store", "key": k, "value": 4, "concurrency": "first-write"},
                {"op": "delete", "store": "store", "key": k, "etag": first},
                {"op": "save", "store": "store", "key": other, "text": "plain", "concurrency": "first-write"},
                {"op": "get_bulk", "store": "store", "keys": [k, other, "missing"]},
                {"op": "get", "store": "nope", "key": k},
                {"op": "query", "store": "store", "query": {"filter": {}}},
                {"op": "metadata"},
                {"op": "frobnicate"},
            ],
            address=address,
        )
    updated, current, stale, first_write, stale_delete, text, bulk, unknown, query, metadata, bad = results
    assert updated == {"op": "save", "ok": True, "id": 1}
    assert current["value"] == {"n": 2} and current["etag"] != first
    for refused in (stale, first_write, stale_delete):
        assert refused["ok"] is False and refused["code"] == "ABORTED", refused
    assert "possible etag mismatch" in stale["message"]
    assert text["ok"]
    items: dict[str, Any] = {item["key"]: item for item in bulk["items"]}
    assert items[k]["value"] == {"n": 2} and items[other]["data"] == "plain" and "value" not in items[other]
    assert items["missing"]["found"] is False
    assert unknown["code"] == "INVALID_ARGUMENT"
    assert query["code"] == "INTERNAL"
    assert any("QUERYING" in d.get("reason", "") for d in query["details"]), query
    assert metadata["app_id"] == "daprd-test"
    assert [(c["name"], c["type"]) for c in metadata["components"]] == [("store", "state.in-memory")]
    assert bad["ok"] is False and bad["code"] == "INVALID_INPUT"


def test_transaction_and_bulk_delete(tmp_path: Path) -> None:
    a, b = key(), key()
    with Daprd([DaprComponent("store", "state.in-memory")], tmp_path) as daprd:
        results = go_client(
            [
                {
                    "op": "save_bulk",
                    "store": "store",
                    "items": [{"key": a, "value": 1}, {"key": b, "value": 2}],
                },
                {
                    "op": "transaction",
                    "store": "store",
                    "operations": [
                        {"operation": "upsert", "key": a, "value": 10},
                        {"operation": "delete", "key": b},
                    ],
                },
                {"op": "get_bulk", "store": "store", "keys": [a, b]},
                {"op": "delete_bulk", "store": "store", "keys": [a]},
                {"op": "get", "store": "store", "key": a},
                {"op": "save", "store": "store", "key": b, "value": 3, "etag": ""},  # "" is no ETag
                {"op": "get", "store": "store", "key": b},
                {
                    "op": "transaction",
                    "store": "store",
                    "operations": [{"operation": "delete", "key": b, "etag": "stale"}],
                },
                {"op": "save", "store": "store", "key": b, "value": 4, "concurrency": "sometimes"},
            ],
            address=daprd.grpc_address,
        )
    saved, tx, bulk, deleted, gone, empty_etag, current, stale_tx, bad_option = results
    assert saved["ok"] and tx["ok"] and deleted["ok"] and empty_etag["ok"], results
    assert {item["key"]: item.get("value") for item in bulk["items"]} == {a: 10, b: None}
    assert gone["found"] is False
    # A stale ETag in a transaction is a transaction failure, not ABORTED (HTTP: 500 ERR_STATE_TRANSACTION).
    assert stale_tx["ok"] is False and stale_tx["code"] == "INTERNAL", stale_tx
    assert current["value"] == 3
    assert bad_option["code"] == "INVALID_INPUT" and "sometimes" in bad_option["error"]


def test_query_on_postgresql(tmp_path: Path, postgresql_metadata: dict[str, str]) -> None:
    component = DaprComponent("pg", "state.postgresql", postgresql_metadata)
    with Daprd([component], tmp_path) as daprd:
        prefix = key()
        save = [
            # Saved as JSON (not bytes) so that the store can query it, as Dapr's docs require.
            {
                "op": "save",
                "store": "pg",
                "key": f"{prefix}-{i}",
                "value": {"city": city, "i": i},
                "metadata": {"contentType": "application/json"},
            }
            for i, city in enumerate(["Paris", "Oslo", "Paris"])
        ]
        query = {"filter": {"EQ": {"city": "Paris"}}, "sort": [{"key": "i"}]}
        ops = [*save, {"op": "query", "store": "pg", "query": query}]
        ops.append({"op": "query", "store": "pg", "query": json.dumps(query)})  # also as a JSON string
        results = go_client(ops, address=daprd.grpc_address)
    for found in results[-2:]:
        assert found["ok"], found
        assert [r["value"]["i"] for r in found["results"]] == [0, 2]


def test_api_token_and_endpoint_from_the_environment(tmp_path: Path) -> None:
    token = {"DAPR_API_TOKEN": "s3cret"}
    with Daprd([DaprComponent("store", "state.in-memory")], tmp_path, env=token) as daprd:
        endpoint = {"DAPR_GRPC_ENDPOINT": daprd.grpc_address}
        (without,) = go_client([{"op": "get", "store": "store", "key": "k"}], env=endpoint)
        (with_token,) = go_client([{"op": "get", "store": "store", "key": "k"}], env={**endpoint, **token})
    assert without["code"] == "UNAUTHENTICATED"
    assert with_token["ok"] and with_token["found"] is False
