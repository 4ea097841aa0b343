"""A constant ASGI application: what an HTTP server costs per request with no state path behind it.

GET answers the bench's 1 KB document with an etag, as the state API's GET does; `/livez` answers 204.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from .targets import value_1kb

_BODY = value_1kb()
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/json"),
        (b"etag", b"1"),
        (b"content-length", str(len(_BODY)).encode()),
    ],
}
_NO_CONTENT = {"type": "http.response.start", "status": 204, "headers": []}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/livez":
        await send(_NO_CONTENT)
        await send({"type": "http.response.body", "body": b""})
        return
    await send(_START)
    await send({"type": "http.response.body", "body": _BODY})
