"""How many state API pods a Component runs and how they roll, from its store's persistence and its
annotations: the claim of a store keeping local files, the PodDisruptionBudget and the
HorizontalPodAutoscaler of a networked one (pure functions).

A store keeping local files (SQLite) or memory has exactly one writer: one replica, rolled with
`Recreate` so that two pods never open one file. A networked store (Redis, PostgreSQL, MySQL) runs any
number of replicas, spread across nodes, rolled without ever going below the wanted count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from statestore_sidecar.validation import Component, Persistence, UnknownStoreType, schema_for

from . import naming, quantities

PREFIX = naming.ANNOTATION_PREFIX
REPLICAS = f"{PREFIX}/replicas"
STORAGE_SIZE = f"{PREFIX}/storage-size"
STORAGE_CLASS = f"{PREFIX}/storage-class"
ON_DELETE = f"{PREFIX}/storage-on-delete"
AUTOSCALE_MIN = f"{PREFIX}/autoscale-min-replicas"
AUTOSCALE_MAX = f"{PREFIX}/autoscale-max-replicas"
AUTOSCALE_CPU = f"{PREFIX}/autoscale-target-cpu"

DEFAULT_STORAGE_SIZE = "1Gi"
DEFAULT_TARGET_CPU = 80
KEEP, DELETE = "keep", "delete"
MAX_REPLICAS = 100
DATA_VOLUME = "data"

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_SINGLE = {
    Persistence.LOCAL_FILES: "keeps its data in local files (one writer)",
    Persistence.MEMORY: "keeps its data in the pod's memory",
}
MEMORY_NOTE = (
    "the store keeps its data in the pod's memory: it runs one replica and its data is lost on every "
    "restart, rollout or node drain"
)


class ScalingError(ValueError):
    """A scaling or storage annotation is malformed or does not fit the store; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"annotation {field!r}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Autoscale:
    min_replicas: int
    max_replicas: int
    target_cpu: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What the annotations (and the operator's default) decide for one Component."""

    persistence: Persistence
    replicas: int
    autoscale: Autoscale | None = None
    storage_size: str = DEFAULT_STORAGE_SIZE
    storage_class: str | None = None
    delete_claim: bool = False

    @property
    def single_writer(self) -> bool:
        return self.persistence is not Persistence.NETWORK

    @property
    def claim(self) -> bool:
        return self.persistence is Persistence.LOCAL_FILES

    @property
    def most_replicas(self) -> int:
        return self.autoscale.max_replicas if self.autoscale else self.replicas


def persistence_of(component: Component) -> Persistence:
    try:
        return schema_for(component.type, pluggable=component.pluggable).persistence
    except UnknownStoreType:
        return Persistence.NETWORK


def _count(annotations: Mapping[str, Any], key: str, minimum: int, maximum: int) -> int | None:
    text = annotations.get(key)
    if text is None:
        return None
    value = str(text).strip()
    if not value.isdigit() or not minimum <= int(value) <= maximum:
        raise ScalingError(key, f"{text!r} is not a whole number from {minimum} to {maximum}")
    return int(value)


def plan(body: Mapping[str, Any], component: Component, default_replicas: int = 1) -> Plan:
    """The Plan of a Component, or ScalingError naming the first bad annotation."""
    annotations: Mapping[str, Any] = body.get("metadata", {}).get("annotations") or {}
    persistence = persistence_of(component)
    replicas = _count(annotations, REPLICAS, 1, MAX_REPLICAS)
    low = _count(annotations, AUTOSCALE_MIN, 1, MAX_REPLICAS)
    high = _count(annotations, AUTOSCALE_MAX, 1, MAX_REPLICAS)
    cpu = _count(annotations, AUTOSCALE_CPU, 1, 1000)
    if persistence is not Persistence.NETWORK:
        why = f"{component.type} {_SINGLE[persistence]}, so it runs exactly one replica"
        if replicas not in (None, 1):
            raise ScalingError(REPLICAS, f"{replicas} replicas: {why}")
        for key, value in ((AUTOSCALE_MIN, low), (AUTOSCALE_MAX, high), (AUTOSCALE_CPU, cpu)):
            if value is not None:
                raise ScalingError(key, f"autoscaling is not possible: {why}")
    size = str(annotations.get(STORAGE_SIZE, DEFAULT_STORAGE_SIZE)).strip()
    if not quantities.is_quantity(size) or quantities.value(size) <= 0:
        raise ScalingError(STORAGE_SIZE, f"{size!r} is not a positive quantity (for example 1Gi or 500Mi)")
    storage_class = annotations.get(STORAGE_CLASS)
    if storage_class is not None and not _DNS_SUBDOMAIN.fullmatch(str(storage_class)):
        raise ScalingError(STORAGE_CLASS, f"{storage_class!r} is not a StorageClass name")
    on_delete = str(annotations.get(ON_DELETE, KEEP)).strip().lower()
    if on_delete not in (KEEP, DELETE):
        raise ScalingError(ON_DELETE, f"{annotations.get(ON_DELETE)!r} is not {KEEP!r} or {DELETE!r}")
    count = 1 if persistence is not Persistence.NETWORK else (replicas or default_replicas)
    autoscale = None
    if high is not None:
        low = low if low is not None else min(count, high)
        if low > high:
            raise ScalingError(AUTOSCALE_MIN, f"{low} is more than {AUTOSCALE_MAX} ({high})")
        autoscale = Autoscale(low, high, cpu if cpu is not None else DEFAULT_TARGET_CPU)
    elif low is not None or cpu is not None:
        key = AUTOSCALE_MIN if low is not None else AUTOSCALE_CPU
        raise ScalingError(key, f"autoscaling needs {AUTOSCALE_MAX} as well")
    return Plan(
        persistence,
        count,
        autoscale,
        size,
        None if storage_class is None else str(storage_class),
        on_delete == DELETE,
    )


def shape(deployment: dict[str, Any], plan: Plan, *, stopped: bool = False) -> dict[str, Any]:
    """The rendered Deployment with the plan's replicas, strategy, spread and data volume (in place).

    `stopped` (another store holds the actor role) runs no pods. Under an autoscaler `replicas` is left
    out, so the autoscaler alone sets it.
    """
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    if stopped:
        spec["replicas"] = 0
    elif plan.autoscale is not None:
        spec.pop("replicas", None)
    else:
        spec["replicas"] = plan.replicas
    if plan.single_writer:
        # The old pod is gone before the new one starts: never two writers on one file.
        spec["strategy"] = {"type": "Recreate"}
    else:
        # A new pod is ready before an old one goes: the wanted count is always serving.
        spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
        name = deployment["metadata"]["labels"]["app.kubernetes.io/instance"]
        pod["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                # A preference: a single-node cluster still runs every replica.
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": naming.selector_labels(name)},
            }
        ]
    if plan.claim:
        for volume in pod["volumes"]:
            if volume["name"] == DATA_VOLUME:
                volume.pop("emptyDir", None)
                volume["persistentVolumeClaim"] = {"claimName": deployment["metadata"]["name"]}
    return deployment


