"""The gRPC adapter of the state API: the state part of `dapr.proto.runtime.v1.Dapr`.

It decodes protobuf requests (the stubs the `dapr` package ships) for `StateCore`, renders its
results, and turns its `ApiError`s into gRPC statuses with `google.rpc` details as daprd sends them.
Every other method of the service answers UNIMPLEMENTED, naming itself. The server runs in the
event loop of the HTTP server (`grpc_service`, entered by the application's lifespan).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import grpc
import grpc.aio
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import dapr_pb2, dapr_pb2_grpc, metadata_pb2, state_pb2
from google.protobuf import any_pb2, empty_pb2
from google.rpc import error_details_pb2, status_pb2

from . import errors, keys
from .drain import FINISH_SECONDS
from .errors import ApiError
from .json_codec import Malformed, decode_json, encode_value
from .state_api import ItemRequest, StateCore, expire_time
from .stores.base import Item

log = logging.getLogger("statestore.grpc")

SERVICE = "dapr.proto.runtime.v1.Dapr"
TOKEN_HEADER = "dapr-api-token"
# gRPC core cancels calls that arrive faster than the server takes them up: past 1,000 waiting calls
# it drops a growing share at random, past 3,000 all (CANCELLED to the client). daprd queues them
# instead, so a burst of a few thousand concurrent calls completes; so do we, up to this many.
MAX_WAITING_CALLS = 65_536
IMPLEMENTED = frozenset(
    {
        "GetState",
        "GetBulkState",
        "SaveState",
        "DeleteState",
        "DeleteBulkState",
        "ExecuteStateTransaction",
        "QueryStateAlpha1",
        "GetMetadata",
        "SetMetadata",
    }
)
_JSON = "application/json"
_CONCURRENCY = {
    common_pb2.StateOptions.CONCURRENCY_FIRST_WRITE: "first-write",
    common_pb2.StateOptions.CONCURRENCY_LAST_WRITE: "last-write",
}
_CONSISTENCY = {
    common_pb2.StateOptions.CONSISTENCY_EVENTUAL: "eventual",
    common_pb2.StateOptions.CONSISTENCY_STRONG: "strong",
}


# -- errors -----------------------------------------------------------------------------------------


def _detail(detail: dict[str, Any]) -> any_pb2.Any:
    kind = detail["@type"].rsplit(".", 1)[-1]
    message: Any
    if kind == "ErrorInfo":
        message = error_details_pb2.ErrorInfo(
            reason=detail["reason"], domain=detail["domain"], metadata=detail.get("metadata") or {}
        )
    elif kind == "ResourceInfo":
        message = error_details_pb2.ResourceInfo(
            resource_type=detail["resource_type"],
            resource_name=detail["resource_name"],
            owner=detail["owner"],
            description=detail["description"],
        )
    elif kind == "BadRequest":
        message = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v["field"], description=v["description"])
                for v in detail["field_violations"]
            ]
        )
    elif kind == "Help":
        message = error_details_pb2.Help(
            links=[
                error_details_pb2.Help.Link(description=link["description"], url=link["url"])
                for link in detail["links"]
            ]
        )
    else:  # pragma: no cover - errors.py builds only the kinds above
        raise ValueError(f"no protobuf form for error detail {kind}")
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_of(code: grpc.StatusCode, message: str, details: list[dict[str, Any]] | None) -> status_pb2.Status:
    return status_pb2.Status(code=code.value[0], message=message, details=[_detail(d) for d in details or ()])


async def abort(context: grpc.aio.ServicerContext[Any, Any], err: ApiError) -> None:
    """End the call with the error's gRPC form; rich details travel as `grpc-status-details-bin`."""
    code = grpc.StatusCode[err.grpc]
    metadata: tuple[tuple[str, str | bytes], ...] = ()
    if err.grpc_details:
        status = status_of(code, err.grpc_message, err.grpc_details)
        metadata = (("grpc-status-details-bin", status.SerializeToString()),)
    await context.abort(code, err.grpc_message, trailing_metadata=metadata)


def _token_error(detail: str) -> ApiError:
    """daprd's refusal of a token: its HTTP 401 carried into gRPC, the detail in ErrorInfo metadata."""
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "Unauthorized",
        "domain": "dapr.io",
        "metadata": {"http.code": "401", "http.error_message": detail[:63]},
    }
    return ApiError(401, "", "Unauthorized", [info], grpc="UNAUTHENTICATED")


