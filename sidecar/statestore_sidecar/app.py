"""The HTTP adapter of the state API: the application around the handlers (`http_handlers`).

`routes.ROUTES` lists the routes for the router and the fast path (`StateRoutes`, which also answers
`hot_http`'s requests); `Transport` checks the API token and the drain before any route; `create_app`
builds the Starlette application, its error handlers, the OpenAPI document and the lifespan that
starts the stores and services.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__
from .drain import Drain
from .errors import ApiError
from .hot_http import HotRoutes
from .http_handlers import JSON, PlainError, StateApi, segments
from .openapi import document, viewer_page
from .routes import ROUTES, FastMatcher
from .runtime import Runtime
from .state_api import StateCore, expire_time

log = logging.getLogger("statestore.api")

_OPENAPI_URL = "/v1.0/openapi.json"
_HEALTH_PATHS = frozenset({"/v1.0/healthz", "/v1.0/healthz/outbound", "/livez"})
_JSON_HEAD = b"content-type: application/json\r\n"
_PLAIN_HEAD = b"content-type: text/plain; charset=utf-8\r\n"
# Header values uvicorn refuses to send (it answers 500 instead).
HEADER_VALUE_RE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")


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
    """The fast routes of `routes.ROUTES`, dispatched straight from the transport, past the router.

    Profiles put a third of a GET's CPU in the web framework (middleware layers, the router trying
    each route's regex) for handlers that take only the request. These routes match exactly as the
    router matches them (on the decoded, cleaned path) and answer errors exactly as the exception
    handlers of `create_app` do; everything else stays with the Starlette application.
    """

    def __init__(self, api: StateApi) -> None:
        self.api = api
        self.matcher = FastMatcher(ROUTES)
        self.handlers: dict[str, Handler] = {r.handler: getattr(api, r.handler) for r in ROUTES if r.fast}

    async def answer(self, op: str, path: bytes, query: bytes, body: bytes) -> tuple[int, bytes, bytes]:
        """A GET of one key, a SAVE, a bulk get or a transaction (`op`) for `hot_http`: (status,
        header lines, body), the same answer as `serve` gives through the handlers, with the headers
        Starlette's Response would set."""
        api = self.api
        try:
            if op == "get":
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
            if op == "save":
                (store_name,) = segments(path, 1)
                await api.save_body(api.core.handle(store_name), body, query)
                return 204, b"", b""
            (store_name,) = segments(path, 2)[:1]
            if op == "bulk":
                data = await api.bulk_body(api.core.handle(store_name), body)
                return 200, b"content-length: %d\r\n%s" % (len(data), _JSON_HEAD), data
            await api.transaction_body(api.core.transactional(store_name), body, query)
            return 204, b"", b""
        except ApiError as exc:
            text = exc.body()
            return exc.status, b"content-length: %d\r\n%s" % (len(text), _JSON_HEAD), text
        except PlainError as exc:
            text = (exc.text + "\n").encode()
            return exc.status, b"content-length: %d\r\n%s" % (len(text), _PLAIN_HEAD), text
        except Exception:
            # The operation, not a method: a SAVE and a transaction come as POST or PUT.
            log.exception("unhandled error serving a %s on %s", op, path.decode("latin-1"))
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
        except PlainError as exc:
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
        # GET, SAVE, bulk get and transaction served inside the HTTP protocol (hot_http.HotHttpProtocol
        # finds them here).
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


def _route(path: str, endpoint: Handler, method: str, name: str) -> Route:
    route = Route(path, endpoint, methods=[method], name=name)
    # Starlette adds HEAD to every GET route; daprd's router answers HEAD with 405.
    route.methods = {method}
    return route


def _document_routes() -> list[Route]:
    """The OpenAPI document and its viewer, built on first request (few ever ask)."""
    title = "statestore-sidecar"
    built: list[bytes] = []

    async def openapi_json(_: Request) -> Response:
        if not built:
            description = "Dapr's state HTTP API, served by statestore-sidecar."
            built.append(orjson.dumps(document(title, __version__, description)))
        return Response(built[0], media_type=JSON)

    async def viewer(_: Request) -> Response:
        return Response(viewer_page(title, _OPENAPI_URL), media_type="text/html; charset=utf-8")

    return [
        _route(_OPENAPI_URL, openapi_json, "GET", "openapi"),
        _route("/v1.0/docs", viewer, "GET", "docs"),
    ]


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
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            async with AsyncExitStack() as stack:
                for service in services:
                    await stack.enter_async_context(service(core))
                yield
        finally:
            await runtime.stop()

    api = StateApi(core)

    async def on_api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return Response(exc.body(), status_code=exc.status, media_type=JSON)

    async def on_plain_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, PlainError)
        return Response(exc.text + "\n", status_code=exc.status, media_type="text/plain; charset=utf-8")

    async def on_routing_error(_: Request, exc: Exception) -> Response:
        # The router's own answers as daprd's router gives them: a plain-text 404, an empty 405.
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return Response("404 page not found\n", status_code=404, media_type="text/plain; charset=utf-8")
        return Response(status_code=exc.status_code, headers=exc.headers)

    routes = [
        _route(route.path, getattr(api, route.handler), method, route.name)
        for route in ROUTES
        for method in route.methods
    ]
    routes += _document_routes()
    app = Starlette(
        routes=routes,
        exception_handlers={
            ApiError: on_api_error,
            PlainError: on_plain_error,
            StarletteHTTPException: on_routing_error,
        },
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # daprd's router does not redirect either
    return Transport(app, runtime.settings.api_token, StateRoutes(api), runtime.drain)
