"""Sidecar mode (pure): which Pods get a `statestore` container, what it serves, and the Pod changes.

The container is the one `render.deployment` renders for a Component (same image, command, probes,
resources, security context), moved into the application's Pod: it reads the Components that apply to
the app id from a ConfigMap the operator renders per app id, and their secrets by `secretKeyRef` in the
Pod's own namespace, so the application's service account needs no permission of its own.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import access, naming, pluggable, render
from .validation import check, is_state_store

INJECT_ANNOTATION = f"{naming.ANNOTATION_PREFIX}/inject"
APP_ID_ANNOTATION = naming.APP_ID_ANNOTATION
STORES_ANNOTATION = f"{naming.ANNOTATION_PREFIX}/stores"
HTTP_PORT_ANNOTATION = f"{naming.ANNOTATION_PREFIX}/http-port"
GRPC_PORT_ANNOTATION = f"{naming.ANNOTATION_PREFIX}/grpc-port"
METRICS_PORT_ANNOTATION = f"{naming.ANNOTATION_PREFIX}/metrics-port"
INJECTED_ANNOTATION = f"{naming.ANNOTATION_PREFIX}/injected"
TOKEN_SECRET_ANNOTATION = access.API_TOKEN_SECRET_ANNOTATION
APP_ID_LABEL = f"{naming.ANNOTATION_PREFIX}/sidecar-app-id"  # on injected pods and their ConfigMaps
DAPR_ENABLED_ANNOTATION = "dapr.io/enabled"
DAPR_CONTAINER = "daprd"
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "dapr-system"})

# Volume and port names of our own, so they do not collide with the application's.
COMPONENTS_VOLUME = "statestore-components"
TMP_VOLUME = "statestore-tmp"
DATA_VOLUME = "statestore-data"
_RENAMED_VOLUMES = {"components": COMPONENTS_VOLUME, "tmp": TMP_VOLUME, "data": DATA_VOLUME}
_RENAMED_PORTS = {"http": "statestore-http", "grpc": "statestore-grpc", "metrics": "statestore-mtr"}
_HASH_SUFFIX = re.compile(r"-[a-z0-9]{5,10}$")


class InjectError(ValueError):
    """A Pod asks for injection with annotations we cannot honour (the Pod is refused, with this)."""


@dataclass(frozen=True, slots=True)
class Request:
    """What one annotated Pod asks for."""

    app_id: str
    http_port: int
    grpc_port: int
    stores: tuple[str, ...] = ()  # empty: every state Component whose scopes admit the app id
    token: access.TokenSource | None = None
    metrics_port: int = naming.METRICS_PORT
    inject_pluggable: bool = False  # dapr.io/inject-pluggable-components
    component_containers: tuple[str, ...] = ()  # dapr.io/pluggable-components: the pod's own


@dataclass(frozen=True, slots=True)
class Selection:
    """The Components a sidecar serves, and the named ones that do not exist (an admission warning)."""

    components: tuple[Mapping[str, Any], ...]
    missing: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())


def skip_reason(pod: Mapping[str, Any], namespace: str) -> str | None:
    """Why the Pod is left as it is (None: inject)."""
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if str(annotations.get(INJECT_ANNOTATION, "")).lower() != "true":
        return "not annotated"
    if namespace in SYSTEM_NAMESPACES:
        return f"namespace {namespace} is a system namespace"
    spec = pod.get("spec") or {}
    names = {c.get("name") for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]}
    if str(annotations.get(DAPR_ENABLED_ANNOTATION, "")).lower() == "true" or DAPR_CONTAINER in names:
        return "Dapr's sidecar injector handles this pod"
    if render.CONTAINER in names or INJECTED_ANNOTATION in annotations:
        return "already injected"
    return None


def owner_name(pod: Mapping[str, Any]) -> str:
    """The owning workload's name: a ReplicaSet's Deployment, a Job, a StatefulSet..., else generateName."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    for owner in meta.get("ownerReferences") or []:
        if owner.get("controller") and owner.get("name"):
            name = str(owner["name"])
            template_hash = labels.get("pod-template-hash")
            if owner.get("kind") == "ReplicaSet" and template_hash and name.endswith("-" + template_hash):
                return name[: -len(template_hash) - 1]
            return name
    generate = str(meta.get("generateName") or "")
    if generate:
        base = generate.rstrip("-")
        template_hash = labels.get("pod-template-hash")
        if template_hash and base.endswith("-" + template_hash):
            base = base[: -len(template_hash) - 1]
        elif "pod-template-hash" in labels:
            base = _HASH_SUFFIX.sub("", base)
        return base
    return str(meta.get("name") or "")


