"""Dapr's error responses: codes, statuses, messages and the rich `details` of each.

Every error a route can return is built here, so the wire format lives in one place.
"""

from __future__ import annotations

from typing import Any

import orjson

_TYPE = "type.googleapis.com/google.rpc."
HELP_URL = "https://docs.dapr.io/reference/components-reference/supported-state-stores/"


class ApiError(Exception):
    """An error response; routes raise it and one exception handler renders it."""

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> bytes:
        payload: dict[str, Any] = {"errorCode": self.code, "message": self.message}
        if self.details:
            payload["details"] = self.details
        return orjson.dumps(payload)


def _error_info(reason: str, metadata: dict[str, str] | None) -> dict[str, Any]:
    return {"@type": _TYPE + "ErrorInfo", "reason": reason, "domain": "dapr.io", "metadata": metadata}


def _resource(store: str) -> dict[str, Any]:
    return {
        "@type": _TYPE + "ResourceInfo",
        "resource_type": "state",
        "resource_name": store,
        "owner": "",
        "description": "",
    }


def store_not_configured(store: str, app_id: str, for_query: bool = False) -> ApiError:
    meta = None if for_query else {"appID": app_id}
    return ApiError(
        500,
        "ERR_STATE_STORE_NOT_CONFIGURED",
        f"state store {store} is not configured",
        [_error_info("DAPR_STATE_NOT_CONFIGURED", meta)],
    )


def store_not_found(store: str, app_id: str, for_query: bool = False) -> ApiError:
    meta = None if for_query else {"appID": app_id}
    return ApiError(
        400,
        "ERR_STATE_STORE_NOT_FOUND",
        f"state store {store} is not found",
        [_error_info("DAPR_STATE_NOT_FOUND", meta)],
    )


def illegal_key(store: str, key: str) -> ApiError:
    text = f"input key/keyPrefix '{key}' can't contain '||'"
    message = f"api error: code = InvalidArgument desc = {text}"
    return ApiError(
        400,
        "ERR_MALFORMED_REQUEST",
        message,
        [
            {"@type": _TYPE + "BadRequest", "field_violations": [{"field": key, "description": message}]},
            _resource(store),
            _error_info("DAPR_STATE_ILLEGAL_KEY", None),
        ],
    )


def malformed(message: str) -> ApiError:
    return ApiError(400, "ERR_MALFORMED_REQUEST", message)


def body_read(detail: str) -> ApiError:
    return ApiError(400, "ERR_BODY_READ", f"failed to read request body: {detail}")


def state_get(store: str, key: str, detail: str) -> ApiError:
    return ApiError(500, "ERR_STATE_GET", f"fail to get {key} from state store {store}: {detail}")


def state_save(store: str, status: int, detail: str) -> ApiError:
    return ApiError(status, "ERR_STATE_SAVE", f"failed saving state in state store {store}: {detail}")


def state_delete(key: str, status: int, detail: str) -> ApiError:
    return ApiError(status, "ERR_STATE_DELETE", f"failed deleting state with key {key}: {detail}")


def bulk_get(detail: str) -> ApiError:
    return ApiError(500, "ERR_STATE_BULK_GET", detail)


def transactions_not_supported(store: str) -> ApiError:
    return ApiError(
        500,
        "ERR_STATE_STORE_NOT_SUPPORTED",
        f"state store {store} doesn't support transactions",
        [
            {
                "@type": _TYPE + "Help",
                "links": [
                    {
                        "description": "Check the list of state stores and the features they support",
                        "url": HELP_URL,
                    }
                ],
            },
            _resource(store),
            _error_info("DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED", None),
        ],
    )


def query_not_supported(store: str) -> ApiError:
    return ApiError(
        500,
        "ERR_STATE_STORE_NOT_SUPPORTED",
        "state store does not support querying",
        [_resource(store), _error_info("DAPR_STATE_QUERYING_NOT_SUPPORTED", None)],
    )


def operation_not_supported(operation: str) -> ApiError:
    return ApiError(400, "ERR_NOT_SUPPORTED_STATE_OPERATION", f"operation type {operation} not supported")


def transaction(detail: str) -> ApiError:
    return ApiError(500, "ERR_STATE_TRANSACTION", f"error while executing state transaction: {detail}")


def query_failed(store: str, detail: str) -> ApiError:
    return ApiError(
        500,
        "ERR_STATE_QUERY",
        f"state store {store} query failed: {detail}",
        [_resource(store), _error_info("DAPR_STATE_QUERY_FAILED", None)],
    )


def not_ready(targets: list[str]) -> ApiError:
    return ApiError(500, "ERR_HEALTH_NOT_READY", f"dapr is not ready: [{' '.join(targets)}]")


def outbound_not_ready() -> ApiError:
    return ApiError(500, "ERR_OUTBOUND_HEALTH_NOT_READY", "dapr outbound is not ready")


def app_id_mismatch() -> ApiError:
    return ApiError(500, "ERR_HEALTH_APPID_NOT_MATCH", "dapr app-id does not match")
