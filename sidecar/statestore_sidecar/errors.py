"""Dapr's errors: for each kind, its HTTP status and body, its gRPC status and its rich details.

Every error an operation can return is built here, in both transports' forms as daprd gives them,
so the wire format lives in one place. `details` are google.rpc messages in their JSON form; the
gRPC adapter turns them into `google.rpc.Status` details.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from .stores.base import EtagMismatch, StoreError

_TYPE = "type.googleapis.com/google.rpc."
HELP_URL = "https://docs.dapr.io/reference/components-reference/supported-state-stores/"


class ApiError(Exception):
    """An error response; operations raise it and each transport renders its own form.

    `grpc` is the name of the gRPC status code; `grpc_message` and `grpc_details` are given where
    daprd's gRPC API words the error differently from its HTTP API.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        *,
        grpc: str,
        grpc_message: str | None = None,
        grpc_details: list[dict[str, Any]] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.grpc = grpc
        self.grpc_message = message if grpc_message is None else grpc_message
        self.grpc_details = details if grpc_details is None else grpc_details

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
        grpc="FAILED_PRECONDITION",
        # daprd's gRPC lookup passes no app id, so its ErrorInfo carries no metadata.
        grpc_details=[_error_info("DAPR_STATE_NOT_CONFIGURED", None)],
    )


def store_not_found(store: str, app_id: str, for_query: bool = False) -> ApiError:
    meta = None if for_query else {"appID": app_id}
    return ApiError(
        400,
        "ERR_STATE_STORE_NOT_FOUND",
        f"state store {store} is not found",
        [_error_info("DAPR_STATE_NOT_FOUND", meta)],
        grpc="INVALID_ARGUMENT",
        grpc_details=[_error_info("DAPR_STATE_NOT_FOUND", None)],
    )


def illegal_key(store: str, key: str) -> ApiError:
    text = f"input key/keyPrefix '{key}' can't contain '||'"
    # daprd's HTTP API wraps the message once more; its gRPC API sends it as built.
    message = f"api error: code = InvalidArgument desc = {text}"

    def details(description: str) -> list[dict[str, Any]]:
        return [
            {"@type": _TYPE + "BadRequest", "field_violations": [{"field": key, "description": description}]},
            _resource(store),
            _error_info("DAPR_STATE_ILLEGAL_KEY", None),
        ]

    return ApiError(
        400,
        "ERR_MALFORMED_REQUEST",
        message,
        details(message),
        grpc="INVALID_ARGUMENT",
        grpc_message=text,
        grpc_details=details(text),
    )


def empty_key() -> ApiError:
    return ApiError(
        400,
        "ERR_MALFORMED_REQUEST",
        '"key" is a required field',
        grpc="INVALID_ARGUMENT",
        grpc_message="state key cannot be empty",
    )


def malformed(message: str) -> ApiError:
    return ApiError(400, "ERR_MALFORMED_REQUEST", message, grpc="INVALID_ARGUMENT")


def body_read(detail: str) -> ApiError:
    return ApiError(400, "ERR_BODY_READ", f"failed to read request body: {detail}", grpc="INVALID_ARGUMENT")


def describe(exc: BaseException) -> str:
    """A store failure as daprd words it inside its error messages."""
    if isinstance(exc, EtagMismatch):
        return f"possible etag mismatch. error from state store: {exc}"
    return str(exc)


def _write_codes(failures: Sequence[StoreError]) -> tuple[int, str]:
    """The HTTP status and gRPC code of a write that failed for some of its items.

    HTTP: 409 only when every failure is an etag mismatch, else 500. gRPC: daprd looks for an etag
    failure anywhere in the joined error, so ABORTED when there is one. (daprd's 400 and
    INVALID_ARGUMENT are for etags a store cannot parse; every store here compares them as strings.)
    """
    mismatches = sum(isinstance(f, EtagMismatch) for f in failures)
    if not mismatches:
        return 500, "INTERNAL"
    return (409 if mismatches == len(failures) else 500), "ABORTED"


def state_get(store: str, key: str, detail: str) -> ApiError:
    return ApiError(
        500, "ERR_STATE_GET", f"fail to get {key} from state store {store}: {detail}", grpc="INTERNAL"
    )


def state_save(store: str, failures: Sequence[StoreError]) -> ApiError:
    status, grpc = _write_codes(failures)
    detail = "\n".join(describe(f) for f in failures)
    return ApiError(
        status, "ERR_STATE_SAVE", f"failed saving state in state store {store}: {detail}", grpc=grpc
    )


def state_delete(key: str, failure: StoreError) -> ApiError:
    status, grpc = _write_codes([failure])
    return ApiError(
        status,
        "ERR_STATE_DELETE",
        f"failed deleting state with key {key}: {describe(failure)}",
        grpc=grpc,
    )


def state_delete_bulk(store: str, failures: Sequence[StoreError]) -> ApiError:
    status, grpc = _write_codes(failures)
    detail = "\n".join(describe(f) for f in failures)
    return ApiError(
        status, "ERR_STATE_BULK_DELETE", f"failed deleting state in state store {store}: {detail}", grpc=grpc
    )


def bulk_get(detail: str) -> ApiError:
    # daprd's gRPC API returns the store's own error, which gRPC reports as UNKNOWN.
    return ApiError(500, "ERR_STATE_BULK_GET", detail, grpc="UNKNOWN")


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
        grpc="UNIMPLEMENTED",
    )


def query_not_supported(store: str) -> ApiError:
    return ApiError(
        500,
        "ERR_STATE_STORE_NOT_SUPPORTED",
        "state store does not support querying",
        [_resource(store), _error_info("DAPR_STATE_QUERYING_NOT_SUPPORTED", None)],
        grpc="INTERNAL",
    )


def operation_not_supported(operation: str) -> ApiError:
    return ApiError(
        400,
        "ERR_NOT_SUPPORTED_STATE_OPERATION",
        f"operation type {operation} not supported",
        grpc="UNIMPLEMENTED",
    )


def transaction(detail: str) -> ApiError:
    return ApiError(
        500, "ERR_STATE_TRANSACTION", f"error while executing state transaction: {detail}", grpc="INTERNAL"
    )


def query_failed(store: str, detail: str) -> ApiError:
    return ApiError(
        500,
        "ERR_STATE_QUERY",
        f"state store {store} query failed: {detail}",
        [_resource(store), _error_info("DAPR_STATE_QUERY_FAILED", None)],
        grpc="INTERNAL",
    )


def not_ready(targets: list[str]) -> ApiError:
    return ApiError(
        500, "ERR_HEALTH_NOT_READY", f"dapr is not ready: [{' '.join(targets)}]", grpc="UNAVAILABLE"
    )


def outbound_not_ready() -> ApiError:
    return ApiError(500, "ERR_OUTBOUND_HEALTH_NOT_READY", "dapr outbound is not ready", grpc="UNAVAILABLE")


def app_id_mismatch() -> ApiError:
    return ApiError(500, "ERR_HEALTH_APPID_NOT_MATCH", "dapr app-id does not match", grpc="INTERNAL")


def value_not_json(detail: str) -> ApiError:
    """A gRPC value whose `contentType` says JSON but is not: daprd returns the decoder's error."""
    return ApiError(400, "ERR_MALFORMED_REQUEST", detail, grpc="UNKNOWN")