def _port(annotations: Mapping[str, Any], key: str, default: int) -> int:
    text = str(annotations.get(key, default)).strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InjectError(f"annotation {key!r}: {text[:50]!r} is not a port number (1-65535)")
    return int(text)


def request(pod: Mapping[str, Any]) -> Request:
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    app = str(annotations.get(APP_ID_ANNOTATION) or "").strip() or owner_name(pod)
    if not app:
        raise InjectError(f"no app id: set annotation {APP_ID_ANNOTATION!r}")
    if not access.is_label_value(app):
        raise InjectError(f"app id {app[:80]!r} is not a valid label value (letters, digits, '-', '_', '.')")
    http_port = _port(annotations, HTTP_PORT_ANNOTATION, naming.HTTP_PORT)
    grpc_port = _port(annotations, GRPC_PORT_ANNOTATION, naming.GRPC_PORT)
    metrics_port = _port(annotations, METRICS_PORT_ANNOTATION, naming.METRICS_PORT)
    if len({http_port, grpc_port, metrics_port}) < 3:
        raise InjectError(
            f"annotations {HTTP_PORT_ANNOTATION!r}, {GRPC_PORT_ANNOTATION!r} and {METRICS_PORT_ANNOTATION!r} "
            f"must name three different ports (got {http_port}, {grpc_port}, {metrics_port})"
        )
    stores = tuple(s.strip() for s in str(annotations.get(STORES_ANNOTATION, "")).split(",") if s.strip())
    token = None
    if TOKEN_SECRET_ANNOTATION in annotations:
        try:
            token = access.token_source(
                {"metadata": {"annotations": {TOKEN_SECRET_ANNOTATION: annotations[TOKEN_SECRET_ANNOTATION]}}}
            )
        except access.AccessError as exc:
            raise InjectError(str(exc)) from None
    inject_pluggable = str(annotations.get(pluggable.INJECT_ANNOTATION, "")).strip().lower() == "true"
    own = str(annotations.get(pluggable.LISTED_ANNOTATION, "")).split(",")
    return Request(
        app,
        http_port,
        grpc_port,
        tuple(sorted(set(stores))),
        token,
        metrics_port,
        inject_pluggable,
        tuple(n.strip() for n in own if n.strip()),
    )


def applies(component: Mapping[str, Any], app_id: str) -> bool:
    """Dapr's rule: a Component without scopes applies to every app; with scopes, to the listed ones."""
    scopes = component.get("scopes") or []
    return not scopes or app_id in [str(s) for s in scopes]


def select(components: Iterable[Mapping[str, Any]], app_id: str, stores: Iterable[str] = ()) -> Selection:
    """The valid state Components the app's sidecar serves, by name when `stores` names them."""
    valid = {str(c["metadata"]["name"]): c for c in components if is_state_store(c) and check(c, None).ok}
    named = list(stores)
    if named:
        missing = tuple(n for n in named if n not in valid)
        warnings = [
            f"{STORES_ANNOTATION}: state store Component {n!r} does not exist (or is invalid) in this namespace"
            for n in missing
        ]
        chosen = [valid[n] for n in named if n in valid]
        for c in chosen:
            if not applies(c, app_id):
                warnings.append(
                    f"{STORES_ANNOTATION}: Component {c['metadata']['name']!r} is not scoped to {app_id!r}"
                )
        chosen = [c for c in chosen if applies(c, app_id)]
        return Selection(tuple(chosen), missing, tuple(warnings))
    return Selection(tuple(valid[n] for n in sorted(valid) if applies(valid[n], app_id)))


def config_map_name(app_id: str, stores: Iterable[str] = ()) -> str:
    named = ",".join(sorted(stores))
    base = naming.child_name("app-" + app_id)
    if not named:
        return base
    digest = hashlib.sha256(named.encode()).hexdigest()[:8]
    return naming.child_name(f"app-{app_id}-{digest}")


def config_map(namespace: str, req: Request, selection: Selection) -> dict[str, Any]:
    """The Components the sidecar reads, one file each (`scopes` already applied here)."""
    data = {
        f"{c['metadata']['name']}.yaml": yaml.safe_dump(
            render.component_document(c), sort_keys=False, default_flow_style=False
        )
        for c in selection.components
    }
    annotations = {APP_ID_ANNOTATION: req.app_id}
    if req.stores:
        annotations[STORES_ANNOTATION] = ",".join(req.stores)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(req.app_id, req.stores),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": naming.MANAGER,
                "app.kubernetes.io/part-of": "dapr",
                APP_ID_LABEL: naming.label_value(req.app_id),
            },
            "annotations": annotations,
        },
        "data": data,
    }