def replica_counts(deployment: Mapping[str, Any]) -> dict[str, int]:
    """`replicas` (wanted, by the operator or an autoscaler) and `readyReplicas` for the status."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    return {"replicas": int(spec.get("replicas", 1)), "readyReplicas": int(status.get("readyReplicas", 0))}


def _metadata(body: Mapping[str, Any], owner: Mapping[str, Any] | None) -> dict[str, Any]:
    name = body["metadata"]["name"]
    meta: dict[str, Any] = {
        "name": naming.child_name(name),
        "namespace": body["metadata"]["namespace"],
        "labels": naming.labels(name),
    }
    if owner is not None:
        meta["ownerReferences"] = [dict(owner)]
    return meta


def claim(body: Mapping[str, Any], plan: Plan, owner: Mapping[str, Any]) -> dict[str, Any]:
    """The PersistentVolumeClaim of the data folder; owned by the Component only when it is to be deleted
    with it (by default it outlives the Component, and a Component of the same name takes it again)."""
    meta = _metadata(body, owner if plan.delete_claim else None)
    meta["annotations"] = {naming.COMPONENT_ANNOTATION: str(body["metadata"]["name"])}
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": plan.storage_size}},
    }
    if plan.storage_class is not None:
        spec["storageClassName"] = plan.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def disruption_budget(body: Mapping[str, Any], plan: Plan, owner: Mapping[str, Any]) -> dict[str, Any] | None:
    """At most one pod evicted at a time (node drains), when more than one may run; None otherwise."""
    if plan.single_writer or plan.most_replicas < 2:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(body, owner),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": naming.selector_labels(body["metadata"]["name"])},
        },
    }


def autoscaler(body: Mapping[str, Any], plan: Plan, owner: Mapping[str, Any]) -> dict[str, Any] | None:
    """The HorizontalPodAutoscaler of the Deployment, when the annotations ask for one."""
    if plan.autoscale is None:
        return None
    scale = plan.autoscale
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(body, owner),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": naming.child_name(body["metadata"]["name"]),
            },
            "minReplicas": scale.min_replicas,
            "maxReplicas": scale.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": scale.target_cpu},
                    },
                }
            ],
        },
    }
