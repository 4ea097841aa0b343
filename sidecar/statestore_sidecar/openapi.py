"""OpenAPI descriptions of the routes. Handlers decode bodies themselves, so the schemas live here."""

from __future__ import annotations

from typing import Any

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
