"""A Dapr pluggable state store as a Store: every operation is a call to the component over its socket.

The component is found in the sockets folder at init (`state.<name>` -> `<name>.*`), listed through
gRPC reflection, initialised with the Component's metadata under its name (the instance header), and
asked for its features. When it stops answering (its process restarted, its socket gone), the next
successful ping initialises it again before the store counts as healthy, as a restarted component
has forgotten its instances.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from ..base import (
    BackendUnavailable,
    Concurrency,
    DeleteRequest,
    Feature,
    Item,
    NotThereYet,
    Operation,
    QueryError,
    QueryItem,
    QueryPage,
    SetRequest,
    StoreError,
)
from . import protocol
from .proto import common_pb2, state_pb2
from .query_json import query_message
from .sockets import socket_folder, socket_for

if TYPE_CHECKING:
    from ...query import Query
    from .. import StoreConfig

_FEATURES = {f.value: f for f in Feature}
_CONCURRENCY = {
    Concurrency.FIRST_WRITE: state_pb2.StateOptions.CONCURRENCY_FIRST_WRITE,
    Concurrency.LAST_WRITE: state_pb2.StateOptions.CONCURRENCY_LAST_WRITE,
}


def _properties(config: StoreConfig) -> dict[str, str]:
    """The Component's metadata as given (the common settings in Dapr's string form)."""
    out: dict[str, str] = {}
    for name, value in config.metadata.values.items():
        if value is None:
            continue
        out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


class PluggableStore:
    def __init__(self, name: str, store_type: str, properties: Mapping[str, str]) -> None:
        self.name = name
        self.store_type = store_type
        self.properties = dict(properties)
        self.features: frozenset[Feature] = frozenset()
        self._channel: grpc.aio.Channel | None = None
        self._services: frozenset[str] = frozenset()
        self._metadata = protocol.metadata_of(name)
        self._needs_init = True
        self._init_lock = asyncio.Lock()

    def _call(self, method: protocol.Method[Any, Any]) -> Any:
        if self._channel is None:
            raise BackendUnavailable(f"pluggable component {self.store_type} is not connected")
        return method.bind(self._channel)

    async def _rpc(self, method: protocol.Method[Any, Any], request: Any, what: str) -> Any:
        try:
            return await self._call(method)(request, metadata=self._metadata, timeout=protocol.CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            error = protocol.store_error(exc, what)
            if isinstance(error, BackendUnavailable):
                self._needs_init = True
            raise error from None

    async def init(self) -> None:
        async with self._init_lock:
            socket = socket_for(self.store_type)
            if socket is None:
                raise NotThereYet(f"no socket for pluggable component {self.store_type} in {socket_folder()}")
            if self._channel is not None:
                await self._channel.close()
            self._channel = protocol.channel_for(socket)
            try:
                listed = await protocol.services(self._channel)
            except grpc.aio.AioRpcError as exc:
                raise protocol.store_error(exc, "listing the component's services") from None
            if protocol.STATE not in listed:
                raise StoreError(f"{socket} serves no {protocol.STATE} (it lists {', '.join(listed)})")
            self._services = frozenset(listed)
            init = state_pb2.InitRequest(metadata=common_pb2.MetadataRequest(properties=self.properties))
            await self._rpc(protocol.INIT, init, "init")
            answer = await self._rpc(protocol.FEATURES, common_pb2.FeaturesRequest(), "features")
            features = {_FEATURES[f] for f in answer.features if f in _FEATURES}
            # A feature is only usable when its service is there.
            if protocol.TRANSACTIONAL not in self._services:
                features.discard(Feature.TRANSACTIONAL)
            if protocol.QUERIABLE in self._services:
                features.add(Feature.QUERY_API)
            else:
                features.discard(Feature.QUERY_API)
            self.features = frozenset(features)
            self._needs_init = False

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def ping(self) -> None:
        if self._needs_init:
            await self.init()
        await self._rpc(protocol.PING, common_pb2.PingRequest(), "ping")

    async def get(self, key: str) -> Item | None:
        answer = await self._rpc(protocol.GET, state_pb2.GetRequest(key=key), "get")
        if not answer.data and not answer.HasField("etag"):
            return None
        return Item(bytes(answer.data), answer.etag.value, _expiry(answer.metadata))

    async def bulk_get(self, keys: Sequence[str]) -> Mapping[str, Item]:
        request = state_pb2.BulkGetRequest(items=[state_pb2.GetRequest(key=k) for k in keys])
        answer = await self._rpc(protocol.BULK_GET, request, "bulk get")
        found: dict[str, Item] = {}
        for item in answer.items:
            if item.error:
                raise StoreError(f"bulk get of {item.key}: {item.error}")
            if item.data or item.HasField("etag"):
                found[item.key] = Item(bytes(item.data), item.etag.value, _expiry(item.metadata))
        return found

    async def set(self, request: SetRequest) -> None:
        await self._rpc(protocol.SET, _set_message(request), "set")

    async def delete(self, request: DeleteRequest) -> None:
        await self._rpc(protocol.DELETE, _delete_message(request), "delete")

    async def transact(self, operations: Sequence[Operation]) -> None:
        ops = [
            state_pb2.TransactionalStateOperation(set=_set_message(op))
            if isinstance(op, SetRequest)
            else state_pb2.TransactionalStateOperation(delete=_delete_message(op))
            for op in operations
        ]
        await self._rpc(protocol.TRANSACT, state_pb2.TransactionalStateRequest(operations=ops), "transaction")

    async def query(self, query: Query, key_prefix: str) -> QueryPage:
        if protocol.QUERIABLE not in self._services:
            raise QueryError(f"pluggable component {self.store_type} does not serve queries")
        answer = await self._rpc(protocol.QUERY, query_message(query), "query")
        items = [
            QueryItem(item.key, bytes(item.data), item.etag.value)
            for item in answer.items
            if item.key.startswith(key_prefix)
        ]
        return QueryPage(items, answer.token or None)


def _expiry(metadata: Mapping[str, str]) -> float | None:
    """The `ttlExpireTime` (RFC 3339) a component reports with an item, as a Unix time."""
    text = metadata.get("ttlExpireTime")
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _options(concurrency: Concurrency) -> state_pb2.StateOptions:
    return state_pb2.StateOptions(concurrency=_CONCURRENCY[concurrency])


def _set_message(request: SetRequest) -> state_pb2.SetRequest:
    metadata = {"ttlInSeconds": str(request.ttl)} if request.ttl is not None else {}
    return state_pb2.SetRequest(
        key=request.key,
        value=request.value,
        etag=state_pb2.Etag(value=request.etag) if request.etag else None,
        metadata=metadata,
        options=_options(request.concurrency),
    )


def _delete_message(request: DeleteRequest) -> state_pb2.DeleteRequest:
    return state_pb2.DeleteRequest(
        key=request.key,
        etag=state_pb2.Etag(value=request.etag) if request.etag else None,
        options=_options(request.concurrency),
    )


def create(config: StoreConfig) -> PluggableStore:
    return PluggableStore(config.name, config.store_type, _properties(config))
