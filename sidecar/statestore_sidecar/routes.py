"""The HTTP route table, read by the Starlette application, the OpenAPI document and the fast path.

The application registers every route; the routes marked `fast` are also
dispatched straight from the transport, matched here on the cleaned path with one regular expression
per method that is compiled from the same templates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Route:
    path: str  # a Starlette path template: `{name}` is one segment, `{name:path}` the rest of the path
    handler: str  # the name of the HTTP adapter's method
    methods: tuple[str, ...]
    name: str  # the operation's name in OpenAPI (openapi.ROUTE_DOCS) and in metrics
    fast: bool = False  # hot enough to skip the router


ROUTES: tuple[Route, ...] = (
    Route("/v1.0/state/{storeName}", "save", ("POST", "PUT"), "save", fast=True),
    Route("/v1.0/state/{storeName}/bulk", "bulk_get", ("POST", "PUT"), "bulk", fast=True),
    Route("/v1.0/state/{storeName}/transaction", "transaction", ("POST", "PUT"), "transaction", fast=True),
    Route("/v1.0/state/{storeName}/{key:path}", "get", ("GET",), "get", fast=True),
    Route("/v1.0/state/{storeName}/{key:path}", "delete", ("DELETE",), "delete", fast=True),
    Route("/v1.0-alpha1/state/{storeName}/query", "query", ("POST", "PUT"), "query"),
    Route("/v1.0/healthz", "healthz", ("GET",), "healthz"),
    Route("/v1.0/healthz/outbound", "outbound", ("GET",), "outbound"),
    Route("/livez", "livez", ("GET",), "livez"),
    Route("/v1.0/metadata", "metadata", ("GET",), "metadata"),
    Route("/v1.0/metadata/{key}", "set_metadata", ("PUT",), "set_metadata"),
)

# A path parameter of a route template: `{name}`, or `{name:path}` for one that may hold slashes.
_PARAM = re.compile(r"\{(\w+)(:path)?\}")


def path_params(template: str) -> list[str]:
    """The names of a route template's path parameters, in order."""
    return [m.group(1) for m in _PARAM.finditer(template)]


def plain_template(template: str) -> str:
    """The template without its `:path` converters, as OpenAPI writes a path."""
    return _PARAM.sub(r"{\1}", template)


def _pattern(template: str) -> str:
    out, last = [], 0
    for m in _PARAM.finditer(template):
        out.append(re.escape(template[last : m.start()]))
        out.append(".+" if m.group(2) else "[^/]+")
        last = m.end()
    out.append(re.escape(template[last:]))
    return "".join(out)


class FastMatcher:
    """Which fast route a method and cleaned path select, in table order (first match wins)."""

    def __init__(self, routes: Iterable[Route]) -> None:
        by_method: dict[str, list[Route]] = {}
        for route in routes:
            if route.fast:
                for method in route.methods:
                    by_method.setdefault(method, []).append(route)
        self._compiled: dict[str, tuple[re.Pattern[str], list[str]]] = {}
        for method, listed in by_method.items():
            groups = "|".join(f"({_pattern(r.path)})" for r in listed)
            self._compiled[method] = (re.compile(f"(?:{groups})\\Z"), [r.handler for r in listed])

    def match(self, method: str, path: str) -> str | None:
        """The handler name of the route, or None when the router should answer."""
        entry = self._compiled.get(method)
        if entry is None:
            return None
        found = entry[0].match(path)
        if found is None:
            return None
        return entry[1][found.lastindex - 1]  # type: ignore[operator]
