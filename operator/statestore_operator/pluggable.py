"""A pluggable Component's container, as Dapr declares it on Kubernetes (pure functions).

The `dapr.io/component-container` annotation holds a Kubernetes container spec as JSON. Dapr's sidecar
injector adds that container to the application's pod, an `emptyDir` volume shared by it and daprd at
the sockets folder, and `DAPR_COMPONENT_SOCKETS_FOLDER` on both; the operator does the same in the
Deployment it renders, and sets `DAPR_COMPONENTS_SOCKETS_FOLDER` too, the name daprd (and our server)
reads. As Dapr: the container's name defaults to the Component's, and volume mounts of volumes the pod
does not have get an `emptyDir` each. Unlike Dapr (which ignores a container it cannot decode), a bad
annotation is refused with the reason.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from statestore_sidecar.validation import COMPONENT_CONTAINER_ANNOTATION

from . import naming

ANNOTATION = COMPONENT_CONTAINER_ANNOTATION
# Dapr's pod annotation: inject the containers of the pluggable Components the app uses.
INJECT_ANNOTATION = "dapr.io/inject-pluggable-components"
SOCKET_VOLUME = "dapr-components-unix-domain-socket"  # Dapr's name for it
SOCKET_FOLDER = "/tmp/dapr-components-sockets"  # Dapr's default
# The injector's name (read by the components SDKs) and daprd's (read by daprd and by our server).
SOCKET_ENV = ("DAPR_COMPONENT_SOCKETS_FOLDER", "DAPR_COMPONENTS_SOCKETS_FOLDER")
# What our own container uses in the pod: the pluggable container must not take these.
RESERVED_PORTS = {"http": naming.HTTP_PORT, "grpc": naming.GRPC_PORT, "metrics": naming.METRICS_PORT}
RESERVED_VOLUMES = frozenset({"components", "tmp", "data", SOCKET_VOLUME})

# The fields of a Kubernetes core/v1 Container, by the JSON type each must have.
_LISTS = ("command", "args", "ports", "env", "envFrom", "volumeMounts", "volumeDevices", "resizePolicy")
_LISTS_OF_OBJECTS = ("ports", "env", "envFrom", "volumeMounts", "volumeDevices", "resizePolicy")
_OBJECTS = (
    "resources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "securityContext",
)
_STRINGS = (
    "name",
    "image",
    "workingDir",
    "imagePullPolicy",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "restartPolicy",
)
_BOOLS = ("stdin", "stdinOnce", "tty")
_FIELDS = frozenset((*_LISTS, *_OBJECTS, *_STRINGS, *_BOOLS, "restartPolicyRules"))
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_PORT_NAME = re.compile(r"(?=.*[a-z])[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?")


class ContainerError(ValueError):
    """The annotation is not a container the operator can run; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(f"annotation {ANNOTATION!r}: {message}")


