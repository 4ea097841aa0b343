"""Our stores served as a Dapr pluggable state store (`statestore-pluggable`): daprd, or any client of
dapr.proto.components.v1, finds the socket, lists the services by gRPC reflection and calls `Init`
with a Component's metadata under the component's name (the instance header). Each name gets its own
store of the configured type, validated as the server validates a Component.

Keys arrive as daprd stores them (its key prefix applied), so they are stored as given; a query spans
every key of the store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection

from ...components import Component, ComponentError, MetadataItem, validate
from ...query import QuerySyntaxError, parse
from ...state_api import ttl_seconds
from .. import StoreConfig, UnknownStoreType, canonical_type, create_store
from ..base import Concurrency, DeleteRequest, EtagMismatch, Item, SetRequest, Store, StoreError
from . import protocol
from .proto import common_pb2, state_pb2

log = logging.getLogger("statestore.pluggable")

Ctx = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Ctx], Awaitable[Message]]


class Aborted(Exception):
    """A call refused with a status (code, message and optional details)."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status


def _refusal(code: int, message: str, detail: Message | None = None) -> Aborted:
    status = status_pb2.Status(code=code, message=message)
    if detail is not None:
        status.details.add().Pack(detail)
    return Aborted(status)


def _store_refusal(exc: StoreError) -> Aborted:
    """The protocol's conventions: an ETag refusal is FAILED_PRECONDITION with a field violation on
    `etag` (daprd answers it as an ETag mismatch); the rest are INTERNAL."""
    if isinstance(exc, EtagMismatch):
        violation = error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field="etag", description=str(exc))]
        )
        return _refusal(code_pb2.FAILED_PRECONDITION, str(exc), violation)
    return _refusal(code_pb2.INTERNAL, str(exc))


def _item_metadata(item: Item) -> dict[str, str]:
    if item.expires_at is None:
        return {}
    when = datetime.datetime.fromtimestamp(item.expires_at, datetime.UTC)
    return {"ttlExpireTime": when.strftime("%Y-%m-%dT%H:%M:%SZ")}


_CONCURRENCY = {state_pb2.StateOptions.CONCURRENCY_FIRST_WRITE: Concurrency.FIRST_WRITE}


def _set(message: state_pb2.SetRequest) -> SetRequest:
    return SetRequest(
        key=message.key,
        value=bytes(message.value),
        etag=message.etag.value or None if message.HasField("etag") else None,
        concurrency=_CONCURRENCY.get(message.options.concurrency, Concurrency.LAST_WRITE),
        ttl=ttl_seconds(message.metadata),
    )


def _delete(message: state_pb2.DeleteRequest) -> DeleteRequest:
    return DeleteRequest(
        key=message.key,
        etag=message.etag.value or None if message.HasField("etag") else None,
        concurrency=_CONCURRENCY.get(message.options.concurrency, Concurrency.LAST_WRITE),
    )


class Instances:
    """One store of the served type per component instance, made by Init."""

    def __init__(self, store_type: str) -> None:
        self.store_type = canonical_type(store_type)
        self.stores: dict[str, Store] = {}

    def get(self, context: Ctx) -> Store:
        name = _instance(context)
        store = self.stores.get(name)
        if store is None:
            raise _refusal(code_pb2.FAILED_PRECONDITION, f"component instance {name!r} is not initialised")
        return store

    async def init(self, name: str, properties: Mapping[str, str]) -> None:
        component = Component(
            name=name, type=self.store_type, metadata=tuple(MetadataItem(k, v) for k, v in properties.items())
        )
        try:
            validated = validate(component, properties)
        except ComponentError as exc:
            raise _refusal(code_pb2.INVALID_ARGUMENT, str(exc)) from None
        store = create_store(self.store_type, StoreConfig(name, validated.metadata))
        try:
            await store.init()
        except StoreError as exc:
            raise _refusal(code_pb2.UNAVAILABLE, str(exc)) from None
        old = self.stores.pop(name, None)
        self.stores[name] = store
        if old is not None:
            await old.close()

    def features(self) -> list[str]:
        from .. import schema_for

        return sorted(f.value for f in schema_for(self.store_type).features)

    async def close(self) -> None:
        for store in self.stores.values():
            with contextlib.suppress(Exception):
                await store.close()
        self.stores.clear()