# -- request decoding -------------------------------------------------------------------------------


def _options(item: common_pb2.StateItem | state_pb2.DeleteStateRequest) -> tuple[str | None, str | None]:
    if not item.HasField("options"):
        return None, None
    return _CONCURRENCY.get(item.options.concurrency), _CONSISTENCY.get(item.options.consistency)


def _etag(item: common_pb2.StateItem | state_pb2.DeleteStateRequest) -> str | None:
    return item.etag.value if item.HasField("etag") else None


def _item(item: common_pb2.StateItem, *, json_content: bool) -> ItemRequest:
    """A StateItem for the core. With `contentType: application/json` a saved value is parsed and
    stored re-encoded, as daprd hands stores a decoded value then; otherwise its bytes are stored."""
    value = item.value
    if json_content and item.metadata.get("contentType") == _JSON:
        try:
            value = encode_value(decode_json(value))
        except Malformed as exc:
            raise errors.value_not_json(str(exc)) from None
    mode, consistency = _options(item)
    return ItemRequest(item.key, value, _etag(item), dict(item.metadata), mode, consistency)


def _item_metadata(item: Item) -> dict[str, str]:
    return {} if item.expires_at is None else {"ttlExpireTime": expire_time(item.expires_at)}


# -- the service ------------------------------------------------------------------------------------

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def _api(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """A servicer method whose ApiErrors end the call in their gRPC form."""

    async def call(self: DaprState, request: Any, context: Context) -> Any:
        try:
            return await method(self, request, context)
        except ApiError as err:
            await abort(context, err)

    call.__name__ = method.__name__
    return call


class DaprState(dapr_pb2_grpc.DaprServicer):
    """The state part of the Dapr service over one `StateCore`."""

    def __init__(self, core: StateCore) -> None:
        self.core = core
        for name in dapr_pb2.DESCRIPTOR.services_by_name["Dapr"].methods_by_name:
            if name not in IMPLEMENTED:
                setattr(self, name, _unimplemented(name))

    @_api
    async def GetState(self, request: state_pb2.GetStateRequest, context: Context) -> Any:
        handle = self.core.handle(request.store_name)
        item = await self.core.get(handle, request.key, _CONSISTENCY.get(request.consistency))
        if item is None:
            return state_pb2.GetStateResponse()
        return state_pb2.GetStateResponse(data=item.data, etag=item.etag, metadata=_item_metadata(item))

    @_api
    async def GetBulkState(self, request: state_pb2.GetBulkStateRequest, context: Context) -> Any:
        handle = self.core.handle(request.store_name)
        # `parallelism` is only a hint: every store fetches the keys in one round trip.
        found = await self.core.bulk_get(handle, list(request.keys))
        return state_pb2.GetBulkStateResponse(
            items=[
                state_pb2.BulkStateItem(key=key)
                if item is None
                else state_pb2.BulkStateItem(
                    key=key, data=item.data, etag=item.etag, metadata=_item_metadata(item)
                )
                for key, item in found
            ]
        )

    @_api
    async def SaveState(self, request: state_pb2.SaveStateRequest, context: Context) -> Any:
        handle = self.core.handle(request.store_name)
        items = [_item(s, json_content=True) for s in request.states]
        await self.core.save(handle, items, {})
        return empty_pb2.Empty()

    @_api
    async def DeleteState(self, request: state_pb2.DeleteStateRequest, context: Context) -> Any:
        handle = self.core.handle(request.store_name)
        mode, consistency = _options(request)
        await self.core.delete(handle, request.key, _etag(request), mode, consistency)
        return empty_pb2.Empty()

    @_api
    async def DeleteBulkState(self, request: state_pb2.DeleteBulkStateRequest, context: Context) -> Any:
        handle = self.core.handle(request.store_name)
        await self.core.delete_bulk(handle, [_item(s, json_content=False) for s in request.states])
        return empty_pb2.Empty()

    @_api
    async def ExecuteStateTransaction(
        self, request: state_pb2.ExecuteStateTransactionRequest, context: Context
    ) -> Any:
        handle = self.core.transactional(request.storeName)
        operations = []
        for op in request.operations:
            item = _item(op.request, json_content=False)
            self.core.stored_key(handle, item.key)  # daprd checks the key before the operation type
            operations.append(self.core.operation(handle, op.operationType, item, {}))
        await self.core.transact(handle, operations)
        return empty_pb2.Empty()

    @_api
    async def QueryStateAlpha1(self, request: state_pb2.QueryStateRequest, context: Context) -> Any:
        handle = self.core.queryable(request.store_name)
        page = await self.core.query(handle, request.query.encode())
        return state_pb2.QueryStateResponse(
            results=[
                state_pb2.QueryStateItem(key=keys.original_key(i.key), data=i.data, etag=i.etag)
                for i in page.items
            ],
            token=page.token or "",
        )

    @_api
    async def GetMetadata(self, request: metadata_pb2.GetMetadataRequest, context: Context) -> Any:
        view = self.core.metadata()
        return metadata_pb2.GetMetadataResponse(
            id=view.app_id,
            runtime_version=view.runtime_version,
            extended_metadata=view.extended,
            registered_components=[
                metadata_pb2.RegisteredComponents(
                    name=c.name, type=c.type, version=c.version, capabilities=c.capabilities
                )
                for c in view.components
            ],
            actor_runtime=metadata_pb2.ActorRuntime(runtime_status=metadata_pb2.ActorRuntime.DISABLED),
        )

    @_api
    async def SetMetadata(self, request: metadata_pb2.SetMetadataRequest, context: Context) -> Any:
        if request.key:
            self.core.set_metadata(request.key, request.value)
        return empty_pb2.Empty()


def _unimplemented(name: str) -> Callable[[Any, Context], Awaitable[None]]:
    async def refuse(request: Any, context: Context) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{SERVICE}/{name} is not implemented: this server serves Dapr's state API only",
        )

    return refuse