def request_of_config_map(cm: Mapping[str, Any]) -> Request:
    """What a per-app-id ConfigMap was rendered for (to render it again when Components change)."""
    annotations = (cm.get("metadata") or {}).get("annotations") or {}
    stores = tuple(s for s in str(annotations.get(STORES_ANNOTATION, "")).split(",") if s)
    return Request(str(annotations.get(APP_ID_ANNOTATION, "")), naming.HTTP_PORT, naming.GRPC_PORT, stores)


def _rendered(
    component: Mapping[str, Any], pods: render.PodSettings, token: access.TokenSource | None
) -> dict[str, Any]:
    outcome = check(component, None)
    assert outcome.component is not None
    deploy = render.deployment(component, outcome.component, pods, token=token)
    spec: dict[str, Any] = deploy["spec"]["template"]["spec"]
    return spec


def _placeholder(namespace: str) -> dict[str, Any]:
    # A Pod with no store yet still gets a server (stores appear in the ConfigMap later).
    return {
        "metadata": {"name": "none", "namespace": namespace, "uid": ""},
        "spec": {"type": "state.in-memory", "version": "v1", "metadata": []},
    }


def _rename_ports(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (_RENAMED_PORTS.get(v, v) if k == "port" else _rename_ports(v)) for k, v in value.items()}
    return value


