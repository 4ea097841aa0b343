"""The HTTP state API: daprd's routes, status codes and bodies, in front of `Store`s.

Handlers decode the request (`requests`), call the store, and map store outcomes to Dapr's errors
(`errors`). They read the raw path so keys decode exactly as daprd decodes them.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__, errors, keys
from . import query as q
from .drain import Drain
from .errors import ApiError
from .openapi import ROUTE_DOCS
from .raw_values import attach_to_save, attach_to_transaction
from .requests import (
    BadEscape,
    ItemRequest,
    Malformed,
    check_consistency,
    concurrency,
    decode_item,
    decode_json,
    expect_string_map,
    fields,
    query_param,
    unescape_segment,
    url_metadata,
)
from .runtime import Runtime, StoreHandle
from .stores.base import (
    DeleteRequest,
    EtagMismatch,
    Feature,
    Item,
    Operation,
    QueryError,
    StoreError,
)

log = logging.getLogger("statestore.api")

JSON = "application/json"
_BULK_FIELDS = frozenset({"keys", "parallelism", "metadata"})
_TX_FIELDS = frozenset({"operations", "metadata"})
_OP_FIELDS = frozenset({"operation", "request"})
_HEALTH_PATHS = frozenset({"/v1.0/healthz", "/v1.0/healthz/outbound", "/livez"})


class BodyTooLarge(Exception):
    pass


def _no_content() -> Response:
    return Response(status_code=204)


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=JSON)


def _expire_time(expires_at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at))


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
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    parts = raw.decode("latin-1").split("/")[3:]
    if len(parts) != count:
        raise _PlainError(404, "404 page not found")
    try:
        return [unescape_segment(p) for p in parts]
    except BadEscape as exc:
        raise _PlainError(400, str(exc)) from None


class _PlainError(Exception):
    """daprd answers a bad path escape with Go's plain-text error, not the JSON shape."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class StateApi:
    """Route handlers bound to one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app_id = runtime.settings.app_id
        self.limit = runtime.settings.max_body_size

    # -- lookups ------------------------------------------------------------------------------

    def handle(self, name: str, for_query: bool = False) -> StoreHandle:
        stores = self.runtime.stores
        if not stores:
            raise errors.store_not_configured(name, self.app_id, for_query)
        handle = stores.get(name)
        if handle is None:
            raise errors.store_not_found(name, self.app_id, for_query)
        return handle

    def stored_key(self, handle: StoreHandle, key: str) -> str:
        if keys.SEPARATOR in key:
            raise errors.illegal_key(handle.name, key)
        return handle.keys.stored(key)

    async def body(self, request: Request) -> Any:
        return (await self.body_and_bytes(request))[1]

    async def body_and_bytes(self, request: Request) -> tuple[bytes, Any]:
        try:
            raw = await read_body(request, self.limit)
        except BodyTooLarge as exc:
            raise errors.malformed(str(exc)) from None
        try:
            return raw, decode_json(raw)
        except Malformed as exc:
            raise errors.malformed(str(exc)) from None

    async def object_body(self, request: Request, struct: str, raw_values: bool = False) -> dict[str, Any]:
        """A JSON object body (null counts as empty), with daprd's "failed deserializing" errors;
        with `raw_values`, a transaction's values keep their text as sent."""
        try:
            raw = await read_body(request, self.limit)
            body = decode_json(raw)
            if raw_values:
                attach_to_transaction(raw, body)
        except (BodyTooLarge, Malformed) as exc:
            raise errors.malformed(f"failed deserializing HTTP body: {exc}") from None
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise errors.malformed(f"failed deserializing HTTP body: json: cannot unmarshal into {struct}")
        return body

    # -- routes -------------------------------------------------------------------------------

    async def save(self, request: Request) -> Response:
        (store_name,) = path_segments(request, 1)
        handle = self.handle(store_name)
        raw_body, body = await self.body_and_bytes(request)
        if body is None:
            return _no_content()
        attach_to_save(raw_body, body)  # values are stored as sent
        if not isinstance(body, list):
            raise errors.malformed("json: cannot unmarshal object into Go value of type []state.SetRequest")
        url_meta = url_metadata(request.scope.get("query_string", b""))
        parsed: list[tuple[ItemRequest, str]] = []
        for raw in body:
            try:
                item = decode_item(raw)
            except Malformed as exc:
                raise errors.malformed(str(exc)) from None
            parsed.append((item, self.stored_key(handle, item.key)))
        if not parsed:
            return _no_content()
        if not handle.ready.is_set():
            raise errors.state_save(handle.name, 500, str(handle.unavailable()))

        async def save_one(item: ItemRequest, stored: str) -> None:
            await handle.store.set(item.set_request(stored, url_meta))

        if len(parsed) == 1:
            outcomes: Sequence[BaseException | None] = [await _capture(save_one(*parsed[0]))]
        else:
            # As daprd: items are independent writes, run in parallel, partial success allowed.
            outcomes = await asyncio.gather(*(_capture(save_one(i, m)) for i, m in parsed))
        failures = [o for o in outcomes if o is not None]
        if not failures:
            return _no_content()
        # daprd's 400 is for etags a store cannot parse; any etag is well formed here.
        status = 409 if all(isinstance(f, EtagMismatch) for f in failures) else 500
        raise errors.state_save(handle.name, status, "\n".join(_describe(f) for f in failures))

    async def get(self, request: Request) -> Response:
        store_name, key = path_segments(request, 2)
        handle = self.handle(store_name)
        stored = self.stored_key(handle, key)
        qs = request.scope.get("query_string", b"")
        try:
            check_consistency(query_param(qs, "consistency"))
            if not handle.ready.is_set():
                raise handle.unavailable()
            item = await handle.store.get(stored)
        except StoreError as exc:
            raise errors.state_get(handle.name, key, str(exc)) from None
        except Exception as exc:
            raise errors.state_get(handle.name, key, _unexpected(exc)) from None
        if item is None:
            return _no_content()
        headers = {"etag": item.etag}
        if item.expires_at is not None:
            headers["metadata.ttlExpireTime"] = _expire_time(item.expires_at)
        return Response(item.data, headers=headers, media_type=JSON)

    async def bulk_get(self, request: Request) -> Response:
        (store_name,) = path_segments(request, 2)[:1]
        handle = self.handle(store_name)
        req = fields(await self.object_body(request, "BulkGetRequest"), _BULK_FIELDS, "BulkGetRequest")
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
            return _json(b"[]\n")
        stored = [self.stored_key(handle, k) for k in wanted]
        try:
            if not handle.ready.is_set():
                raise handle.unavailable()
            found = await handle.store.bulk_get(list(dict.fromkeys(stored)))
        except StoreError as exc:
            raise errors.bulk_get(str(exc)) from None
        except Exception as exc:
            raise errors.bulk_get(_unexpected(exc)) from None
        out: list[dict[str, Any]] = []
        for key, skey in zip(wanted, stored, strict=True):
            item = found.get(skey)
            out.append({"key": key} if item is None else _bulk_entry(key, item))
        return _json(orjson.dumps(out) + b"\n")

    async def delete(self, request: Request) -> Response:
        store_name, key = path_segments(request, 2)
        handle = self.handle(store_name)
        stored = self.stored_key(handle, key)
        qs = request.scope.get("query_string", b"")
        etag = request.headers.get("if-match") or None
        try:
            mode = concurrency(query_param(qs, "concurrency"))
            check_consistency(query_param(qs, "consistency"))
            if not handle.ready.is_set():
                raise handle.unavailable()
            await handle.store.delete(DeleteRequest(stored, etag, mode))
        except EtagMismatch as exc:
            raise errors.state_delete(key, 409, _describe(exc)) from None
        except StoreError as exc:
            raise errors.state_delete(key, 500, str(exc)) from None
        except Exception as exc:
            raise errors.state_delete(key, 500, _unexpected(exc)) from None
        return _no_content()

    async def transaction(self, request: Request) -> Response:
        (store_name,) = path_segments(request, 2)[:1]
        handle = self.handle(store_name)
        if Feature.TRANSACTIONAL not in handle.features:
            raise errors.transactions_not_supported(handle.name)
        body = await self.object_body(request, "TransactionalStateRequest", raw_values=True)
        req = fields(body, _TX_FIELDS, "TransactionalStateRequest")
        ops_raw = req.get("operations") or []
        if not isinstance(ops_raw, list):
            raise errors.malformed("failed deserializing HTTP body: operations must be an array")
        url_meta = url_metadata(request.scope.get("query_string", b""))
        try:
            expect_string_map(req.get("metadata"), "TransactionalStateRequest", "metadata")
        except Malformed as exc:
            raise errors.malformed(f"failed deserializing HTTP body: {exc}") from None
        if not ops_raw:
            return _no_content()
        operations: list[Operation] = []
        try:
            for raw_op in ops_raw:
                operations.append(self._operation(handle, raw_op, url_meta))
            if not handle.ready.is_set():
                raise handle.unavailable()
            await handle.store.transact(operations)
        except StoreError as exc:
            raise errors.transaction(_describe(exc)) from None
        except ApiError:
            raise
        except Exception as exc:
            raise errors.transaction(_unexpected(exc)) from None
        return _no_content()

    def _operation(self, handle: StoreHandle, raw_op: Any, url_meta: dict[str, str]) -> Operation:
        if not isinstance(raw_op, dict):
            raise errors.malformed("failed deserializing HTTP body: each operation must be an object")
        op = fields(raw_op, _OP_FIELDS, "TransactionalStateOperation")
        kind = op.get("operation")
        if kind not in ("upsert", "delete"):
            raise errors.operation_not_supported(str(kind if kind is not None else ""))
        request = op.get("request")
        if not isinstance(request, dict):
            raise errors.malformed("failed deserializing HTTP body: operation request must be an object")
        try:
            item = decode_item(request)
        except Malformed as exc:
            raise errors.malformed(str(exc)) from None
        stored = self.stored_key(handle, item.key)
        if kind == "delete":
            return item.delete_request(stored)
        return item.set_request(stored, url_meta)

    async def query(self, request: Request) -> Response:
        (store_name,) = path_segments(request, 2)[:1]
        handle = self.handle(store_name, for_query=True)
        if Feature.QUERY_API not in handle.features:
            raise errors.query_not_supported(handle.name)
        try:
            raw = await read_body(request, self.limit)
        except BodyTooLarge as exc:
            raise errors.body_read(str(exc)) from None
        try:
            parsed = q.parse(decode_json(raw))
        except (Malformed, q.QuerySyntaxError) as exc:
            raise errors.query_failed(handle.name, f"failed to parse JSON query body: {exc}") from None
        try:
            if not handle.ready.is_set():
                raise handle.unavailable()
            page = await handle.store.query(parsed, handle.keys.query_prefix)
        except (QueryError, StoreError) as exc:
            raise errors.query_failed(handle.name, str(exc)) from None
        except Exception as exc:
            raise errors.query_failed(handle.name, _unexpected(exc)) from None
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
        wanted = request.query_params.get("appid")
        if wanted and wanted != self.app_id:
            raise errors.app_id_mismatch()
        if self.runtime.drain.draining:  # stopping: take this replica out of the Service's endpoints
            raise errors.not_ready(["shutting down"])
        failing = await self.runtime.unhealthy()
        if failing:
            raise errors.not_ready([f"state store {name}" for name in failing])
        return _no_content()

    async def outbound(self, request: Request) -> Response:
        if await self.runtime.unhealthy():
            raise errors.outbound_not_ready()
        return _no_content()

    async def livez(self, request: Request) -> Response:
        return _no_content()

    async def metadata(self, request: Request) -> Response:
        settings = self.runtime.settings
        body: dict[str, Any] = {
            "id": settings.app_id,
            "runtimeVersion": settings.runtime_version,
            "extended": {"daprRuntimeVersion": settings.runtime_version, **self.runtime.extended},
            "actorRuntime": {"runtimeStatus": "DISABLED"},
        }
        components = [
            {"name": h.name, "type": h.type, "version": h.version, "capabilities": h.capabilities}
            for h in self.runtime.stores.values()
        ]
        if components:
            body["components"] = components
        return _json(orjson.dumps(body) + b"\n")

    async def set_metadata(self, request: Request) -> Response:
        key = request.path_params["key"]
        try:
            raw = await read_body(request, self.limit)
        except BodyTooLarge as exc:
            raise errors.malformed(str(exc)) from None
        self.runtime.extended[key] = raw.decode("utf-8", "replace")
        return _no_content()


