"""The HTTP adapter of the state API: daprd's routes, status codes and bodies.

Handlers decode the request (`requests`), call the transport-neutral `StateCore` (`state_api`) and
render its results; errors come from `errors` in their HTTP form. They read the raw path so keys
decode exactly as daprd decodes them. `routes.ROUTES` lists the routes for FastAPI and the fast path.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__, errors, keys
from .drain import Drain
from .errors import ApiError
from .hot_http import HotRoutes
from .openapi import ROUTE_DOCS
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
from .routes import ROUTES, FastMatcher
from .runtime import Runtime, StoreHandle
from .state_api import StateCore, check_operation_kind, expire_time
from .stores.base import Item, Operation

log = logging.getLogger("statestore.api")

JSON = "application/json"
_BULK_FIELDS = frozenset({"keys", "parallelism", "metadata"})
_TX_FIELDS = frozenset({"operations", "metadata"})
_OP_FIELDS = frozenset({"operation", "request"})
_HEALTH_PATHS = frozenset({"/v1.0/healthz", "/v1.0/healthz/outbound", "/livez"})
_JSON_HEAD = b"content-type: application/json\r\n"
_PLAIN_HEAD = b"content-type: text/plain; charset=utf-8\r\n"
# Header values uvicorn refuses to send (it answers 500 instead).
HEADER_VALUE_RE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")


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
    """The HTTP adapter: decodes requests for `StateCore` and renders its results as daprd does."""

    def __init__(self, core: StateCore) -> None:
        self.core = core
        self.limit = core.max_body_size

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
        handle = self.core.handle(store_name)
        try:
            raw = await read_body(request, self.limit)
        except BodyTooLarge as exc:
            raise errors.malformed(str(exc)) from None
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
        found = await self.core.bulk_get(handle, wanted)
        out = [{"key": key} if item is None else _bulk_entry(key, item) for key, item in found]
        return _json(orjson.dumps(out) + b"\n")

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
        operations = [self._operation(handle, raw_op, url_meta) for raw_op in ops_raw]
        await self.core.transact(handle, operations)
        return _no_content()

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
        try:
            raw = await read_body(request, self.limit)
        except BodyTooLarge as exc:
            raise errors.malformed(str(exc)) from None
        self.core.set_metadata(key, raw.decode("utf-8", "replace"))
        return _no_content()


def _bulk_entry(key: str, item: Item) -> dict[str, Any]:
    entry: dict[str, Any] = {"key": key, "data": orjson.Fragment(item.data), "etag": item.etag}
    if item.expires_at is not None:
        entry["metadata"] = {"ttlExpireTime": expire_time(item.expires_at)}
    return entry


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
    """The fast routes of `routes.ROUTES`, dispatched straight from the transport, past FastAPI.

    Profiles put a third of a GET's CPU in FastAPI and Starlette (middleware layers, the router
    trying each route's regex, dependency solving) for handlers that take only the request. These
    routes match exactly as the router matches them (on the decoded, cleaned path) and answer
    errors exactly as the exception handlers of `create_app` do; everything else, including every
    route's OpenAPI description, stays with FastAPI.
    """

    def __init__(self, api: StateApi) -> None:
        self.api = api
        self.matcher = FastMatcher(ROUTES)
        self.handlers: dict[str, Handler] = {r.handler: getattr(api, r.handler) for r in ROUTES if r.fast}

    async def answer(self, get: bool, path: bytes, query: bytes, body: bytes) -> tuple[int, bytes, bytes]:
        """A GET of one key or a SAVE for `hot_http`: (status, header lines, body), the same answer
        as `serve` gives through the handlers, with the headers Starlette's Response would set."""
        api = self.api
        try:
            if get:
                item = await api.read(path, query)
                if item is None:
                    return 204, b"", b""
                etag = item.etag.encode("latin-1")
                if HEADER_VALUE_RE.search(etag):  # what uvicorn would refuse to send
                    raise RuntimeError(f"invalid etag {etag!r}")
                head = [b"etag: ", etag, b"\r\n"]
                if item.expires_at is not None:
                    expires = expire_time(item.expires_at).encode("latin-1")
                    head += [b"metadata.ttlexpiretime: ", expires, b"\r\n"]
                head += [b"content-length: %d\r\n" % len(item.data), _JSON_HEAD]
                return 200, b"".join(head), item.data
            (store_name,) = segments(path, 1)
            await api.save_body(api.core.handle(store_name), body, query)
            return 204, b"", b""
        except ApiError as exc:
            text = exc.body()
            return exc.status, b"content-length: %d\r\n%s" % (len(text), _JSON_HEAD), text
        except _PlainError as exc:
            text = (exc.text + "\n").encode()
            return exc.status, b"content-length: %d\r\n%s" % (len(text), _PLAIN_HEAD), text
        except Exception:
            log.exception("unhandled error serving %s %s", "GET" if get else "POST", path.decode("latin-1"))
            return 500, b"content-length: 21\r\n" + _PLAIN_HEAD, b"Internal Server Error"

    def route(self, method: str, path: str) -> Handler | None:
        name = self.matcher.match(method, path)
        return None if name is None else self.handlers[name]

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
        # GET and SAVE served inside the HTTP protocol (hot_http.HotHttpProtocol finds them here).
        self.hot_routes = (
            None if routes is None else HotRoutes(routes.answer, routes.api.limit, self.token, drain)
        )

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


Service = Callable[[StateCore], AbstractAsyncContextManager[None]]


def create_app(runtime: Runtime, services: Sequence[Service] = ()) -> ASGIApp:
    """The ASGI application serving the state API for a runtime's stores.

    `services` run beside it for the application's lifetime (the gRPC server), sharing its core:
    started once the stores are, stopped before they close.
    """
    core = StateCore(runtime)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            async with AsyncExitStack() as stack:
                for service in services:
                    await stack.enter_async_context(service(core))
                yield
        finally:
            await runtime.stop()

    api = StateApi(core)
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

    for route in ROUTES:
        doc = ROUTE_DOCS[route.name]
        for method in route.methods:
            app.add_api_route(
                route.path,
                getattr(api, route.handler),
                methods=[method],
                name=route.name,
                operation_id=f"{route.name}_{method.lower()}",
                summary=doc["summary"],
                responses=doc.get("responses"),
                openapi_extra=doc.get("extra"),
                response_class=Response,
            )
    return Transport(app, runtime.settings.api_token, StateRoutes(api), runtime.drain)
