"""The real `statestore-sidecar` serving one store of the backend under test, and SDK clients for it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
import yaml
from dapr.proto.runtime.v1 import dapr_pb2_grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from fixtures.sidecar import Sidecar, sidecar_process
from fixtures.stores import ComponentUnderTest

APP_ID = "myapp"
STORE = "store"


def isolated(component: ComponentUnderTest) -> ComponentUnderTest:
    """On Redis, where tests share one database, a key prefix of the server's own."""
    if component.type != "state.redis" or "keyPrefix" in component.metadata:
        return component
    prefix = f"t{uuid.uuid4().hex[:12]}"
    if component.offers.one_slot_transactions:  # a Redis Cluster: every key in the prefix's slot
        prefix = f"{{{prefix}}}"
    metadata = {**component.metadata, "keyPrefix": prefix}
    return ComponentUnderTest(component.backend, component.type, metadata)


def write_component(folder: Path, name: str, component: ComponentUnderTest) -> Path:
    doc = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {
            "type": component.type,
            "version": "v1",
            "metadata": [{"name": k, "value": v} for k, v in component.metadata.items()],
        },
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@contextlib.contextmanager
def serve(
    component: ComponentUnderTest,
    folder: Path,
    env: Mapping[str, str] | None = None,
    *,
    wait_ready: bool = True,
) -> Iterator[Sidecar]:
    """The sidecar with the store `store` of `component`, app id `myapp`, on free ports."""
    folder.mkdir(parents=True, exist_ok=True)
    write_component(folder, STORE, isolated(component))
    args = ["--resources-path", str(folder), "--app-id", APP_ID, "--log-level", "warn"]
    with sidecar_process(args, env, wait_ready=wait_ready, log=folder / "server.log") as running:
        yield running


@contextlib.contextmanager
def dapr_stub(server: Sidecar) -> Iterator[dapr_pb2_grpc.DaprStub]:
    """A bare stub of the Dapr service (no SDK), for what the SDK does not show: codes and details."""
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield dapr_pb2_grpc.DaprStub(channel)


M = TypeVar("M", bound=Message)


@dataclass
class Refusal:
    code: grpc.StatusCode
    message: str
    details: list[Message]

    def detail(self, kind: type[M]) -> M:
        (found,) = [d for d in self.details if isinstance(d, kind)]
        return found


_DETAIL_TYPES = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.ResourceInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.Help,
)


def refusal(call: Callable[[], object]) -> Refusal:
    """The status a call ends with, its `google.rpc` details unpacked as the SDKs read them."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    err = caught.value
    assert isinstance(err, grpc.Call)
    status = rpc_status.from_call(err)
    details: list[Message] = []
    for packed in status.details if status else ():
        for kind in _DETAIL_TYPES:
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                details.append(message)
    return Refusal(err.code(), err.details() or "", details)
