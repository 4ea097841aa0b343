"""One client per server for the differential tests: the same operation, over HTTP or gRPC, reduced
to what must agree between servers (status or code, Dapr error code, values, whether there is an ETag
or a TTL), never to what may differ (ETag values, message wording, JSON formatting)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2

from fixtures.sidecar import Sidecar

STORE = "store"
FIRST_WRITE = common_pb2.StateOptions.CONCURRENCY_FIRST_WRITE
LAST_WRITE = common_pb2.StateOptions.CONCURRENCY_LAST_WRITE

Outcome = tuple[Any, ...]


def _value(data: bytes) -> Any:
    """A value as JSON when it is JSON (servers may format it differently), else its bytes."""
    try:
        return json.loads(data)
    except ValueError:
        return data


@dataclass
class Op:
    """One operation; ETags are named by role (`current`, `stale`, `bogus`), resolved per server."""

    kind: str  # save, get, bulk, delete, delete_bulk, transaction, query
    via: str  # http or grpc
    key: str = ""
    keys: tuple[str, ...] = ()
    value: Any = None
    etag: str = "none"
    first_write: bool = False
    last_write: bool = False  # an explicit last-write (what the Go SDK always sends)
    ttl: str | None = None
    ops: tuple[Op, ...] = ()  # a transaction's operations (kind upsert or delete)
    query: Mapping[str, Any] | None = None
    json_content: bool = False  # gRPC: say the value is JSON (metadata contentType)


@dataclass
class Server:
    name: str
    running: Sidecar
    http: httpx.Client = field(init=False)
    channel: grpc.Channel = field(init=False)
    stub: dapr_pb2_grpc.DaprStub = field(init=False)
    etags: dict[str, list[str]] = field(default_factory=dict)
    last_message: str | None = None  # of the last error, for failure reports

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.running.url, timeout=30)
        self.channel = grpc.insecure_channel(self.running.grpc_address)
        self.stub = dapr_pb2_grpc.DaprStub(self.channel)

    def close(self) -> None:
        self.http.close()
        self.channel.close()

    # -- ETags by role ---------------------------------------------------------------------------

    def _seen(self, key: str, etag: str | None) -> None:
        if etag:
            history = self.etags.setdefault(key, [])
            if not history or history[-1] != etag:
                history.append(etag)

    def etag(self, key: str, role: str) -> str | None:
        history = self.etags.get(key, [])
        if role == "none":
            return None
        if role == "current" and history:
            return history[-1]
        if role == "stale" and len(history) > 1:
            return history[-2]
        return "999999"  # never an ETag here, and well formed for the stores with numeric ETags

    # -- running an operation ------------------------------------------------------------------

    def run(self, op: Op) -> Outcome:
        if op.via == "http":
            return self._http(op)
        try:
            return self._grpc(op)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
            self.last_message = err.details() if isinstance(err, grpc.Call) else str(err)
            return ("error", code.name)

    def _item_json(self, op: Op) -> dict[str, Any]:
        item: dict[str, Any] = {"key": op.key, "value": op.value}
        etag = self.etag(op.key, op.etag)
        if etag is not None:
            item["etag"] = etag
        if op.first_write or op.last_write:
            item["options"] = {"concurrency": "first-write" if op.first_write else "last-write"}
        if op.ttl is not None:
            item["metadata"] = {"ttlInSeconds": op.ttl}
        return item

    def _http(self, op: Op) -> Outcome:
        base = f"/v1.0/state/{STORE}"
        if op.kind == "save":
            r = self.http.post(base, json=[self._item_json(op)])
        elif op.kind == "get":
            r = self.http.get(f"{base}/{op.key}")
            if r.status_code == 204:
                return ("ok", "absent")  # as gRPC's empty reply
            if r.status_code == 200:
                self._seen(op.key, r.headers.get("etag"))
                ttl = any(h.lower() == "metadata.ttlexpiretime" for h in r.headers)
                return ("ok", 200, _value(r.content), bool(r.headers.get("etag")), ttl)
        elif op.kind == "bulk":
            r = self.http.post(f"{base}/bulk", json={"keys": list(op.keys)})
            if r.status_code == 200:
                found = {}
                for entry in r.json():
                    self._seen(entry["key"], entry.get("etag"))
                    found[entry["key"]] = (
                        entry.get("data"),
                        bool(entry.get("etag")),
                        "ttlExpireTime" in (entry.get("metadata") or {}),
                    )
                return ("ok", 200, tuple(sorted(found.items(), key=lambda kv: kv[0])))
        elif op.kind == "delete":
            etag = self.etag(op.key, op.etag)
            r = self.http.delete(f"{base}/{op.key}", headers={"If-Match": etag} if etag else {})
        elif op.kind == "transaction":
            ops = [
                {
                    "operation": o.kind,
                    "request": self._item_json(o) if o.kind == "upsert" else self._delete_json(o),
                }
                for o in op.ops
            ]
            r = self.http.post(f"{base}/transaction", json={"operations": ops})
        elif op.kind == "query":
            r = self.http.post(f"/v1.0-alpha1/state/{STORE}/query", json=op.query)
            if r.status_code == 200:
                return (
                    "ok",
                    200,
                    tuple(sorted((i["key"], json.dumps(i["data"])) for i in r.json()["results"])),
                )
        else:
            raise ValueError(op.kind)
        if r.status_code >= 400:
            code = (
                r.json().get("errorCode")
                if r.headers.get("content-type", "").startswith("application/json")
                else None
            )
            return ("error", r.status_code, code)
        return ("ok", r.status_code)

    def _delete_json(self, op: Op) -> dict[str, Any]:
        item: dict[str, Any] = {"key": op.key}
        etag = self.etag(op.key, op.etag)
        if etag is not None:
            item["etag"] = etag
        return item

    def _state_item(self, op: Op) -> common_pb2.StateItem:
        item = common_pb2.StateItem(key=op.key)
        if op.value is not None:
            item.value = json.dumps(op.value).encode()
        etag = self.etag(op.key, op.etag)
        if etag is not None:
            item.etag.value = etag
        if op.first_write:
            item.options.concurrency = FIRST_WRITE
        elif op.last_write:
            item.options.concurrency = LAST_WRITE
        if op.ttl is not None:
            item.metadata["ttlInSeconds"] = op.ttl
        if op.json_content:
            item.metadata["contentType"] = "application/json"
        return item

    def _grpc(self, op: Op) -> Outcome:
        if op.kind == "save":
            self.stub.SaveState(state_pb2.SaveStateRequest(store_name=STORE, states=[self._state_item(op)]))
        elif op.kind == "get":
            got = self.stub.GetState(state_pb2.GetStateRequest(store_name=STORE, key=op.key))
            self._seen(op.key, got.etag)
            if not got.data and not got.etag:
                return ("ok", "absent")
            return ("ok", 200, _value(got.data), bool(got.etag), "ttlExpireTime" in got.metadata)
        elif op.kind == "bulk":
            reply = self.stub.GetBulkState(
                state_pb2.GetBulkStateRequest(store_name=STORE, keys=list(op.keys))
            )
            found = {}
            for item in reply.items:
                self._seen(item.key, item.etag)
                data = _value(item.data) if item.data else None
                found[item.key] = (data, bool(item.etag), "ttlExpireTime" in item.metadata)
            return ("ok", 200, tuple(sorted(found.items(), key=lambda kv: kv[0])))
        elif op.kind == "delete":
            request = state_pb2.DeleteStateRequest(store_name=STORE, key=op.key)
            etag = self.etag(op.key, op.etag)
            if etag is not None:
                request.etag.value = etag
            self.stub.DeleteState(request)
        elif op.kind == "delete_bulk":
            items = [self._state_item(Op("delete", "grpc", key=k)) for k in op.keys]
            self.stub.DeleteBulkState(state_pb2.DeleteBulkStateRequest(store_name=STORE, states=items))
        elif op.kind == "transaction":
            ops = [
                state_pb2.TransactionalStateOperation(operationType=o.kind, request=self._state_item(o))
                for o in op.ops
            ]
            self.stub.ExecuteStateTransaction(
                state_pb2.ExecuteStateTransactionRequest(storeName=STORE, operations=ops)
            )
        elif op.kind == "query":
            reply = self.stub.QueryStateAlpha1(
                state_pb2.QueryStateRequest(store_name=STORE, query=json.dumps(op.query))
            )
            return ("ok", 200, tuple(sorted((i.key, json.dumps(_value(i.data))) for i in reply.results)))
        else:
            raise ValueError(op.kind)
        return ("ok", "done")


def pairs(ops: Sequence[Op], a: Server, b: Server) -> Iterator[tuple[Op, Outcome, Outcome]]:
    for op in ops:
        yield op, a.run(op), b.run(op)
