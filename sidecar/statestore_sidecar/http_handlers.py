"""The HTTP handlers of the state API: daprd's routes, status codes and bodies.

Each decodes the request (`requests`), calls the transport-neutral `StateCore` (`state_api`) and
renders its results; errors come from `errors` in their HTTP form. They read the raw path so keys
decode exactly as daprd decodes them. `app` routes requests to them.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from . import errors, keys
from .raw_values import attach_to_save, attach_to_transaction
from .requests import (
    BadEscape,
    Malformed,
    decode_item,
    decode_json,
    expect_string_map,
    fields,
    query_param,
    unescape_segment,
    url_metadata,
)
from .runtime import StoreHandle
from .state_api import StateCore, check_operation_kind, expire_time
from .stores.base import Item, Operation

log = logging.getLogger("statestore.api")

JSON = "application/json"
_BULK_FIELDS = frozenset({"keys", "parallelism", "metadata"})
_TX_FIELDS = frozenset({"operations", "metadata"})
_OP_FIELDS = frozenset({"operation", "request"})


class BodyTooLarge(Exception):
    pass


def _no_content() -> Response:
    return Response(status_code=204)


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=JSON)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing as soon as it passes `limit` bytes, so oversized bodies are never read whole."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise BodyTooLarge(f"http: request body too large (limit {limit} bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"http: request body too large (limit {limit} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def path_segments(request: Request, count: int) -> list[str]:
    """The decoded segments after `/v1.0/state/` (or the alpha prefix); exactly `count` of them."""
    return segments(request.scope.get("raw_path") or request.scope["path"].encode(), count)


def segments(raw: bytes, count: int) -> list[str]:
    """`path_segments` of a raw (cleaned) path."""
    parts = raw.decode("latin-1").split("/")[3:]
    if len(parts) != count:
        raise PlainError(404, "404 page not found")
    try:
        return [unescape_segment(p) for p in parts]
    except BadEscape as exc:
        raise PlainError(400, str(exc)) from None


class PlainError(Exception):
    """daprd answers a bad path escape with Go's plain-text error, not the JSON shape."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class StateApi:
    """The HTTP adapter: decodes requests for `StateCore` and renders its results as daprd does."""

    def __init__(self, core: StateCore) -> None:
        self.core = core
        self.limit = core.max_body_size

    async def body(self, request: Request) -> Any:
        return (await self.body_and_bytes(request))[1]

    async def read_limited(self, request: Request, context: str = "") -> bytes:
        """The whole body within the size limit; a larger one is daprd's malformed-request error,
        its message after `context`."""
        try:
            return await read_body(request, self.limit)
        except BodyTooLarge as exc:
            raise errors.malformed(f"{context}{exc}") from None

    async def body_and_bytes(self, request: Request) -> tuple[bytes, Any]:
        raw = await self.read_limited(request)
        try:
            return raw, decode_json(raw)
        except Malformed as exc:
            raise errors.malformed(str(exc)) from None

    async def raw_object_body(self, request: Request) -> bytes:
        """The whole body of a request whose body is a JSON object, with daprd's "failed
        deserializing" error when it is too large."""
        return await self.read_limited(request, "failed deserializing HTTP body: ")

    @staticmethod
    def object_body(raw: bytes, struct: str, raw_values: bool = False) -> dict[str, Any]:
        """A JSON object body (null counts as empty), with daprd's "failed deserializing" errors;
        with `raw_values`, a transaction's values keep their text as sent."""
        try:
            body = decode_json(raw)
            if raw_values:
                attach_to_transaction(raw, body)
        except Malformed as exc:
            raise errors.malformed(f"failed deserializing HTTP body: {exc}") from None
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise errors.malformed(f"failed deserializing HTTP body: json: cannot unmarshal into {struct}")
        return body

    # -- routes -------------------------------------------------------------------------------

    async def save(self, request: Request) -> Response:
        (store_name,) = path_segments(request, 1)
        handle = self.core.handle(store_name)
        raw = await self.read_limited(request)
        await self.save_body(handle, raw, request.scope.get("query_string", b""))
        return _no_content()

    async def save_body(self, handle: StoreHandle, raw_body: bytes, query_string: bytes) -> None:
        """Save the items of a request body (whole, within the size limit), as daprd does."""
        try:
            body = decode_json(raw_body)
        except Malformed as exc:
            raise errors.malformed(str(exc)) from None
        if body is None:
            return
        attach_to_save(raw_body, body)  # values are stored as sent
        if not isinstance(body, list):
            raise errors.malformed("json: cannot unmarshal object into Go value of type []state.SetRequest")
        try:
            items = [decode_item(raw) for raw in body]
        except Malformed as exc:
            raise errors.malformed(str(exc)) from None
        await self.core.save(handle, items, url_metadata(query_string))

    async def get(self, request: Request) -> Response:
        item = await self.read(
            request.scope.get("raw_path") or request.scope["path"].encode(),
            request.scope.get("query_string", b""),
        )
        if item is None:
            return _no_content()
        headers = {"etag": item.etag}
        if item.expires_at is not None:
            headers["metadata.ttlExpireTime"] = expire_time(item.expires_at)
        return Response(item.data, headers=headers, media_type=JSON)

    async def read(self, raw_path: bytes, query_string: bytes) -> Item | None:
        """The item a GET of this (cleaned) path reads, or None."""
        store_name, key = segments(raw_path, 2)
        handle = self.core.handle(store_name)
        return await self.core.get(handle, key, query_param(query_string, "consistency"))

    async def bulk_get(self, request: Request) -> Response:
        (store_name,) = path_segments(request, 2)[:1]
        handle = self.core.handle(store_name)
        return _json(await self.bulk_body(handle, await self.raw_object_body(request)))

    async def bulk_body(self, handle: StoreHandle, raw_body: bytes) -> bytes:
        """The JSON answer to a bulk get with this body."""
        req = fields(self.object_body(raw_body, "BulkGetRequest"), _BULK_FIELDS, "BulkGetRequest")
        wanted = req.get("keys") or []
        if not isinstance(wanted, list) or not all(isinstance(k, str) for k in wanted):
            raise errors.malformed(
                "failed deserializing HTTP body: json: cannot unmarshal into Go struct field "
                "BulkGetRequest.keys of type []string"
            )
        parallelism = req.get("parallelism")
        if parallelism is not None and (isinstance(parallelism, bool) or not isinstance(parallelism, int)):
            raise errors.malformed(
                "failed deserializing HTTP body: json: cannot unmarshal into Go struct field "
                "BulkGetRequest.parallelism of type int"
            )
        try:
            expect_string_map(req.get("metadata"), "BulkGetRequest", "metadata")
        except Malformed as exc:
            raise errors.malformed(f"failed deserializing HTTP body: {exc}") from None
        if not wanted:
            return b"[]\n"
        found = await self.core.bulk_get(handle, wanted)
        out = [{"key": key} if item is None else _bulk_entry(key, item) for key, item in found]
        return orjson.dumps(out) + b"\n"

    async def delete(self, request: Request) -> Response:
        store_name, key = path_segments(request, 2)
        handle = self.core.handle(store_name)
        qs = request.scope.get("query_string", b"")
        await self.core.delete(
            handle,
            key,
            request.headers.get("if-match") or None,
            query_param(qs, "concurrency"),
            query_param(qs, "consistency"),
        )
        return _no_content()

    async def transaction(self, request: Request) -> Response:
        (store_name,) = path_segments(request, 2)[:1]
        handle = self.core.transactional(store_name)
        raw = await self.raw_object_body(request)
        await self.transaction_body(handle, raw, request.scope.get("query_string", b""))
        return _no_content()

    async def transaction_body(self, handle: StoreHandle, raw_body: bytes, query_string: bytes) -> None:
        """Run the transaction of this body on a transactional store's handle."""
        body = self.object_body(raw_body, "TransactionalStateRequest", raw_values=True)
        req = fields(body, _TX_FIELDS, "TransactionalStateRequest")
        ops_raw = req.get("operations") or []
        if not isinstance(ops_raw, list):
            raise errors.malformed("failed deserializing HTTP body: operations must be an array")
        url_meta = url_metadata(query_string)
        try:
            expect_string_map(req.get("metadata"), "TransactionalStateRequest", "metadata")
        except Malformed as exc:
            raise errors.malformed(f"failed deserializing HTTP body: {exc}") from None
        operations = [self._operation(handle, raw_op, url_meta) for raw_op in ops_raw]
        await self.core.transact(handle, operations)

    def _operation(self, handle: StoreHandle, raw_op: Any, url_meta: dict[str, str]) -> Operation:
        if not isinstance(raw_op, dict):
            raise errors.malformed("failed deserializing HTTP body: each operation must be an object")
        op = fields(raw_op, _OP_FIELDS, "TransactionalStateOperation")
        kind = op.get("operation")
        kind = str(kind if kind is not None else "")
        check_operation_kind(kind)
        request = op.get("request")
        if not isinstance(request, dict):
            raise errors.malformed("failed deserializing HTTP body: operation request must be an object")
        try:
            item = decode_item(request)
        except Malformed as exc:
            raise errors.malformed(str(exc)) from None
        return self.core.operation(handle, kind, item, url_meta)

    async def query(self, request: Request) -> Response:
        (store_name,) = path_segments(request, 2)[:1]
        handle = self.core.queryable(store_name)
        try:
            raw = await read_body(request, self.limit)
        except BodyTooLarge as exc:
            raise errors.body_read(str(exc)) from None
        page = await self.core.query(handle, raw)
        if not page.items:
            return _no_content()
        results = [
            {"key": keys.original_key(i.key), "data": orjson.Fragment(i.data), "etag": i.etag}
            for i in page.items
        ]
        out: dict[str, Any] = {"results": results}
        if page.token is not None:
            out["token"] = page.token
        return _json(orjson.dumps(out) + b"\n")

    async def healthz(self, request: Request) -> Response:
        await self.core.health(request.query_params.get("appid"))
        return _no_content()

    async def outbound(self, request: Request) -> Response:
        await self.core.outbound_health()
        return _no_content()

    async def livez(self, request: Request) -> Response:
        return _no_content()

    async def metadata(self, request: Request) -> Response:
        view = self.core.metadata()
        body: dict[str, Any] = {
            "id": view.app_id,
            "runtimeVersion": view.runtime_version,
            "extended": view.extended,
            "actorRuntime": {"runtimeStatus": "DISABLED"},
        }
        if view.components:
            body["components"] = [
                {"name": c.name, "type": c.type, "version": c.version, "capabilities": c.capabilities}
                for c in view.components
            ]
        return _json(orjson.dumps(body) + b"\n")

    async def set_metadata(self, request: Request) -> Response:
        key = request.path_params["key"]
        raw = await self.read_limited(request)
        self.core.set_metadata(key, raw.decode("utf-8", "replace"))
        return _no_content()


def _bulk_entry(key: str, item: Item) -> dict[str, Any]:
    entry: dict[str, Any] = {"key": key, "data": orjson.Fragment(item.data), "etag": item.etag}
    if item.expires_at is not None:
        entry["metadata"] = {"ttlExpireTime": expire_time(item.expires_at)}
    return entry


# -- transport: path cleaning and the API token -----------------------------------------------
