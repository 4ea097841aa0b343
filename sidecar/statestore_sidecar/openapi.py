"""The OpenAPI document of the routes, and the page that shows it.

Handlers decode bodies themselves, so the schemas live here, written out; `document` assembles them
with the route table (`routes.ROUTES`) into an OpenAPI 3.1 document.
"""

from __future__ import annotations

from typing import Any

from .routes import ROUTES, path_params, plain_template

_ERROR = {
    "description": "Dapr error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["errorCode", "message"],
                "properties": {
                    "errorCode": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "array", "items": {"type": "object"}},
                },
            }
        }
    },
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_OPTIONS = {
    "type": "object",
    "properties": {
        "concurrency": {"type": "string", "enum": ["first-write", "last-write"]},
        "consistency": {"type": "string", "enum": ["strong", "eventual"]},
    },
}
_SET_ITEM = {
    "type": "object",
    "required": ["key"],
    "properties": {
        "key": {"type": "string", "minLength": 1},
        "value": {},
        "etag": {"type": "string"},
        "metadata": _STRING_MAP,
        "options": _OPTIONS,
    },
}
_METADATA_PARAM = {
    "name": "metadata",
    "in": "query",
    "required": False,
    "style": "deepObject",
    "explode": True,
    "schema": _STRING_MAP,
    "description": "metadata.<name>=<value> parameters, e.g. metadata.ttlInSeconds=60",
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _responses(**codes: str) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for code, text in codes.items():
        status = int(code.removeprefix("s"))
        out[status] = {**_ERROR, "description": text} if status >= 400 else {"description": text}
    return out


ROUTE_DOCS: dict[str, dict[str, Any]] = {
    "save": {
        "summary": "Save state items",
        "extra": {**_body({"type": "array", "items": _SET_ITEM}), "parameters": [_METADATA_PARAM]},
        "responses": _responses(
            s204="Saved", s400="Malformed request", s409="ETag mismatch", s500="Store failure"
        ),
    },
    "get": {
        "summary": "Get a state item (body: the stored JSON value; header ETag)",
        "extra": {
            "parameters": [
                {
                    "name": "consistency",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["strong", "eventual"]},
                },
                _METADATA_PARAM,
            ]
        },
        "responses": _responses(
            s200="The value", s204="No such key", s400="Malformed key", s500="Store failure"
        ),
    },
    "bulk": {
        "summary": "Get several state items",
        "extra": _body(
            {
                "type": "object",
                "properties": {
                    "keys": {"type": "array", "items": {"type": "string"}},
                    "parallelism": {"type": "integer"},
                    "metadata": _STRING_MAP,
                },
            }
        ),
        "responses": _responses(
            s200="One entry per key: key, data, etag, metadata",
            s400="Malformed request",
            s500="Store failure",
        ),
    },
    "delete": {
        "summary": "Delete a state item (If-Match: etag)",
        "extra": {
            "parameters": [
                {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"}},
                {
                    "name": "concurrency",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["first-write", "last-write"]},
                },
                {
                    "name": "consistency",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["strong", "eventual"]},
                },
            ]
        },
        "responses": _responses(
            s204="Deleted", s400="Malformed key", s409="ETag mismatch", s500="Store failure"
        ),
    },
    "transaction": {
        "summary": "Apply upserts and deletes atomically, in order",
        "extra": {
            **_body(
                {
                    "type": "object",
                    "properties": {
                        "operations": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["operation", "request"],
                                "properties": {
                                    "operation": {"type": "string", "enum": ["upsert", "delete"]},
                                    "request": _SET_ITEM,
                                },
                            },
                        },
                        "metadata": _STRING_MAP,
                    },
                }
            ),
            "parameters": [_METADATA_PARAM],
        },
        "responses": _responses(s204="Applied", s400="Malformed request", s500="Not applied"),
    },
    "query": {
        "summary": "Query state items (alpha)",
        "extra": _body(
            {
                "type": "object",
                "properties": {
                    "filter": {"type": "object"},
                    "sort": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["key"],
                            "properties": {
                                "key": {"type": "string"},
                                "order": {"type": "string", "enum": ["ASC", "DESC"]},
                            },
                        },
                    },
                    "page": {
                        "type": "object",
                        "properties": {
                            "limit": {"type": "integer", "minimum": 0},
                            "token": {"type": "string"},
                        },
                    },
                },
            }
        ),
        "responses": _responses(
            s200="Results and the next page token",
            s204="No results",
            s400="Body unreadable",
            s500="Bad query or store failure",
        ),
    },
    "healthz": {
        "summary": "Readiness: every store's backend answers",
        "responses": _responses(s204="Ready", s500="Not ready"),
    },
    "outbound": {"summary": "Outbound readiness", "responses": _responses(s204="Ready", s500="Not ready")},
    "livez": {
        "summary": "Liveness of the server process (not of the backends)",
        "responses": _responses(s204="Alive"),
    },
    "metadata": {
        "summary": "The server's id, stores and their capabilities",
        "responses": _responses(s200="Metadata"),
    },
    "set_metadata": {
        "summary": "Set an extended metadata attribute",
        "extra": {"requestBody": {"content": {"text/plain": {"schema": {"type": "string"}}}}},
        "responses": _responses(s204="Set"),
    },
}


def document(title: str, version: str, description: str) -> dict[str, Any]:
    """Every route of `routes.ROUTES`, one operation per method, with its path parameters."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        doc = ROUTE_DOCS[route.name]
        extra = doc.get("extra", {})
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in path_params(route.path)
        ]
        for method in route.methods:
            operation: dict[str, Any] = {
                "summary": doc["summary"],
                "operationId": f"{route.name}_{method.lower()}",
                **{k: v for k, v in extra.items() if k != "parameters"},
                "responses": {str(code): text for code, text in doc["responses"].items()},
            }
            parameters = params + extra.get("parameters", [])
            if parameters:
                operation["parameters"] = parameters
            paths.setdefault(plain_template(route.path), {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "description": description, "version": version},
        "paths": paths,
    }


def viewer_page(title: str, document_url: str) -> str:
    """Swagger UI for the document (its script and style load from the jsDelivr CDN)."""
    dist = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5"
    return f"""<!DOCTYPE html>
<html>
<head>
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link type="text/css" rel="stylesheet" href="{dist}/swagger-ui.css">
<title>{title} - Swagger UI</title>
</head>
<body>
<div id="swagger-ui"></div>
<script src="{dist}/swagger-ui-bundle.js"></script>
<script>
SwaggerUIBundle({{url: "{document_url}", dom_id: "#swagger-ui", deepLinking: true}})
</script>
</body>
</html>
"""