def _bulk_entry(key: str, item: Item) -> dict[str, Any]:
    entry: dict[str, Any] = {"key": key, "data": orjson.Fragment(item.data), "etag": item.etag}
    if item.expires_at is not None:
        entry["metadata"] = {"ttlExpireTime": _expire_time(item.expires_at)}
    return entry


async def _capture(awaitable: Awaitable[None]) -> BaseException | None:
    try:
        await awaitable
    except StoreError as exc:
        return exc
    except Exception as exc:
        log.exception("unexpected store failure")
        return StoreError(_unexpected(exc))
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, EtagMismatch):
        return f"possible etag mismatch. error from state store: {exc}"
    return str(exc)


def _unexpected(exc: Exception) -> str:
    log.error("unexpected error: %r", exc, exc_info=exc)
    return f"internal error ({type(exc).__name__})"


# -- transport: path cleaning and the API token -----------------------------------------------


def clean_path(path: str) -> str:
    """Go's path.Clean plus dropping a trailing slash, as daprd's router does before matching."""
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return "/" + "/".join(out)


Handler = Callable[[Request], Awaitable[Response]]


class StateRoutes:
    """The state routes dispatched straight from the transport, past FastAPI's stack.

    Profiles put a third of a GET's CPU in FastAPI and Starlette (middleware layers, the router
    trying each route's regex, dependency solving) for handlers that take only the request. These
    routes match exactly as the router matches them (on the decoded, cleaned path) and answer
    errors exactly as the exception handlers of `create_app` do; everything else, including every
    route's OpenAPI description, stays with FastAPI.
    """

    def __init__(self, api: StateApi) -> None:
        self.api = api

    def route(self, method: str, path: str) -> Handler | None:
        if not path.startswith("/v1.0/state/"):
            return None
        parts = path.split("/", 5)  # "", "v1.0", "state", store, key-or-action, rest of a key
        if len(parts) == 4:
            return self.api.save if method in ("POST", "PUT") else None
        if method == "GET":
            return self.api.get
        if method == "DELETE":
            return self.api.delete
        if len(parts) == 5 and method in ("POST", "PUT"):
            if parts[4] == "bulk":
                return self.api.bulk_get
            if parts[4] == "transaction":
                return self.api.transaction
        return None

    @staticmethod
    async def serve(handler: Handler, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await handler(Request(scope, receive))
        except ApiError as exc:
            response = Response(exc.body(), status_code=exc.status, media_type=JSON)
        except _PlainError as exc:
            response = Response(
                exc.text + "\n", status_code=exc.status, media_type="text/plain; charset=utf-8"
            )
        except Exception:
            # What Starlette's ServerErrorMiddleware answers, logged as it would be.
            log.exception("unhandled error serving %s %s", scope["method"], scope["path"])
            response = Response(
                "Internal Server Error", status_code=500, media_type="text/plain; charset=utf-8"
            )
        await response(scope, receive, send)


class Transport:
    """Pure ASGI middleware: normalises the path, enforces `dapr-api-token`, serves the hot routes."""

    def __init__(
        self, app: ASGIApp, token: str | None, routes: StateRoutes | None = None, drain: Drain | None = None
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.routes = routes
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.drain is not None and self.drain.draining:
            send = _closing(send)
        raw = scope.get("raw_path") or scope["path"].encode()
        cleaned = clean_path(raw.decode("latin-1")).encode("latin-1")
        if cleaned != raw:
            scope = {**scope, "raw_path": cleaned, "path": clean_path(scope["path"])}
        if self.token is not None and not (scope["method"] == "GET" and scope["path"] in _HEALTH_PATHS):
            given = b""
            for name, value in scope["headers"]:
                if name == b"dapr-api-token":
                    given = value
                    break
            if not hmac.compare_digest(given, self.token):
                await _send_plain(send, 401, "invalid api token\n")
                return
        if self.routes is not None:
            handler = self.routes.route(scope["method"], scope["path"])
            if handler is not None:
                await self.routes.serve(handler, scope, receive, send)
                return
        await self.app(scope, receive, send)


def _closing(send: Send) -> Send:
    """While draining: `Connection: close` on every answer, so kept connections move to another replica
    now rather than be closed under a request when this one stops."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await send(message)

    return closing


async def _send_plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})


def create_app(runtime: Runtime) -> ASGIApp:
    """The ASGI application serving the state API for a runtime's stores."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    api = StateApi(runtime)
    app = FastAPI(
        title="statestore-sidecar",
        version=__version__,
        description="Dapr's state HTTP API, served by statestore-sidecar.",
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url="/v1.0/docs",
        openapi_url="/v1.0/openapi.json",
        redoc_url=None,
    )

    async def on_api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return Response(exc.body(), status_code=exc.status, media_type=JSON)

    async def on_plain_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, _PlainError)
        return Response(exc.text + "\n", status_code=exc.status, media_type="text/plain; charset=utf-8")

    async def on_routing_error(_: Request, exc: Exception) -> Response:
        # The router's own answers as daprd's router gives them: a plain-text 404, an empty 405.
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return Response("404 page not found\n", status_code=404, media_type="text/plain; charset=utf-8")
        return Response(status_code=exc.status_code, headers=exc.headers)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(_PlainError, on_plain_error)
    app.add_exception_handler(StarletteHTTPException, on_routing_error)

    routes: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str], str]] = [
        ("/v1.0/state/{storeName}", api.save, ["POST", "PUT"], "save"),
        ("/v1.0/state/{storeName}/bulk", api.bulk_get, ["POST", "PUT"], "bulk"),
        ("/v1.0/state/{storeName}/transaction", api.transaction, ["POST", "PUT"], "transaction"),
        ("/v1.0/state/{storeName}/{key:path}", api.get, ["GET"], "get"),
        ("/v1.0/state/{storeName}/{key:path}", api.delete, ["DELETE"], "delete"),
        ("/v1.0-alpha1/state/{storeName}/query", api.query, ["POST", "PUT"], "query"),
        ("/v1.0/healthz", api.healthz, ["GET"], "healthz"),
        ("/v1.0/healthz/outbound", api.outbound, ["GET"], "outbound"),
        ("/livez", api.livez, ["GET"], "livez"),
        ("/v1.0/metadata", api.metadata, ["GET"], "metadata"),
        ("/v1.0/metadata/{key}", api.set_metadata, ["PUT"], "set_metadata"),
    ]
    for path, endpoint, methods, name in routes:
        doc = ROUTE_DOCS[name]
        for method in methods:
            app.add_api_route(
                path,
                endpoint,
                methods=[method],
                name=name,
                operation_id=f"{name}_{method.lower()}",
                summary=doc["summary"],
                responses=doc.get("responses"),
                openapi_extra=doc.get("extra"),
                response_class=Response,
            )
    return Transport(app, runtime.settings.api_token, StateRoutes(api), runtime.drain)
