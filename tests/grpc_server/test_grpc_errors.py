"""daprd's gRPC statuses, messages and `google.rpc` details, read with a bare stub (no SDK)."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import configuration_pb2, dapr_pb2_grpc, metadata_pb2, pubsub_pb2, state_pb2
from google.rpc import error_details_pb2
from grpc_testing import STORE, dapr_stub, refusal, serve, write_component

from fixtures.sidecar import Sidecar, free_port, sidecar_process
from fixtures.stores import ComponentUnderTest

MEMORY = ComponentUnderTest("in_memory", "state.in-memory", {})
DOMAIN = "dapr.io"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Sidecar]:
    with serve(MEMORY, tmp_path / "server") as running:
        yield running


@pytest.fixture
def stub(server: Sidecar) -> Iterator[dapr_pb2_grpc.DaprStub]:
    with dapr_stub(server) as s:
        yield s


def _item(key: str, value: bytes = b'"v"', etag: str | None = None, **metadata: str) -> common_pb2.StateItem:
    item = common_pb2.StateItem(key=key, value=value, metadata=metadata)
    if etag is not None:
        item.etag.value = etag
    return item


def test_unknown_store(stub: dapr_pb2_grpc.DaprStub) -> None:
    r = refusal(lambda: stub.GetState(state_pb2.GetStateRequest(store_name="nostore", key="k")))
    assert (r.code, r.message) == (grpc.StatusCode.INVALID_ARGUMENT, "state store nostore is not found")
    info = r.detail(error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain, dict(info.metadata)) == ("DAPR_STATE_NOT_FOUND", DOMAIN, {})
    assert len(r.details) == 1


def test_no_store_configured(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    args = ["--resources-path", str(tmp_path / "empty")]
    with sidecar_process(args) as server, dapr_stub(server) as stub:
        r = refusal(lambda: stub.SaveState(state_pb2.SaveStateRequest(store_name="s", states=[_item("k")])))
    assert (r.code, r.message) == (grpc.StatusCode.FAILED_PRECONDITION, "state store s is not configured")
    assert r.detail(error_details_pb2.ErrorInfo).reason == "DAPR_STATE_NOT_CONFIGURED"


def test_illegal_and_empty_keys(stub: dapr_pb2_grpc.DaprStub) -> None:
    r = refusal(lambda: stub.GetState(state_pb2.GetStateRequest(store_name=STORE, key="a||b")))
    text = "input key/keyPrefix 'a||b' can't contain '||'"
    assert (r.code, r.message) == (grpc.StatusCode.INVALID_ARGUMENT, text)
    assert [type(d).__name__ for d in r.details] == ["BadRequest", "ResourceInfo", "ErrorInfo"]
    violation = r.detail(error_details_pb2.BadRequest).field_violations[0]
    assert (violation.field, violation.description) == ("a||b", text)
    resource = r.detail(error_details_pb2.ResourceInfo)
    assert (resource.resource_type, resource.resource_name) == ("state", STORE)
    assert r.detail(error_details_pb2.ErrorInfo).reason == "DAPR_STATE_ILLEGAL_KEY"
    bulk = refusal(
        lambda: stub.GetBulkState(state_pb2.GetBulkStateRequest(store_name=STORE, keys=["ok", "x||y"]))
    )
    assert bulk.code == grpc.StatusCode.INVALID_ARGUMENT

    empty = refusal(lambda: stub.SaveState(state_pb2.SaveStateRequest(store_name=STORE, states=[_item("")])))
    assert (empty.code, empty.message) == (grpc.StatusCode.INVALID_ARGUMENT, "state key cannot be empty")


def test_etags_mismatch_is_aborted(stub: dapr_pb2_grpc.DaprStub) -> None:
    stub.SaveState(state_pb2.SaveStateRequest(store_name=STORE, states=[_item("k", b'"one"')]))
    etag = stub.GetState(state_pb2.GetStateRequest(store_name=STORE, key="k")).etag
    saves = state_pb2.SaveStateRequest(store_name=STORE, states=[_item("k", b'"two"', etag="nope")])
    r = refusal(lambda: stub.SaveState(saves))
    assert r.code == grpc.StatusCode.ABORTED
    assert r.message.startswith(f"failed saving state in state store {STORE}: possible etag mismatch")
    delete = state_pb2.DeleteStateRequest(store_name=STORE, key="k", etag=common_pb2.Etag(value="nope"))
    d = refusal(lambda: stub.DeleteState(delete))
    assert d.code == grpc.StatusCode.ABORTED and d.message.startswith("failed deleting state with key k: ")
    # Several items: the good one is written, the stale one refused; the call is ABORTED.
    both = state_pb2.SaveStateRequest(
        store_name=STORE, states=[_item("k", b'"three"', etag=etag), _item("other", b'"x"', etag="nope")]
    )
    assert refusal(lambda: stub.SaveState(both)).code == grpc.StatusCode.ABORTED
    assert stub.GetState(state_pb2.GetStateRequest(store_name=STORE, key="k")).data == b'"three"'
    # Bulk delete: independent deletes, stale ones refused the same way.
    bulk_delete = state_pb2.DeleteBulkStateRequest(
        store_name=STORE, states=[_item("k", etag="nope"), _item("other")]
    )
    b = refusal(lambda: stub.DeleteBulkState(bulk_delete))
    assert b.code == grpc.StatusCode.ABORTED
    assert b.message.startswith(f"failed deleting state in state store {STORE}: ")
    stub.DeleteBulkState(
        state_pb2.DeleteBulkStateRequest(store_name=STORE, states=[_item("k"), _item("gone")])
    )
    assert stub.GetState(state_pb2.GetStateRequest(store_name=STORE, key="k")).data == b""


def test_transaction_errors(stub: dapr_pb2_grpc.DaprStub) -> None:
    bogus = state_pb2.TransactionalStateOperation(operationType="merge", request=_item("k"))
    request = state_pb2.ExecuteStateTransactionRequest(storeName=STORE, operations=[bogus])
    r = refusal(lambda: stub.ExecuteStateTransaction(request))
    assert (r.code, r.message) == (grpc.StatusCode.UNIMPLEMENTED, "operation type merge not supported")
    stale = state_pb2.TransactionalStateOperation(operationType="delete", request=_item("k", etag="nope"))
    request = state_pb2.ExecuteStateTransactionRequest(storeName=STORE, operations=[stale])
    t = refusal(lambda: stub.ExecuteStateTransaction(request))
    assert t.code == grpc.StatusCode.INTERNAL
    assert t.message.startswith("error while executing state transaction: possible etag mismatch")


def test_query_errors(stub: dapr_pb2_grpc.DaprStub) -> None:
    request = state_pb2.QueryStateRequest(store_name=STORE, query='{"filter": {"LIKE": {"a": 1}}}')
    r = refusal(lambda: stub.QueryStateAlpha1(request))
    assert r.code == grpc.StatusCode.INTERNAL
    assert r.message.startswith(f"state store {STORE} query failed: failed to parse JSON query body: ")
    assert [type(d).__name__ for d in r.details] == ["ResourceInfo", "ErrorInfo"]
    assert r.detail(error_details_pb2.ErrorInfo).reason == "DAPR_STATE_QUERY_FAILED"


def test_values_metadata_and_http_interplay(server: Sidecar, stub: dapr_pb2_grpc.DaprStub) -> None:
    # contentType application/json: the value is parsed and stored as JSON, as daprd hands it on.
    stub.SaveState(
        state_pb2.SaveStateRequest(
            store_name=STORE,
            states=[_item("doc", b'{"b": 1,  "a": [1, 2]}', contentType="application/json")],
        )
    )
    assert httpx.get(f"{server.url}/v1.0/state/{STORE}/doc").json() == {"b": 1, "a": [1, 2]}
    bad = state_pb2.SaveStateRequest(
        store_name=STORE, states=[_item("doc", b"{nope", contentType="application/json")]
    )
    assert refusal(lambda: stub.SaveState(bad)).code == grpc.StatusCode.UNKNOWN
    # Saved over HTTP, read over gRPC: the same bytes and ETag, the TTL as ttlExpireTime.
    saved = httpx.post(
        f"{server.url}/v1.0/state/{STORE}?metadata.ttlInSeconds=600", json=[{"key": "h", "value": {"x": 1}}]
    )
    assert saved.status_code == 204
    over_http = httpx.get(f"{server.url}/v1.0/state/{STORE}/h")
    got = stub.GetState(state_pb2.GetStateRequest(store_name=STORE, key="h"))
    assert (got.data, got.etag) == (over_http.content, over_http.headers["etag"])
    assert got.metadata["ttlExpireTime"] == over_http.headers["metadata.ttlExpireTime"]
    bulk = stub.GetBulkState(
        state_pb2.GetBulkStateRequest(store_name=STORE, keys=["h", "none"], parallelism=4)
    )
    items = {i.key: i for i in bulk.items}
    assert items["h"].metadata["ttlExpireTime"] == got.metadata["ttlExpireTime"]
    assert (items["none"].data, items["none"].etag, dict(items["none"].metadata)) == (b"", "", {})


def test_metadata(stub: dapr_pb2_grpc.DaprStub) -> None:
    stub.SetMetadata(metadata_pb2.SetMetadataRequest(key="owner", value="team-a"))
    stub.SetMetadata(metadata_pb2.SetMetadataRequest(key="", value="ignored"))
    meta = stub.GetMetadata(metadata_pb2.GetMetadataRequest())
    assert meta.id == "myapp"
    assert meta.extended_metadata["owner"] == "team-a" and "" not in meta.extended_metadata
    assert "daprRuntimeVersion" in meta.extended_metadata
    (component,) = meta.registered_components
    assert (component.name, component.type) == (STORE, "state.in-memory")
    assert meta.actor_runtime.runtime_status == metadata_pb2.ActorRuntime.DISABLED


def test_other_methods_are_unimplemented_by_name(stub: dapr_pb2_grpc.DaprStub) -> None:
    r = refusal(lambda: stub.PublishEvent(pubsub_pb2.PublishEventRequest(pubsub_name="p", topic="t")))
    assert r.code == grpc.StatusCode.UNIMPLEMENTED
    assert "dapr.proto.runtime.v1.Dapr/PublishEvent" in r.message
    stream = stub.SubscribeConfigurationAlpha1(
        configuration_pb2.SubscribeConfigurationRequest(store_name="c")
    )
    s = refusal(lambda: next(iter(stream)))
    assert s.code == grpc.StatusCode.UNIMPLEMENTED and "SubscribeConfigurationAlpha1" in s.message


def test_api_token(tmp_path: Path) -> None:
    with (
        serve(MEMORY, tmp_path / "server", {"DAPR_API_TOKEN": "s3cret"}) as server,
        dapr_stub(server) as stub,
    ):
        get = state_pb2.GetStateRequest(store_name=STORE, key="k")
        missing = refusal(lambda: stub.GetState(get))
        assert (missing.code, missing.message) == (grpc.StatusCode.UNAUTHENTICATED, "Unauthorized")
        info = missing.detail(error_details_pb2.ErrorInfo)
        assert (info.reason, info.domain) == ("Unauthorized", DOMAIN)
        assert dict(info.metadata) == {
            "http.code": "401",
            "http.error_message": "missing api token in request metadata",
        }
        wrong = refusal(lambda: stub.GetState(get, metadata=[("dapr-api-token", "guess")]))
        assert wrong.code == grpc.StatusCode.UNAUTHENTICATED
        assert wrong.detail(error_details_pb2.ErrorInfo).metadata["http.error_message"] == (
            "authentication error: api token mismatch"
        )
        publish = pubsub_pb2.PublishEventRequest(pubsub_name="p", topic="t")
        assert refusal(lambda: stub.PublishEvent(publish)).code == grpc.StatusCode.UNAUTHENTICATED
        assert stub.GetState(get, metadata=[("dapr-api-token", "s3cret")]).data == b""


def test_backend_down(tmp_path: Path) -> None:
    """A store whose backend is unreachable: each call fails with the code daprd gives it."""
    down = ComponentUnderTest("redis", "state.redis", {"redisHost": f"127.0.0.1:{free_port()}"})
    with serve(down, tmp_path / "server", wait_ready=False) as server, dapr_stub(server) as stub:
        get = refusal(lambda: stub.GetState(state_pb2.GetStateRequest(store_name=STORE, key="k")))
        assert get.code == grpc.StatusCode.INTERNAL and get.message.startswith(
            f"fail to get k from state store {STORE}:"
        )
        save = refusal(
            lambda: stub.SaveState(state_pb2.SaveStateRequest(store_name=STORE, states=[_item("k")]))
        )
        assert save.code == grpc.StatusCode.INTERNAL
        bulk = refusal(lambda: stub.GetBulkState(state_pb2.GetBulkStateRequest(store_name=STORE, keys=["k"])))
        assert bulk.code == grpc.StatusCode.UNKNOWN  # daprd returns the store's own error here
        delete = refusal(lambda: stub.DeleteState(state_pb2.DeleteStateRequest(store_name=STORE, key="k")))
        assert delete.code == grpc.StatusCode.INTERNAL
        op = state_pb2.TransactionalStateOperation(operationType="upsert", request=_item("k"))
        tx = state_pb2.ExecuteStateTransactionRequest(storeName=STORE, operations=[op])
        assert refusal(lambda: stub.ExecuteStateTransaction(tx)).code == grpc.StatusCode.INTERNAL


def test_message_size_limit(tmp_path: Path) -> None:
    folder = tmp_path / "server"
    folder.mkdir()
    write_component(folder, STORE, MEMORY)
    args = ["--resources-path", str(folder), "--app-id", "myapp", "--max-body-size", "2Ki"]
    with sidecar_process(args) as server, dapr_stub(server) as stub:
        small = state_pb2.SaveStateRequest(store_name=STORE, states=[_item("k", b'"' + b"x" * 1000 + b'"')])
        stub.SaveState(small)
        large = state_pb2.SaveStateRequest(store_name=STORE, states=[_item("k", b'"' + b"x" * 4000 + b'"')])
        assert refusal(lambda: stub.SaveState(large)).code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(stub.GetState(state_pb2.GetStateRequest(store_name=STORE, key="k")).data) == 1002


def test_port_from_environment_and_off(tmp_path: Path) -> None:
    folder = tmp_path / "server"
    folder.mkdir()
    write_component(folder, STORE, MEMORY)
    port = free_port()
    args = ["--resources-path", str(folder)]
    with sidecar_process(args, {"DAPR_GRPC_PORT": str(port)}, grpc_flag=False) as server:
        assert server.grpc_port == port
        with dapr_stub(server) as stub:
            assert stub.GetMetadata(metadata_pb2.GetMetadataRequest()).registered_components
    with sidecar_process([*args, "--dapr-grpc-port", "0"]) as server:
        assert httpx.get(f"{server.url}/v1.0/healthz").status_code == 204
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = dapr_pb2_grpc.DaprStub(channel)
            off = refusal(lambda: stub.GetMetadata(metadata_pb2.GetMetadataRequest(), timeout=5))
            assert off.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_port_in_use_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "server"
    folder.mkdir()
    write_component(folder, STORE, MEMORY)
    with sidecar_process(["--resources-path", str(folder)]) as first:
        taken = ["--resources-path", str(folder), "--dapr-grpc-port", str(first.grpc_port)]
        with pytest.raises(RuntimeError, match="exited"), sidecar_process(taken):
            pass


def test_both_servers_stop_together_on_sigterm(tmp_path: Path) -> None:
    folder = tmp_path / "server"
    folder.mkdir()
    write_component(folder, STORE, MEMORY)
    log = tmp_path / "server.log"
    with sidecar_process(["--resources-path", str(folder)], log=log) as server:
        assert server.process is not None
        with dapr_stub(server) as stub:
            stub.GetMetadata(metadata_pb2.GetMetadataRequest(), timeout=10)
        server.process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down, so the exit status is the signal's.
        assert server.process.wait(30) in (0, -signal.SIGTERM)
    text = log.read_text()
    assert "Dapr gRPC API stopped" in text and "Application shutdown complete" in text
    for port in (int(server.url.rsplit(":", 1)[1]), server.grpc_port):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_workers_share_the_grpc_port(tmp_path: Path) -> None:
    sqlite = ComponentUnderTest("sqlite", "state.sqlite", {"connectionString": str(tmp_path / "state.db")})
    folder = tmp_path / "server"
    folder.mkdir()
    write_component(folder, STORE, sqlite)
    args = ["--resources-path", str(folder), "--app-id", "myapp", "--workers", "2"]
    with sidecar_process(args) as server, dapr_stub(server) as stub:
        for i in range(20):
            # A fresh channel per call spreads the connections over the workers.
            with dapr_stub(server) as own:
                own.SaveState(state_pb2.SaveStateRequest(store_name=STORE, states=[_item(f"k{i}")]))
        keys = [f"k{i}" for i in range(20)]
        found = stub.GetBulkState(state_pb2.GetBulkStateRequest(store_name=STORE, keys=keys))
        assert all(i.data == b'"v"' for i in found.items)
        # SO_REUSEPORT must not let another server take the workers' port.
        taken = ["--resources-path", str(folder), "--workers", "2", "--dapr-grpc-port", str(server.grpc_port)]
        with pytest.raises(RuntimeError, match="exited"), sidecar_process(taken):
            pass