def _instance(context: Ctx) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == protocol.INSTANCE_HEADER:
            return str(value)
    return ""


def _handlers(instances: Instances) -> dict[str, dict[str, tuple[Handler, type[Message]]]]:
    async def init(req: state_pb2.InitRequest, ctx: Ctx) -> Message:
        await instances.init(_instance(ctx), dict(req.metadata.properties))
        return state_pb2.InitResponse()

    async def features(req: Message, ctx: Ctx) -> Message:
        return common_pb2.FeaturesResponse(features=instances.features())

    async def ping(req: Message, ctx: Ctx) -> Message:
        name = _instance(ctx)
        if name in instances.stores:
            try:
                await instances.stores[name].ping()
            except StoreError as exc:
                raise _refusal(code_pb2.UNAVAILABLE, str(exc)) from None
        return common_pb2.PingResponse()

    async def get(req: state_pb2.GetRequest, ctx: Ctx) -> Message:
        item = await instances.get(ctx).get(req.key)
        if item is None:
            return state_pb2.GetResponse()
        return state_pb2.GetResponse(
            data=item.data, etag=state_pb2.Etag(value=item.etag), metadata=_item_metadata(item)
        )

    async def bulk_get(req: state_pb2.BulkGetRequest, ctx: Ctx) -> Message:
        keys = [item.key for item in req.items]
        found = await instances.get(ctx).bulk_get(keys)
        items = []
        for key in keys:
            item = found.get(key)
            if item is None:
                items.append(state_pb2.BulkStateItem(key=key))
            else:
                items.append(
                    state_pb2.BulkStateItem(
                        key=key,
                        data=item.data,
                        etag=state_pb2.Etag(value=item.etag),
                        metadata=_item_metadata(item),
                    )
                )
        return state_pb2.BulkGetResponse(items=items)

    async def set_(req: state_pb2.SetRequest, ctx: Ctx) -> Message:
        await instances.get(ctx).set(_set(req))
        return state_pb2.SetResponse()

    async def delete(req: state_pb2.DeleteRequest, ctx: Ctx) -> Message:
        await instances.get(ctx).delete(_delete(req))
        return state_pb2.DeleteResponse()

    async def bulk_set(req: state_pb2.BulkSetRequest, ctx: Ctx) -> Message:
        store = instances.get(ctx)
        for item in req.items:
            await store.set(_set(item))
        return state_pb2.BulkSetResponse()

    async def bulk_delete(req: state_pb2.BulkDeleteRequest, ctx: Ctx) -> Message:
        store = instances.get(ctx)
        for item in req.items:
            await store.delete(_delete(item))
        return state_pb2.BulkDeleteResponse()

    async def transact(req: state_pb2.TransactionalStateRequest, ctx: Ctx) -> Message:
        ops = [_set(op.set) if op.HasField("set") else _delete(op.delete) for op in req.operations]
        await instances.get(ctx).transact(ops)
        return state_pb2.TransactionalStateResponse()

    async def query(req: state_pb2.QueryRequest, ctx: Ctx) -> Message:
        body: dict[str, Any] = {
            "filter": {op: json.loads(any_.value) for op, any_ in req.query.filter.items()},
            "sort": [{"key": s.key, "order": state_pb2.Sorting.Order.Name(s.order)} for s in req.query.sort],
            "page": {"limit": req.query.pagination.limit, "token": req.query.pagination.token},
        }
        try:
            parsed = parse(body)
        except (QuerySyntaxError, ValueError) as exc:
            raise _refusal(code_pb2.INVALID_ARGUMENT, str(exc)) from None
        page = await instances.get(ctx).query(parsed, "")
        return state_pb2.QueryResponse(
            items=[
                state_pb2.QueryItem(key=i.key, data=i.data, etag=state_pb2.Etag(value=i.etag))
                for i in page.items
            ],
            token=page.token or "",
        )

    return {
        protocol.STATE: {
            "Init": (init, state_pb2.InitRequest),
            "Features": (features, common_pb2.FeaturesRequest),
            "Ping": (ping, common_pb2.PingRequest),
            "Get": (get, state_pb2.GetRequest),
            "BulkGet": (bulk_get, state_pb2.BulkGetRequest),
            "Set": (set_, state_pb2.SetRequest),
            "Delete": (delete, state_pb2.DeleteRequest),
            "BulkSet": (bulk_set, state_pb2.BulkSetRequest),
            "BulkDelete": (bulk_delete, state_pb2.BulkDeleteRequest),
        },
        protocol.TRANSACTIONAL: {"Transact": (transact, state_pb2.TransactionalStateRequest)},
        protocol.QUERIABLE: {"Query": (query, state_pb2.QueryRequest)},
    }


