"""Names and labels of the objects the operator creates for a Component."""

from __future__ import annotations

import hashlib
import re

GROUP = "dapr.io"
VERSION = "v1alpha1"
PLURAL = "components"
KIND = "Component"
API_VERSION = f"{GROUP}/{VERSION}"

MANAGER = "statestore-operator"  # the field manager and the managed-by label
ANNOTATION_PREFIX = "statestore.dapr.io"
CONFIG_HASH_ANNOTATION = f"{ANNOTATION_PREFIX}/config-hash"
APP_ID_ANNOTATION = f"{ANNOTATION_PREFIX}/app-id"
COMPONENT_ANNOTATION = f"{ANNOTATION_PREFIX}/component"

CONTAINER = "statestore"  # the state API container's name
HTTP_PORT = 3500
GRPC_PORT = 50001
METRICS_PORT = 9090
_MAX_LABEL = 63


def _shorten(text: str, limit: int) -> str:
    """`text`, or a prefix of it plus a hash of all of it when it is too long (names stay unique)."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[: limit - 9].rstrip('-._')}-{digest}"


def child_name(component: str) -> str:
    """The name of the ConfigMap, Deployment and Service of a Component.

    A DNS-1035 label (Services need one): dots become dashes, at most 63 characters.
    """
    base = "statestore-" + re.sub(r"[^a-z0-9-]", "-", component.lower())
    return _shorten(base, _MAX_LABEL).rstrip("-")


def label_value(text: str) -> str:
    return _shorten(text, _MAX_LABEL)


def selector_labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "statestore",
        "app.kubernetes.io/instance": label_value(component),
    }


def labels(component: str) -> dict[str, str]:
    return {
        **selector_labels(component),
        "app.kubernetes.io/component": "state-api",
        "app.kubernetes.io/managed-by": MANAGER,
        "app.kubernetes.io/part-of": "dapr",
    }


def endpoint(component: str, namespace: str) -> str:
    """The in-cluster URL of a Component's state HTTP API (an SDK's DAPR_HTTP_ENDPOINT)."""
    return f"http://{child_name(component)}.{namespace}.svc:{HTTP_PORT}"


def grpc_endpoint(component: str, namespace: str) -> str:
    """The in-cluster address of a Component's gRPC API (an SDK's DAPR_GRPC_ENDPOINT)."""
    return f"{child_name(component)}.{namespace}.svc:{GRPC_PORT}"
