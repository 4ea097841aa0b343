"""The official Python SDK (`dapr`, `DaprClient` over gRPC) against the real server, on every backend."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import Concurrency, StateItem, StateOptions
from grpc_testing import STORE

from conftest import serve_impl
from fixtures.sdk import sdk_client
from fixtures.stores import BACKENDS, QUERY_BACKENDS, SERVER_BACKENDS, ComponentUnderTest

pytestmark = pytest.mark.filterwarnings("ignore:The State Store Query API is an Alpha version")


def _refused(call: object, code: grpc.StatusCode) -> DaprGrpcError:
    assert callable(call)
    with pytest.raises(DaprGrpcError) as caught:
        call()
    assert caught.value.code() == code, caught.value.details()
    return caught.value


# daprd's Redis and PostgreSQL stores report a first-write conflict as a plain store error (INTERNAL);
# its other stores, and ours everywhere, as an ETag mismatch (docs/state-api.md, deliberate differences).
FIRST_WRITE_CONFLICT = {
    ("daprd", "redis"): grpc.StatusCode.INTERNAL,
    ("daprd", "postgresql"): grpc.StatusCode.INTERNAL,
}


def test_save_get_etags_first_write_and_delete(
    client: DaprClient, impl: str, component: ComponentUnderTest
) -> None:
    client.save_state(STORE, "order-1", json.dumps({"qty": 1}))
    got = client.get_state(STORE, "order-1")
    assert json.loads(got.data) == {"qty": 1} and got.etag
    first_etag = got.etag

    client.save_state(STORE, "order-1", json.dumps({"qty": 2}), etag=first_etag)
    again = client.get_state(STORE, "order-1")
    assert json.loads(again.data) == {"qty": 2} and again.etag != first_etag

    stale = _refused(
        lambda: client.save_state(STORE, "order-1", json.dumps({"qty": 3}), etag=first_etag),
        grpc.StatusCode.ABORTED,
    )
    assert stale.details().startswith(f"failed saving state in state store {STORE}: possible etag mismatch")
    assert json.loads(client.get_state(STORE, "order-1").data) == {"qty": 2}

    first_write = StateOptions(concurrency=Concurrency.first_write)
    client.save_state(STORE, "fresh", "one", options=first_write)
    conflict = FIRST_WRITE_CONFLICT.get((impl, component.family), grpc.StatusCode.ABORTED)
    _refused(lambda: client.save_state(STORE, "fresh", "two", options=first_write), conflict)
    assert client.get_state(STORE, "fresh").data == b"one"

    _refused(lambda: client.delete_state(STORE, "order-1", etag=first_etag), grpc.StatusCode.ABORTED)
    client.delete_state(STORE, "order-1", etag=again.etag)
    gone = client.get_state(STORE, "order-1")
    assert gone.data == b"" and gone.etag == ""
    client.delete_state(STORE, "never-there")  # deleting a missing key is not an error


def test_bulk_save_get_and_raw_bytes(client: DaprClient) -> None:
    raw = bytes([0, 1, 0xFF, 0xFE])
    client.save_bulk_state(
        STORE,
        [StateItem("a", json.dumps({"n": 1})), StateItem("b", "plain text"), StateItem("c", raw)],
    )
    items = {i.key: i for i in client.get_bulk_state(STORE, ["a", "b", "c", "missing"]).items}
    assert set(items) == {"a", "b", "c", "missing"}
    assert json.loads(items["a"].data) == {"n": 1}
    assert items["b"].data == b"plain text"
    assert items["c"].data == raw  # bytes travel byte for byte over gRPC
    assert items["missing"].data == b"" and not items["missing"].error
    assert all(items[k].etag for k in "abc")
    assert client.get_bulk_state(STORE, []).items == []


def test_transactions_apply_all_or_nothing(client: DaprClient) -> None:
    client.save_state(STORE, "keep", "before")
    etag = client.get_state(STORE, "keep").etag
    ops = [
        TransactionalStateOperation(key="t1", data="one"),
        TransactionalStateOperation(key="keep", data="after", etag="stale-" + etag),
    ]
    failed = _refused(lambda: client.execute_state_transaction(STORE, ops), grpc.StatusCode.INTERNAL)
    assert failed.details().startswith("error while executing state transaction:")
    assert client.get_state(STORE, "t1").data == b""
    assert client.get_state(STORE, "keep").data == b"before"

    client.execute_state_transaction(
        STORE,
        [
            TransactionalStateOperation(key="t1", data="one"),
            TransactionalStateOperation(key="keep", data="after", etag=etag),
            TransactionalStateOperation(key="t1", operation_type=TransactionOperationType.delete),
            TransactionalStateOperation(key="t2", data="two"),
        ],
    )
    assert client.get_state(STORE, "t1").data == b""
    assert client.get_state(STORE, "keep").data == b"after"
    assert client.get_state(STORE, "t2").data == b"two"


def test_ttl_expires(client: DaprClient) -> None:
    client.save_state(STORE, "session", "abc", state_metadata={"ttlInSeconds": "1"})
    client.save_state(STORE, "lasting", "xyz", state_metadata={"ttlInSeconds": "3600"})
    deadline = time.monotonic() + 30
    while client.get_state(STORE, "session").data != b"":
        assert time.monotonic() < deadline, "the item did not expire"
        time.sleep(0.2)
    assert client.get_state(STORE, "lasting").data == b"xyz"
    bad = _refused(
        lambda: client.save_state(STORE, "k", "v", state_metadata={"ttlInSeconds": "soon"}),
        grpc.StatusCode.INTERNAL,
    )
    assert bad.details().startswith(f"failed saving state in state store {STORE}: ")


def test_get_metadata_lists_the_store(client: DaprClient, component: ComponentUnderTest) -> None:
    meta = client.get_metadata()
    assert meta.application_id == "myapp"
    (registered,) = meta.registered_components
    assert (registered.name, registered.type, registered.version) == (STORE, component.type, "v1")
    assert {"ETAG", "TRANSACTIONAL", "TTL", "ACTOR"} <= set(registered.capabilities)
    client.set_metadata("team", "checkout")
    assert client.get_metadata().extended_metadata["team"] == "checkout"


# Of the stores we offer query on, daprd offers it on PostgreSQL only (docs/state-api.md).
DAPRD_QUERY_BACKENDS = frozenset({"postgresql"})


def test_query(impl: str, query_component: ComponentUnderTest, tmp_path: Path) -> None:
    with serve_impl(impl, query_component, tmp_path / "server") as server, sdk_client(server) as client:
        as_json = {"contentType": "application/json"}
        for key, qty in (("o1", 1), ("o2", 5), ("o3", 9)):
            client.save_state(STORE, key, json.dumps({"qty": qty}), state_metadata=as_json)
        if impl == "daprd" and query_component.backend not in DAPRD_QUERY_BACKENDS:
            failed = _refused(lambda: client.query_state(STORE, "{}"), grpc.StatusCode.INTERNAL)
            assert failed.error_code() == "DAPR_STATE_QUERYING_NOT_SUPPORTED"
            return
        query = {"filter": {"GT": {"qty": 2}}, "sort": [{"key": "qty", "order": "DESC"}]}
        found = client.query_state(STORE, json.dumps(query))
        assert [(r.key, r.json()) for r in found.results] == [("o3", {"qty": 9}), ("o2", {"qty": 5})]
        assert all(r.etag for r in found.results)
        none = client.query_state(STORE, json.dumps({"filter": {"EQ": {"qty": 100}}}))
        assert none.results == []


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param(b, marks=[pytest.mark.backends] if b in SERVER_BACKENDS else [], id=b)
        for b in BACKENDS
        if b not in QUERY_BACKENDS
    ],
)
def test_query_refused_where_not_offered(
    impl: str, backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    metadata = request.getfixturevalue(f"{backend}_metadata")
    store = ComponentUnderTest(backend, BACKENDS[backend], metadata)
    with serve_impl(impl, store, tmp_path / "server") as server, sdk_client(server) as client:
        failed = _refused(lambda: client.query_state(STORE, "{}"), grpc.StatusCode.INTERNAL)
        if impl == "daprd":
            # daprd's Redis store has the query interface and fails at run time without RediSearch;
            # ours says it has none (docs/state-api.md).
            assert failed.error_code() == "DAPR_STATE_QUERY_FAILED"
            return
        assert failed.error_code() == "DAPR_STATE_QUERYING_NOT_SUPPORTED"
        assert failed.details() == "state store does not support querying"


def test_api_token_accepted_and_refused(impl: str, tmp_path: Path) -> None:
    store = ComponentUnderTest("in_memory", "state.in-memory", {})
    with serve_impl(impl, store, tmp_path / "server", {"DAPR_API_TOKEN": "s3cret"}) as server:
        with sdk_client(server, token="s3cret") as client:
            client.save_state(STORE, "k", "v")
            assert client.get_state(STORE, "k").data == b"v"
        with sdk_client(server, token="wrong") as client:
            refused = _refused(lambda: client.get_state(STORE, "k"), grpc.StatusCode.UNAUTHENTICATED)
            assert refused.error_code() == "Unauthorized"
        with sdk_client(server) as client:
            _refused(lambda: client.get_state(STORE, "k"), grpc.StatusCode.UNAUTHENTICATED)
