"""Life cycle of sidecar mode's per-app-id ConfigMaps (pure): the pods that mount one own it.

Each injected pod becomes an owner (ownerReference) of the ConfigMap it mounts, so Kubernetes' garbage
collector deletes the ConfigMap when the last of those pods is gone, and never while one still exists
(its sidecar re-reads the files, and a restarted container needs the volume). A ConfigMap that no pod
took as its own (the pod was refused after the webhook rendered it, or it predates this rule) is
removed by the operator once it is older than a grace period and no pod mounts it.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from . import inject


def config_map_of(pod: Mapping[str, Any]) -> str | None:
    """The name of the per-app-id ConfigMap an injected pod mounts (None: not one of ours)."""
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if volume.get("name") == inject.COMPONENTS_VOLUME:
            name = (volume.get("configMap") or {}).get("name")
            return str(name) if name else None
    return None


def owner_reference(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A plain (not controller, not blocking) reference: several pods share one ConfigMap."""
    meta = pod["metadata"]
    return {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}


def is_owned_by(config_map: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    uid = pod["metadata"]["uid"]
    return any(o.get("uid") == uid for o in (config_map.get("metadata") or {}).get("ownerReferences") or [])


def live(pod: Mapping[str, Any]) -> bool:
    """A pod that can still start containers (a terminating one only stops them)."""
    return not (pod.get("metadata") or {}).get("deletionTimestamp")


def _created(meta: Mapping[str, Any]) -> datetime.datetime | None:
    text = str(meta.get("creationTimestamp") or "")
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def orphans(
    config_maps: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    now: datetime.datetime,
    grace: datetime.timedelta,
) -> list[str]:
    """Names of the ConfigMaps without an owner, older than `grace`, that no pod mounts.

    The grace period covers a pod between the webhook (which renders its ConfigMap) and its creation.
    ConfigMaps with owners are left to the garbage collector.
    """
    mounted = {name for pod in pods if (name := config_map_of(pod))}
    out = []
    for cm in config_maps:
        meta = cm.get("metadata") or {}
        created = _created(meta)
        if meta.get("ownerReferences") or meta.get("name") in mounted or created is None:
            continue
        if now - created >= grace:
            out.append(str(meta["name"]))
    return sorted(out)