def declared(body: Mapping[str, Any]) -> bool:
    """Whether the Component names a component container (a non-empty annotation)."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ANNOTATION)
    return isinstance(value, str) and bool(value.strip())


def _check_ports(ports: list[Mapping[str, Any]]) -> None:
    taken = {number: name for name, number in RESERVED_PORTS.items()}
    for index, port in enumerate(ports):
        where = f"ports[{index}]"
        number = port.get("containerPort")
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
            raise ContainerError(f"{where}.containerPort must be a port number (1-65535), got {number!r}")
        if number in taken:
            raise ContainerError(
                f"{where}: port {number} is the state API's {taken[number]!r} port in the same pod; "
                "choose another"
            )
        name = port.get("name")
        if name is not None and (not isinstance(name, str) or not _PORT_NAME.fullmatch(name)):
            raise ContainerError(f"{where}.name {name!r} is not a port name (an IANA_SVC_NAME)")
        if name in RESERVED_PORTS:
            raise ContainerError(f"{where}: port name {name!r} is the state API's; choose another")


def _check_env(env: list[Mapping[str, Any]]) -> None:
    for index, item in enumerate(env):
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ContainerError(f"env[{index}].name is required")
        if name in SOCKET_ENV:
            raise ContainerError(
                f"env[{index}]: {name} is set by the operator (to {SOCKET_FOLDER}, the shared sockets folder)"
            )


def _check_mounts(mounts: list[Mapping[str, Any]]) -> None:
    for index, mount in enumerate(mounts):
        name, path = mount.get("name"), mount.get("mountPath")
        if not isinstance(name, str) or not _DNS_LABEL.fullmatch(name):
            raise ContainerError(
                f"volumeMounts[{index}].name {name!r} is not a volume name (a DNS-1123 label)"
            )
        if not isinstance(path, str) or not path.startswith("/"):
            raise ContainerError(f"volumeMounts[{index}].mountPath {path!r} is not an absolute path")
        if name in RESERVED_VOLUMES:
            raise ContainerError(
                f"volumeMounts[{index}]: volume {name!r} is the state API's; the sockets folder is "
                "mounted by the operator"
            )
        if path.rstrip("/") == SOCKET_FOLDER:
            raise ContainerError(
                f"volumeMounts[{index}]: {SOCKET_FOLDER} is the sockets folder, mounted by the operator"
            )


def container_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The container the annotation declares, checked, its name defaulted; ContainerError says why not."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    text = str(annotations.get(ANNOTATION) or "")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContainerError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(spec, dict):
        raise ContainerError(f"must be a JSON object (a container spec), got {type(spec).__name__}")
    unknown = sorted(set(spec) - _FIELDS)
    if unknown:
        raise ContainerError(f"unknown container field(s) {', '.join(map(repr, unknown))}")
    for key in _STRINGS:
        if key in spec and not isinstance(spec[key], str):
            raise ContainerError(f"{key} must be a string")
    for key in _BOOLS:
        if key in spec and not isinstance(spec[key], bool):
            raise ContainerError(f"{key} must be true or false")
    for key in _OBJECTS:
        if key in spec and not isinstance(spec[key], dict):
            raise ContainerError(f"{key} must be an object")
    for key in _LISTS:
        if key in spec and not isinstance(spec[key], list):
            raise ContainerError(f"{key} must be a list")
    for key in ("command", "args"):
        if not all(isinstance(item, str) for item in spec.get(key, [])):
            raise ContainerError(f"{key} must be a list of strings")
    for key in _LISTS_OF_OBJECTS:
        if not all(isinstance(item, dict) for item in spec.get(key, [])):
            raise ContainerError(f"{key} must be a list of objects")
    if not spec.get("image", "").strip():
        raise ContainerError("image is required")
    name = spec.get("name") or str(body["metadata"].get("name", ""))
    if not _DNS_LABEL.fullmatch(name):
        given = "name" if spec.get("name") else "name (the Component's, as none is given)"
        raise ContainerError(f"{given} {name!r} is not a container name (a DNS-1123 label); set one")
    if name == naming.CONTAINER:
        raise ContainerError(f"name {name!r} is the state API container's; choose another")
    _check_ports(spec.get("ports", []))
    _check_env(spec.get("env", []))
    _check_mounts(spec.get("volumeMounts", []))
    return {**spec, "name": name}


def socket_env() -> list[dict[str, Any]]:
    return [{"name": name, "value": SOCKET_FOLDER} for name in SOCKET_ENV]


def socket_mount() -> dict[str, Any]:
    return {"name": SOCKET_VOLUME, "mountPath": SOCKET_FOLDER}


def socket_volume() -> dict[str, Any]:
    return {"name": SOCKET_VOLUME, "emptyDir": {}}


# Plain (not pointer) fields the API server drops when false or zero (a zero probe setting is its default).
_DROPPED_FALSE = frozenset({"stdin", "stdinOnce", "tty", "readOnly"})
_DROPPED_ZERO = frozenset(
    {
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
        "hostPort",
    }
)


def _pruned(value: Any) -> Any:
    """`value` without what the API server would not store (empty strings, lists and objects, and the
    false or zero of the fields above), so the stored container compares equal to the rendered one and
    a loosely written annotation is not written again every round."""
    if isinstance(value, dict):
        out = {}
        for key, raw in value.items():
            item = _pruned(raw)
            if item is None or item in ("", [], {}):
                continue
            if (key in _DROPPED_FALSE and item is False) or (key in _DROPPED_ZERO and item == 0):
                continue
            out[key] = item
        return out
    if isinstance(value, list):
        return [_pruned(item) for item in value]
    return value


def pod_container(container: Mapping[str, Any]) -> dict[str, Any]:
    """The checked container as it runs in the pod: the sockets folder mounted and named in its env."""
    out: dict[str, Any] = _pruned(copy.deepcopy(dict(container)))
    out["env"] = [*out.get("env", []), *socket_env()]
    out["volumeMounts"] = [*out.get("volumeMounts", []), socket_mount()]
    return out


def extra_volumes(container: Mapping[str, Any], have: Iterable[str]) -> list[dict[str, Any]]:
    """An `emptyDir` for each volume the container mounts that the pod lacks (Dapr's default)."""
    seen = set(have)
    volumes = []
    for mount in container.get("volumeMounts", []):
        if mount["name"] not in seen:
            seen.add(mount["name"])
            volumes.append({"name": mount["name"], "emptyDir": {}})
    return volumes


# --- sidecar mode: the containers of an application's pod -----------------------------------------
LISTED_ANNOTATION = "dapr.io/pluggable-components"  # Dapr: the pod's own component containers


def pod_plan(
    pod_spec: Mapping[str, Any], served: Iterable[Mapping[str, Any]], inject: bool, listed: Iterable[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """What Dapr's injector does for the pluggable Components a sidecar serves, and the warnings.

    With `inject` (`dapr.io/inject-pluggable-components: "true"`), each Component's container is added
    (one per image, as Dapr; none whose name the pod already has). The pod's own containers named in
    `listed` (`dapr.io/pluggable-components`) get the sockets folder instead. A pluggable Component
    with neither is served by no container in the pod: the sidecar would wait for it forever.
    """
    served = [c for c in served if declared(c)]
    if not served:
        return [], []
    names = {
        c.get("name") for c in [*(pod_spec.get("containers") or []), *(pod_spec.get("initContainers") or [])]
    }
    own = [n for n in listed if n in names]
    added: list[dict[str, Any]] = []
    warnings: list[str] = []
    images: set[str] = set()
    for component in served:
        container = container_of(component)
        who = f"pluggable Component {component['metadata']['name']!r}"
        if not inject:
            if not own:
                warnings.append(
                    f'{who} has no container in this pod: annotate it {INJECT_ANNOTATION}: "true" '
                    f"(or list your own component container in {LISTED_ANNOTATION}); its store stays unready"
                )
            continue
        if container["image"] in images:
            continue
        if container["name"] in names:
            warnings.append(f"{who}: the pod already has a container {container['name']!r}; not injected")
            continue
        images.add(container["image"])
        names.add(container["name"])
        added.append(pod_container(container))
    return added, warnings


def into_pod(
    spec: dict[str, Any],
    added: list[dict[str, Any]],
    listed: Iterable[str],
    served: Iterable[Mapping[str, Any]],
) -> None:
    """Add the containers (and the volumes they mount that the pod lacks) and, when a served Component
    is pluggable, share the sockets folder with the pod's own listed containers (`spec` is changed)."""
    own = set(listed) if any(declared(c) for c in served) else set()
    for container in spec.get("containers") or []:
        if container.get("name") in own:
            container["env"] = [*(container.get("env") or []), *socket_env()]
            container["volumeMounts"] = [*(container.get("volumeMounts") or []), socket_mount()]
    volumes = spec.setdefault("volumes", [])
    for container in added:
        volumes.extend(extra_volumes(container, [v["name"] for v in volumes]))
    spec["containers"] = [*(spec.get("containers") or []), *added]
