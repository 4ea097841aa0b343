"""Life cycle of the per-app-id ConfigMaps (pure): which pod mounts which, who owns them, orphans."""

from __future__ import annotations

import datetime
from typing import Any

from statestore_operator import app_configs, inject, render

NOW = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)
GRACE = datetime.timedelta(seconds=60)


def injected(app: str, uid: str = "u-1", **meta: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {
            "name": f"{app}-pod",
            "namespace": "ns",
            "annotations": {inject.INJECT_ANNOTATION: "true"},
        },
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }
    req = inject.request({**body, "metadata": {**body["metadata"], "name": app}})
    out = inject.mutate(body, "ns", req, inject.select([], app), render.PodSettings(image="i"), native=True)
    out["metadata"] = {**out["metadata"], "uid": uid, **meta}
    return out


def config_map(name: str, age: float, owners: tuple[str, ...] = ()) -> dict[str, Any]:
    created = (NOW - datetime.timedelta(seconds=age)).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "creationTimestamp": created}
    if owners:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": o, "uid": o} for o in owners]
    return {"metadata": meta}


def test_the_mounted_config_map_and_the_owner_reference() -> None:
    pod = injected("web")
    assert app_configs.config_map_of(pod) == "statestore-app-web"
    assert (
        app_configs.config_map_of({"spec": {"volumes": [{"name": "x", "configMap": {"name": "y"}}]}}) is None
    )
    assert app_configs.config_map_of({}) is None
    ref = app_configs.owner_reference(pod)
    assert ref == {"apiVersion": "v1", "kind": "Pod", "name": "web-pod", "uid": "u-1"}
    assert "controller" not in ref and "blockOwnerDeletion" not in ref  # several pods share one ConfigMap
    assert app_configs.is_owned_by(config_map("statestore-app-web", 1, ("u-1", "u-2")), pod)
    assert not app_configs.is_owned_by(config_map("statestore-app-web", 1, ("u-2",)), pod)
    assert app_configs.live(pod)
    assert not app_configs.live(injected("web", deletionTimestamp="2026-05-01T12:00:00Z"))


def test_orphans_are_ownerless_unmounted_and_older_than_the_grace() -> None:
    maps = [
        config_map("statestore-app-gone", 61),  # no owner, no pod, old: an orphan
        config_map("statestore-app-new", 5),  # too young: its pod may be on the way
        config_map("statestore-app-owned", 600, ("u-9",)),  # the garbage collector's
        config_map("statestore-app-web", 600),  # mounted by a pod (not yet its owner)
        {"metadata": {"name": "statestore-app-odd", "creationTimestamp": "not a time"}},
    ]
    assert app_configs.orphans(maps, [injected("web")], NOW, GRACE) == ["statestore-app-gone"]
    assert app_configs.orphans(maps, [], NOW, GRACE) == ["statestore-app-gone", "statestore-app-web"]
    assert app_configs.orphans(maps, [], NOW, datetime.timedelta(seconds=1)) == [
        "statestore-app-gone",
        "statestore-app-new",
        "statestore-app-web",
    ]
