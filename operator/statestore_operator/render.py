"""The objects that serve one Component: a ConfigMap, a Deployment and a Service, plus a NetworkPolicy
when it has scopes and a Secret when its API token is generated (pure functions).

Secret values never enter the ConfigMap: `secretKeyRef` items stay as they are and the pods get each
referenced key (and the API token) through `env.valueFrom.secretKeyRef` under the variable the server
reads it from.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from statestore_sidecar.validation import FINISH_SECONDS, Component, Persistence, secret_env_var

from . import access, naming, pluggable, quantities, rotation, scaling

COMPONENTS_DIR = "/etc/statestore/components"
DATA_DIR = "/var/lib/statestore"
COMPONENT_FILE = "component.yaml"
CONTAINER = naming.CONTAINER
# After the drain: time for the requests in flight to finish and the stores to close, before SIGKILL.
STOP_SECONDS = int(FINISH_SECONDS) + 5


@dataclass(frozen=True, slots=True)
class PodSettings:
    """What the operator's flags decide for every state API pod."""

    image: str
    image_pull_policy: str = "IfNotPresent"
    log_level: str = "info"
    # On SIGTERM the server fails readiness and keeps serving this long (--drain-seconds), while
    # clients and proxies learn that the pod is going; the grace period covers that and the stop.
    drain_seconds: int = 5
    # State API replicas of a networked store without a replicas annotation (--default-replicas).
    default_replicas: int = 1
    resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        }
    )


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": naming.API_VERSION,
        "kind": naming.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(body: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    name = body["metadata"]["name"]
    return {
        "name": naming.child_name(name),
        "namespace": body["metadata"]["namespace"],
        "labels": naming.labels(name),
        "ownerReferences": [owner_reference(body)],
        **extra,
    }


def app_id(body: Mapping[str, Any]) -> str:
    """The app id the pods serve with (the `appid` key prefix): annotation, single scope, or name."""
    annotations = body["metadata"].get("annotations") or {}
    if chosen := annotations.get(naming.APP_ID_ANNOTATION):
        return str(chosen)
    scopes = body.get("scopes") or []
    if isinstance(scopes, list) and len(scopes) == 1:
        return str(scopes[0])
    return str(body["metadata"]["name"])


def component_document(body: Mapping[str, Any]) -> dict[str, Any]:
    """The Component as the server reads it from its folder.

    `scopes` is left out: the operator already decided that these pods serve the Component, and the
    server would otherwise skip it when the pods' app id is not among them. Of the annotations, only
    Dapr's component container is kept.
    """
    meta = body["metadata"]
    metadata: dict[str, Any] = {"name": meta["name"], "namespace": meta["namespace"]}
    if pluggable.declared(body):
        # The server waits for the socket of a Component whose container is named (it may start later).
        metadata["annotations"] = {pluggable.ANNOTATION: meta["annotations"][pluggable.ANNOTATION]}
    return {
        "apiVersion": naming.API_VERSION,
        "kind": naming.KIND,
        "metadata": metadata,
        "spec": body.get("spec") or {},
        **({"auth": body["auth"]} if body.get("auth") else {}),
    }


def config_map(body: Mapping[str, Any]) -> dict[str, Any]:
    text = yaml.safe_dump(component_document(body), sort_keys=False, default_flow_style=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(body),
        "data": {COMPONENT_FILE: text},
    }


def _secret_env(component: Component) -> list[dict[str, Any]]:
    seen: set[str] = set()
    env: list[dict[str, Any]] = []
    for item in component.metadata:
        ref = item.secret
        if ref is None:
            continue
        var = secret_env_var(ref.name, ref.key)
        if var in seen:
            continue
        seen.add(var)
        selector: dict[str, Any] = {"name": ref.name, "key": ref.key}
        if item.value not in (None, "") or item.env is not None:
            # As daprd: the Secret's value replaces the literal one (or the envRef) when the key
            # exists, and the pods start without it (keeping the literal) when it does not.
            selector["optional"] = True
        env.append({"name": var, "valueFrom": {"secretKeyRef": selector}})
    return env


def _uses_local_files(component: Component) -> bool:
    return scaling.persistence_of(component) is Persistence.LOCAL_FILES


def _token_env(token: access.TokenSource | None) -> list[dict[str, Any]]:
    if token is None:
        return []
    ref = {"name": token.secret, "key": token.key}
    return [{"name": access.TOKEN_ENV, "valueFrom": {"secretKeyRef": ref}}]


def config_hash(
    cm: Mapping[str, Any], env: list[dict[str, Any]], app: str, token_secret_uid: str = ""
) -> str:
    """A digest of what the pods read at start-up; a change in it rolls the Deployment.

    `token_secret_uid` is the uid of a generated token Secret: deleting that Secret (to rotate the token)
    makes the operator create a new one, and the new uid rolls the pods onto the new token.
    """
    fields: dict[str, Any] = {"data": cm.get("data"), "env": env, "appId": app}
    if token_secret_uid:
        fields["tokenSecretUid"] = token_secret_uid
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def deployment(
    body: Mapping[str, Any],
    component: Component,
    pods: PodSettings,
    *,
    replicas: int = 1,
    token: access.TokenSource | None = None,
    token_secret_uid: str = "",
    secrets: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """The Deployment; `secrets` (the referenced Secrets as read, by name) feeds the secrets hash."""
    name = body["metadata"]["name"]
    app = app_id(body)
    secret_env = [*_secret_env(component), *_token_env(token)]
    env = [
        {
            "name": "NAMESPACE",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}},
        },
        *secret_env,
    ]
    digest = config_hash(config_map(body), secret_env, app, token_secret_uid)
    annotations = {naming.CONFIG_HASH_ANNOTATION: digest}
    if secrets_hash := rotation.secrets_digest(secret_env, secrets or {}):
        annotations[rotation.SECRETS_HASH_ANNOTATION] = secrets_hash
    mounts: list[dict[str, Any]] = [
        {"name": "components", "mountPath": COMPONENTS_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "components", "configMap": {"name": naming.child_name(name)}},
        {"name": "tmp", "emptyDir": {}},
    ]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": pods.image,
        "imagePullPolicy": pods.image_pull_policy,
        "command": ["statestore-sidecar"],
        "args": [
            "--resources-path",
            COMPONENTS_DIR,
            "--app-id",
            app,
            "--dapr-http-port",
            str(naming.HTTP_PORT),
            "--dapr-grpc-port",
            str(naming.GRPC_PORT),
            "--metrics-port",
            str(naming.METRICS_PORT),
            "--log-level",
            pods.log_level,
            "--log-as-json",
            "--drain-seconds",
            str(pods.drain_seconds),
        ],
        "env": env,
        "ports": [
            {"name": "http", "containerPort": naming.HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": naming.GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": naming.METRICS_PORT, "protocol": "TCP"},
        ],
        # Ready only while the backend answers; alive as long as the process serves HTTP.
        "readinessProbe": {
            "httpGet": {"path": "/v1.0/healthz", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/livez", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": {k: dict(v) for k, v in pods.resources.items()},
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    if _uses_local_files(component):
        # Relative SQLite paths (and file: URIs) resolve against the working directory: make it writable.
        # An emptyDir here; scaling.shape() puts the Component's claim in its place.
        mounts.append({"name": scaling.DATA_VOLUME, "mountPath": DATA_DIR})
        volumes.append({"name": scaling.DATA_VOLUME, "emptyDir": {}})
        container["workingDir"] = DATA_DIR
    containers = [container]
    if component.pluggable:
        # Dapr's layout: the component's container beside ours, the sockets folder an emptyDir both
        # mount (inside our /tmp mount, listed after it) and both are told of.
        plug = pluggable.pod_container(pluggable.container_of(body))
        env.extend(pluggable.socket_env())
        mounts.append(pluggable.socket_mount())
        volumes.append(pluggable.socket_volume())
        volumes.extend(pluggable.extra_volumes(plug, [v["name"] for v in volumes]))
        containers.append(plug)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(body),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": naming.selector_labels(name)},
            "template": {
                "metadata": {
                    "labels": naming.labels(name),
                    "annotations": annotations,
                },
                "spec": {
                    "terminationGracePeriodSeconds": pods.drain_seconds + STOP_SECONDS,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": containers,
                    "volumes": volumes,
                },
            },
        },
    }


