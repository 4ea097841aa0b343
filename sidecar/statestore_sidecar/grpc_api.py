"""The gRPC adapter of the state API: the state part of `dapr.proto.runtime.v1.Dapr`.

It decodes protobuf requests (the messages the `dapr` package ships) for `StateCore`, renders its
results, and turns its `ApiError`s into gRPC statuses with `google.rpc` details as daprd sends them.
Every other method of the service answers UNIMPLEMENTED, naming itself. `grpc_wire` serves the
calls on the event loop of the HTTP server (`grpc_service`, entered by the application's lifespan).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import dapr_pb2, metadata_pb2, state_pb2
from google.protobuf import any_pb2, empty_pb2, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

from . import errors, keys
from .drain import FINISH_SECONDS
from .errors import ApiError
from .grpc_calls import INTERNAL, UNIMPLEMENTED, GrpcStatus, Handler, Headers
from .grpc_wire import GrpcWireServer
from .json_codec import Malformed, decode_json, encode_value
from .state_api import ItemRequest, StateCore, expire_time
from .stores.base import Item

log = logging.getLogger("statestore.grpc")

SERVICE = "dapr.proto.runtime.v1.Dapr"
TOKEN_HEADER = b"dapr-api-token"
# The numbers of gRPC's status codes, by the names `ApiError.grpc` gives.
_CODE_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)  # fmt: skip
CODES = {name: number for number, name in enumerate(_CODE_NAMES)}
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


def status_of(code: int, message: str, details: list[dict[str, Any]] | None) -> status_pb2.Status:
    return status_pb2.Status(code=code, message=message, details=[_detail(d) for d in details or ()])


def grpc_status(err: ApiError) -> GrpcStatus:
    """The error's gRPC form; rich details travel as `grpc-status-details-bin`."""
    code = CODES[err.grpc]
    details = None
    if err.grpc_details:
        details = status_of(code, err.grpc_message, err.grpc_details).SerializeToString()
    return GrpcStatus(code, err.grpc_message, details)


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


class DaprState:
    """The state part of the Dapr service over one `StateCore`: a coroutine per method, from the
    decoded request to the reply message, raising `ApiError`."""

    def __init__(self, core: StateCore) -> None:
        self.core = core

    async def GetState(self, request: state_pb2.GetStateRequest) -> Message:
        handle = self.core.handle(request.store_name)
        item = await self.core.get(handle, request.key, _CONSISTENCY.get(request.consistency))
        if item is None:
            return state_pb2.GetStateResponse()
        return state_pb2.GetStateResponse(data=item.data, etag=item.etag, metadata=_item_metadata(item))

    async def GetBulkState(self, request: state_pb2.GetBulkStateRequest) -> Message:
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

    async def SaveState(self, request: state_pb2.SaveStateRequest) -> Message:
        handle = self.core.handle(request.store_name)
        items = [_item(s, json_content=True) for s in request.states]
        await self.core.save(handle, items, {})
        return _EMPTY

    async def DeleteState(self, request: state_pb2.DeleteStateRequest) -> Message:
        handle = self.core.handle(request.store_name)
        mode, consistency = _options(request)
        await self.core.delete(handle, request.key, _etag(request), mode, consistency)
        return _EMPTY

    async def DeleteBulkState(self, request: state_pb2.DeleteBulkStateRequest) -> Message:
        handle = self.core.handle(request.store_name)
        await self.core.delete_bulk(handle, [_item(s, json_content=False) for s in request.states])
        return _EMPTY

    async def ExecuteStateTransaction(self, request: state_pb2.ExecuteStateTransactionRequest) -> Message:
        handle = self.core.transactional(request.storeName)
        operations = []
        for op in request.operations:
            item = _item(op.request, json_content=False)
            self.core.stored_key(handle, item.key)  # daprd checks the key before the operation type
            operations.append(self.core.operation(handle, op.operationType, item, {}))
        await self.core.transact(handle, operations)
        return _EMPTY

    async def QueryStateAlpha1(self, request: state_pb2.QueryStateRequest) -> Message:
        handle = self.core.queryable(request.store_name)
        page = await self.core.query(handle, request.query.encode())
        return state_pb2.QueryStateResponse(
            results=[
                state_pb2.QueryStateItem(key=keys.original_key(i.key), data=i.data, etag=i.etag)
                for i in page.items
            ],
            token=page.token or "",
        )

    async def GetMetadata(self, request: metadata_pb2.GetMetadataRequest) -> Message:
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

    async def SetMetadata(self, request: metadata_pb2.SetMetadataRequest) -> Message:
        if request.key:
            self.core.set_metadata(request.key, request.value)
        return _EMPTY


