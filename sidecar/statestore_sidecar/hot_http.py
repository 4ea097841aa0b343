"""The state API's data requests, GET of one key, SAVE, bulk get and transaction, served inside
uvicorn's HTTP protocol.

uvicorn's httptools protocol runs every request as an ASGI cycle: a scope, a cycle object, an event
for the body, a task, `receive`/`send` messages, then (in the application) a Request and a Response,
and two socket writes for the head and the body. For `GET /v1.0/state/<store>/<key>`,
`POST|PUT /v1.0/state/<store>` and `POST|PUT /v1.0/state/<store>/bulk|transaction`
`HotHttpProtocol` takes the parsed request straight from httptools' callbacks once its body is
complete, calls the same `StateApi` code the ASGI routes call, and writes the whole response at
once, with the same status, headers and body.

Anything else, and any case these requests do not cover simply (a path to clean, a wrong API token,
`Expect: 100-continue`, a chunked or oversized body, HTTP/1.0, a pipelined request behind one in
progress, a draining server), goes through the ASGI application as before, which answers it.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .drain import Drain

_PREFIX = b"/v1.0/state/"
Observe = Callable[[str, int, float], None]
# (operation, raw path, query string, body) -> (status, header lines, body)
Answer = Callable[[str, bytes, bytes, bytes], Awaitable[tuple[int, bytes, bytes]]]
# The POST and PUT routes with a store and one more segment served here; that segment names the
# operation (as the metrics label it).
_POST_TWO_SEGMENTS = frozenset((b"bulk", b"transaction"))


class HotRoutes:
    """What the protocol needs of the application: its answer to a hot request (`app.StateRoutes`),
    the API token, the drain and, when metrics are on, their observer."""

    def __init__(self, answer: Answer, limit: int, token: bytes | None, drain: Drain | None) -> None:
        self.answer = answer
        self.limit = limit
        self.token = token
        self.drain = drain
        self.observe: Observe | None = None  # set by the metrics middleware


class _NoEvent:
    """uvicorn's protocol sets its cycle's event when the connection is lost; nothing waits here."""

    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()


class _HotCycle:
    """The part of uvicorn's RequestResponseCycle its protocol touches, for a hot request."""

    __slots__ = ("body", "disconnected", "keep_alive", "op", "path", "query", "response_complete")

    message_event = _NO_EVENT

    def __init__(self, op: str, path: bytes, query: bytes, keep_alive: bool) -> None:
        self.op = op
        self.path = path
        self.query = query
        self.keep_alive = keep_alive
        self.body = bytearray()
        self.disconnected = False
        self.response_complete = False


def _is_clean(path: bytes) -> bool:
    """True when `app.clean_path` leaves the path as it is (conservatively: else the ASGI path)."""
    return b"//" not in path and b"/." not in path and not path.endswith(b"/")


class HotHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, serving GET, SAVE, bulk get and transaction of the state API
    without an ASGI cycle."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hot: HotRoutes | None = getattr(self.app, "hot_routes", None)

    def on_headers_complete(self) -> None:
        if self.hot is not None:
            cycle = self._hot_cycle(self.hot)
            if cycle is not None:
                self.cycle = cycle  # type: ignore[assignment]
                return
        super().on_headers_complete()

    def _hot_cycle(self, hot: HotRoutes) -> _HotCycle | None:
        existing = self.cycle
        if existing is not None and not existing.response_complete:
            return None  # a pipelined request: uvicorn queues it behind the one in progress
        parser = self.parser
        method = parser.get_method()
        if method == b"GET":
            get = True
        elif method in (b"POST", b"PUT"):
            get = False
        else:
            return None
        if self.expect_100_continue or parser.get_http_version() != "1.1" or parser.should_upgrade():
            return None
        if hot.drain is not None and hot.drain.draining:
            return None
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserError:
            return None
        path: bytes = url.path
        if not path.startswith(_PREFIX) or not _is_clean(path) or (not get and b"%" in path):
            return None  # (a POST's escaped slash would route elsewhere once decoded)
        slashes = path.count(b"/", len(_PREFIX))
        if get:
            if slashes != 1:
                return None
            op = "get"
        elif slashes == 0:
            op = "save"
        elif slashes == 1:
            last = path[path.rindex(b"/") + 1 :]
            if last not in _POST_TWO_SEGMENTS:
                return None  # no such route: the router answers
            op = last.decode()
        else:
            return None
        length = None
        token = b""
        for name, value in self.headers:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                return None
            elif name == b"dapr-api-token":
                token = value
        if hot.token is not None and not hmac.compare_digest(token, hot.token):
            return None  # answered (401) by the ASGI path
        if length is not None and (not length.isdigit() or int(length) > hot.limit):
            return None
        if length is None and not get:
            return None
        return _HotCycle(op, path, url.query or b"", parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        cycle: Any = self.cycle
        if type(cycle) is _HotCycle:
            cycle.body += body  # bounded by the content-length checked above
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        cycle: Any = self.cycle
        if type(cycle) is _HotCycle:
            task = self.loop.create_task(self._serve(cycle))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)
            return
        super().on_message_complete()

    async def _serve(self, cycle: _HotCycle) -> None:
        hot = self.hot
        assert hot is not None
        started = time.perf_counter()
        try:
            status, head, body = await hot.answer(cycle.op, cycle.path, cycle.query, bytes(cycle.body))
        except BaseException:  # cancelled (shutdown): close as uvicorn closes an unfinished response
            cycle.response_complete = True
            self.transport.close()
            raise
        if not cycle.disconnected and not self.transport.is_closing():
            content = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                content += [name, b": ", value, b"\r\n"]
            content.append(head)
            if not cycle.keep_alive:
                content.append(b"connection: close\r\n")
            content += [b"\r\n", body]
            self.transport.write(b"".join(content))
        cycle.response_complete = True
        if hot.observe is not None:
            hot.observe(cycle.op, status, time.perf_counter() - started)
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()