def service(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(body),
        "spec": {
            "selector": naming.selector_labels(body["metadata"]["name"]),
            "ports": [
                {"name": "http", "port": naming.HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "grpc",
                    "port": naming.GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
            ],
        },
    }


def token_secret(body: Mapping[str, Any], token: str) -> dict[str, Any]:
    """The Secret holding a generated API token (created once; never re-rendered into an update)."""
    metadata = _metadata(body)
    metadata["name"] = access.token_secret_name(body["metadata"]["name"])
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {access.TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def network_policy(
    body: Mapping[str, Any], app_id_label: str = access.DEFAULT_APP_ID_LABEL
) -> dict[str, Any] | None:
    """Ingress to the API ports (HTTP and gRPC) of a scoped Component's pods, only from pods of its
    scopes (None: unscoped).

    Same namespace only (a podSelector without a namespaceSelector). The metrics port is not admitted:
    whoever scrapes it adds a NetworkPolicy of their own (policies are additive).
    """
    apps = access.scopes(body)
    if not apps:
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(body),
        "spec": {
            "podSelector": {"matchLabels": naming.selector_labels(body["metadata"]["name"])},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "podSelector": {
                                "matchExpressions": [{"key": app_id_label, "operator": "In", "values": apps}]
                            }
                        }
                    ],
                    "ports": [
                        {"protocol": "TCP", "port": naming.HTTP_PORT},
                        {"protocol": "TCP", "port": naming.GRPC_PORT},
                    ],
                }
            ],
        },
    }


def is_subset(desired: Any, actual: Any, *, quantity: bool = False) -> bool:
    """Whether every field we set has the same value on the server (which adds defaults of its own).

    Lists must match in length, so an item we dropped counts as a difference. Under `resources`, keys
    must match too (a dropped limit is a difference) and values are quantities, compared by value (the
    server writes them in canonical form).
    """
    if isinstance(desired, Mapping):
        if quantity and isinstance(actual, Mapping) and set(desired) != set(actual):
            return False
        return isinstance(actual, Mapping) and all(
            key in actual and is_subset(value, actual[key], quantity=quantity or key == "resources")
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(is_subset(d, a, quantity=quantity) for d, a in zip(desired, actual, strict=True))
        )
    if quantity and desired != actual:
        return quantities.same(desired, actual)
    return bool(desired == actual)