# -- the API token ----------------------------------------------------------------------------------


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class TokenCheck(grpc.aio.ServerInterceptor):
    """`dapr-api-token` must equal DAPR_API_TOKEN on every call, as daprd's interceptor requires."""

    def __init__(self, token: str) -> None:
        self.token = token.encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        given = [v for k, v in details.invocation_metadata or () if k == TOKEN_HEADER]
        if not given:
            refusal = _token_error("missing api token in request metadata")
        elif hmac.compare_digest(_as_bytes(given[0]), self.token):
            return handler
        else:
            refusal = _token_error("authentication error: api token mismatch")
        return None if handler is None else _refusing(handler, refusal)


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _refusing(handler: Handler, err: ApiError) -> Handler:
    """A handler of the same kind as `handler` that ends every call with `err`."""

    async def refuse(request: Any, context: Context) -> None:
        await abort(context, err)

    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, **codec)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse, **codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, **codec)
    return grpc.stream_stream_rpc_method_handler(refuse, **codec)


# -- the server -------------------------------------------------------------------------------------


@asynccontextmanager
async def grpc_service(
    core: StateCore, *, host: str, port: int, token: str | None, shared_port: bool
) -> AsyncIterator[None]:
    """Serve the Dapr service on host:port until the server's listeners close (`Drain.close()`), at
    the latest when the block ends; then stop gracefully.

    `shared_port` lets several worker processes listen on the port (SO_REUSEPORT); otherwise a port
    in use is an error, as for the HTTP server.
    """
    limit = core.max_body_size
    server = grpc.aio.server(
        interceptors=[TokenCheck(token)] if token else None,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 1 if shared_port else 0),
            ("grpc.server.max_pending_requests", MAX_WAITING_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", MAX_WAITING_CALLS),
        ],
    )
    dapr_pb2_grpc.add_DaprServicer_to_server(DaprState(core), server)  # type: ignore[no-untyped-call]
    try:
        server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise OSError(f"cannot listen for gRPC on {host}:{port}: {exc}") from None
    await server.start()
    log.info("Dapr gRPC API listening on %s:%d", host, port)
    drain = core.runtime.drain

    async def stop_on_close() -> None:
        # With the HTTP listener: when the drain ends, or on any other stop of the server.
        await drain.closed()
        await server.stop(FINISH_SECONDS)  # closes the port; calls in flight get the grace to finish
        log.info("Dapr gRPC API stopped")

    stopping = asyncio.create_task(stop_on_close())
    try:
        yield
    finally:
        drain.close()  # the application stops: if the server has not closed its listeners, now
        await stopping