def sidecar_container(
    namespace: str, req: Request, selection: Selection, pods: render.PodSettings, *, native: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The `statestore` container and its volumes, from the Deployment's renderer."""
    specs = [_rendered(c, pods, req.token) for c in selection.components] or [
        _rendered(_placeholder(namespace), pods, req.token)
    ]
    container = copy.deepcopy(specs[0]["containers"][0])
    env: dict[str, dict[str, Any]] = {}
    volumes: dict[str, dict[str, Any]] = {}
    for spec in specs:
        for item in spec["containers"][0]["env"]:
            env.setdefault(item["name"], item)
        for volume in spec["volumes"]:
            volumes.setdefault(volume["name"], volume)
        if "workingDir" in spec["containers"][0]:
            container["workingDir"] = spec["containers"][0]["workingDir"]
            container["volumeMounts"] = spec["containers"][0]["volumeMounts"]
    container["env"] = list(env.values())
    args: list[str] = list(container["args"])
    for flag, value in (
        ("--app-id", req.app_id),
        ("--dapr-http-port", str(req.http_port)),
        ("--dapr-grpc-port", str(req.grpc_port)),
        ("--metrics-port", str(req.metrics_port)),
    ):
        args[args.index(flag) + 1] = value
    container["args"] = args
    container["ports"] = [
        {"name": _RENAMED_PORTS["http"], "containerPort": req.http_port, "protocol": "TCP"},
        {"name": _RENAMED_PORTS["grpc"], "containerPort": req.grpc_port, "protocol": "TCP"},
        {"name": _RENAMED_PORTS["metrics"], "containerPort": req.metrics_port, "protocol": "TCP"},
    ]
    for probe in ("readinessProbe", "livenessProbe"):
        container[probe] = _rename_ports(container[probe])
    # The application's Pod keeps its own pod-level security context: ours goes on the container.
    container["securityContext"] = {**container["securityContext"], "runAsUser": 65532, "runAsGroup": 65532}
    mounts = list(container["volumeMounts"])
    if pluggable.SOCKET_VOLUME in volumes and pluggable.socket_mount() not in mounts:
        mounts.append(pluggable.socket_mount())
    container["volumeMounts"] = [{**m, "name": _RENAMED_VOLUMES.get(m["name"], m["name"])} for m in mounts]
    # Only the volumes our container mounts (a pluggable container's own are added with it).
    mounted = {m["name"] for m in mounts}
    volumes = {name: volume for name, volume in volumes.items() if name in mounted}
    if native:
        container["restartPolicy"] = "Always"
    out_volumes = []
    for name, volume in volumes.items():
        renamed = {**volume, "name": _RENAMED_VOLUMES.get(name, name)}
        if "configMap" in renamed:
            renamed["configMap"] = {"name": config_map_name(req.app_id, req.stores)}
        out_volumes.append(renamed)
    return container, out_volumes


def app_env(req: Request) -> list[dict[str, Any]]:
    """What the application's containers get: where the SDKs find the sidecar, and the token."""
    env: list[dict[str, Any]] = [
        {"name": "DAPR_HTTP_PORT", "value": str(req.http_port)},
        {"name": "DAPR_GRPC_PORT", "value": str(req.grpc_port)},
    ]
    if req.token is not None:
        ref = {"name": req.token.secret, "key": req.token.key}
        env.append({"name": access.TOKEN_ENV, "valueFrom": {"secretKeyRef": ref}})
    return env


def pluggable_plan(
    pod: Mapping[str, Any], req: Request, selection: Selection
) -> tuple[list[dict[str, Any]], list[str]]:
    """The pluggable Components' containers to add to the pod, and the admission warnings."""
    spec = pod.get("spec") or {}
    return pluggable.pod_plan(spec, selection.components, req.inject_pluggable, req.component_containers)


def mutate(
    pod: Mapping[str, Any],
    namespace: str,
    req: Request,
    selection: Selection,
    pods: render.PodSettings,
    *,
    native: bool,
) -> dict[str, Any]:
    """The injected Pod (a new object; `pod` is not changed)."""
    result = copy.deepcopy(dict(pod))
    spec = result.setdefault("spec", {})
    container, volumes = sidecar_container(namespace, req, selection, pods, native=native)
    extra = app_env(req)
    for app in spec.get("containers") or []:
        own = {e.get("name") for e in app.get("env") or []}
        # A variable the application sets itself wins (e.g. it talks to a shared Deployment instead).
        app["env"] = [*(app.get("env") or []), *(e for e in extra if e["name"] not in own)]
    if native:
        spec["initContainers"] = [container, *(spec.get("initContainers") or [])]
    else:
        spec["containers"] = [*(spec.get("containers") or []), container]
    spec["volumes"] = [*(spec.get("volumes") or []), *volumes]
    added, _ = pluggable_plan(pod, req, selection)
    pluggable.into_pod(spec, added, req.component_containers, selection.components)
    meta = result.setdefault("metadata", {})
    meta.setdefault("annotations", {})[INJECTED_ANNOTATION] = req.app_id
    # As Dapr's injector labels its pods: the operator watches injected pods by this label.
    meta.setdefault("labels", {})[APP_ID_LABEL] = naming.label_value(req.app_id)
    return result


def request_of_pod(pod: Mapping[str, Any]) -> Request:
    """What an injected pod was given (to render its ConfigMap again if it went missing)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    stores = tuple(s for s in str(annotations.get(STORES_ANNOTATION, "")).split(",") if s.strip())
    app = str(annotations.get(INJECTED_ANNOTATION, ""))
    return Request(app, naming.HTTP_PORT, naming.GRPC_PORT, tuple(sorted({s.strip() for s in stores})))


SIDECAR_KINDS = ("auto", "native", "ordinary")
_VERSION = re.compile(r"v?(\d+)\.(\d+)")


def supports_native_sidecars(version: Mapping[str, Any]) -> bool:
    """Whether an API server (its `/version`) runs native sidecars by default.

    The SidecarContainers feature gate is alpha (off) in 1.28, beta and on by default from 1.29, GA
    in 1.33. `minor` may carry a suffix ("29+" on some providers); `gitVersion` is the fallback.
    """
    major, minor = str(version.get("major", "")), str(version.get("minor", ""))
    digits = re.match(r"\d+", minor)
    if major.isdigit() and digits:
        numbers = (int(major), int(digits.group()))
    elif found := _VERSION.match(str(version.get("gitVersion", ""))):
        numbers = (int(found.group(1)), int(found.group(2)))
    else:
        return False  # unknown: the ordinary container works everywhere
    return numbers >= (1, 29)


def native_sidecars(kind: str, version: Mapping[str, Any] | None) -> tuple[bool, str]:
    """The container kind to inject (True: native sidecar) and why, for `--inject-sidecar-kind`."""
    if kind == "native":
        return True, "forced by --inject-sidecar-kind=native"
    if kind == "ordinary":
        return False, "forced by --inject-sidecar-kind=ordinary"
    if kind != "auto":
        raise ValueError(f"sidecar kind {kind!r} is not one of {', '.join(SIDECAR_KINDS)}")
    if version is None:
        return False, "the API server's version is unknown"
    shown = str(version.get("gitVersion") or f"{version.get('major')}.{version.get('minor')}")
    return supports_native_sidecars(version), f"API server {shown}"