def _wrap(handler: Handler) -> Handler:
    async def call(request: Any, context: Ctx) -> Message:
        try:
            return await handler(request, context)
        except Aborted as exc:
            await context.abort(
                grpc.StatusCode(_GRPC_CODES[exc.status.code]),
                exc.status.message,
                trailing_metadata=(("grpc-status-details-bin", exc.status.SerializeToString()),),
            )
        except StoreError as exc:
            refusal = _store_refusal(exc).status
            await context.abort(
                grpc.StatusCode(_GRPC_CODES[refusal.code]),
                refusal.message,
                trailing_metadata=(("grpc-status-details-bin", refusal.SerializeToString()),),
            )
        raise AssertionError("unreachable")  # context.abort raises

    return call


_GRPC_CODES = {code.value[0]: code.value for code in grpc.StatusCode}


def build_server(store_type: str, socket: Path) -> tuple[grpc.aio.Server, Instances]:
    instances = Instances(store_type)
    services = _handlers(instances)
    if "TRANSACTIONAL" not in instances.features():
        services.pop(protocol.TRANSACTIONAL)
    if "QUERY_API" not in instances.features():
        services.pop(protocol.QUERIABLE)
    server = grpc.aio.server()
    for service, methods in services.items():
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            name: grpc.unary_unary_rpc_method_handler(
                _wrap(fn),
                request_deserializer=req.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            )
            for name, (fn, req) in methods.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    reflection.enable_server_reflection((*services, reflection.SERVICE_NAME), server)
    server.add_insecure_port(f"unix:{socket}")
    return server, instances


def _clear(socket: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        socket.unlink()


async def serve(store_type: str, socket: Path) -> None:
    _clear(socket)  # a socket left by a server that died
    socket.parent.mkdir(parents=True, exist_ok=True)
    server, instances = build_server(store_type, socket)
    await server.start()
    log.info("serving %s as a pluggable state store on %s", instances.store_type, socket)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=5)
    await instances.close()
    _clear(socket)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="statestore-pluggable",
        description="Serve one of this project's state stores as a Dapr pluggable state store on a Unix socket.",
    )
    parser.add_argument("--type", required=True, help="the store type served, e.g. state.sqlite")
    parser.add_argument(
        "--socket",
        type=Path,
        help="the socket (default: <DAPR_COMPONENTS_SOCKETS_FOLDER>/<name>.sock, name from --name)",
    )
    parser.add_argument(
        "--name", default="statestore", help="the socket's name, the type daprd sees: state.<name>"
    )
    args = parser.parse_args(argv)
    try:
        canonical_type(args.type)
    except UnknownStoreType as exc:
        parser.error(str(exc))
    from .sockets import socket_folder

    socket: Path = args.socket or socket_folder() / f"{args.name}.sock"
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(args.type, socket))