_EMPTY = empty_pb2.Empty()
_METHODS = dapr_pb2.DESCRIPTOR.services_by_name["Dapr"].methods_by_name


def _handler(method: Callable[[Any], Awaitable[Message]], request_type: type[Message]) -> Handler:
    """A method as `grpc_wire` calls it: request bytes in, reply bytes out, ApiErrors as statuses."""
    parse = request_type.FromString

    async def handle(message: bytes, headers: Headers) -> bytes:
        try:
            request = parse(message)
        except DecodeError as exc:
            raise GrpcStatus(INTERNAL, f"grpc: error unmarshalling request: {exc}") from None
        try:
            reply = await method(request)
        except ApiError as err:
            raise grpc_status(err) from None
        return reply.SerializeToString()

    return handle


class DaprService:
    """Routes the paths of the Dapr service: the state methods to `DaprState`, every other method
    of the service to UNIMPLEMENTED by name. `dapr-api-token` must equal DAPR_API_TOKEN on every
    call of the service, as daprd's interceptor requires."""

    def __init__(self, core: StateCore, token: str | None) -> None:
        state = DaprState(core)
        self.token = token.encode() if token else None
        self.handlers: dict[bytes, Handler] = {}
        self.unimplemented: dict[bytes, GrpcStatus] = {}
        for name, method in _METHODS.items():
            path = f"/{SERVICE}/{name}".encode()
            if name in IMPLEMENTED:
                request_type = message_factory.GetMessageClass(method.input_type)
                self.handlers[path] = _handler(getattr(state, name), request_type)
            else:
                message = f"{SERVICE}/{name} is not implemented: this server serves Dapr's state API only"
                self.unimplemented[path] = GrpcStatus(UNIMPLEMENTED, message)

    def route(self, path: bytes, headers: Headers) -> Handler:
        handler = self.handlers.get(path)
        if handler is None and path not in self.unimplemented:
            raise _unknown(path.decode(errors="replace"))
        if self.token is not None:
            given = headers.get(TOKEN_HEADER)
            if given is None:
                raise grpc_status(_token_error("missing api token in request metadata"))
            if not hmac.compare_digest(given, self.token):
                raise grpc_status(_token_error("authentication error: api token mismatch"))
        if handler is None:
            raise self.unimplemented[path]
        return handler


def _unknown(path: str) -> GrpcStatus:
    """A path outside the Dapr service, refused in the words of daprd's gRPC library."""
    service, _, method = path.removeprefix("/").rpartition("/")
    if not path.startswith("/") or not service:
        return GrpcStatus(UNIMPLEMENTED, f'malformed method name: "{path}"')
    if service == SERVICE:
        return GrpcStatus(UNIMPLEMENTED, f"unknown method {method} for service {service}")
    return GrpcStatus(UNIMPLEMENTED, f"unknown service {service}")


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
    server = GrpcWireServer(DaprService(core, token), core.max_body_size)
    try:
        await server.listen(host, port, reuse_port=shared_port)
    except OSError as exc:
        raise OSError(f"cannot listen for gRPC on {host}:{port}: {exc}") from None
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
