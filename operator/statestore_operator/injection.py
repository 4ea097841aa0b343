"""kopf registrations of sidecar mode: the Pod mutating webhook and the per-app-id ConfigMaps (thin;
the decisions are in `inject` and `app_configs`)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from . import app_configs, inject, naming, render
from .kube import ApiError, Client, path_of

log = logging.getLogger("statestore.operator.inject")


@dataclass
class _State:
    client: Client | None = None
    native: bool = True
    sweep: asyncio.Task[None] | None = None
    # (namespace, ConfigMap, pod uid) seen owned: a pod's later events need no read (the periodic pass
    # reads the ConfigMaps themselves, so one deleted meanwhile is still noticed).
    owned: set[tuple[str, str, str]] = field(default_factory=set)


async def _components(client: Client, namespace: str) -> list[dict[str, Any]]:
    return await client.list_components(namespace)


async def _apply_if_changed(client: Client, cm: dict[str, Any]) -> None:
    meta = cm["metadata"]
    current = await client.get("ConfigMap", meta["namespace"], meta["name"])
    if (
        current is not None
        and render.is_subset(cm, current)
        and set(current.get("data") or {}) == set(cm["data"])
    ):
        return
    await client.apply(cm)
    log.info(
        "sidecar configuration %s/%s: %s", meta["namespace"], meta["name"], sorted(cm["data"]) or "no stores"
    )


async def _own(client: Client, pod: Mapping[str, Any], current: Mapping[str, Any] | None) -> None:
    """Make a live injected pod an owner of the ConfigMap it mounts (`current`), rendering it again if
    it is missing (e.g. the garbage collector took it as the app's previous pod went)."""
    name = app_configs.config_map_of(pod)
    if not name or not app_configs.live(pod) or not (pod.get("metadata") or {}).get("uid"):
        return
    if current is not None and app_configs.is_owned_by(current, pod):
        return
    namespace = str(pod["metadata"]["namespace"])
    owner = app_configs.owner_reference(pod)
    if current is None:
        req = inject.request_of_pod(pod)
        if not req.app_id or inject.config_map_name(req.app_id, req.stores) != name:
            return  # not a ConfigMap this operator rendered
        selection = inject.select(await client.list_components(namespace), req.app_id, req.stores)
        cm = inject.config_map(namespace, req, selection)
        cm["metadata"]["ownerReferences"] = [owner]
        try:
            # A create (not our server-side apply), so later applies leave the reference alone.
            await client.create(cm)
            log.info("sidecar configuration %s/%s rendered again for pod %s", namespace, name, owner["name"])
            return
        except ApiError as exc:
            if exc.status != 409:
                raise
    await client.add_owner("ConfigMap", namespace, name, owner)


async def _sweep(client: Client, namespace: str | None, grace: datetime.timedelta) -> None:
    """Level-based pass over one namespace (or all): every injected pod owns its ConfigMap, and
    ConfigMaps no pod took as its own go once they are older than `grace`."""
    pods = await client.list_labelled("Pod", namespace, inject.APP_ID_LABEL)
    config_maps = await client.list_labelled("ConfigMap", namespace, inject.APP_ID_LABEL)
    by_name = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in config_maps}
    for pod in pods:
        key = (pod["metadata"]["namespace"], app_configs.config_map_of(pod) or "")
        await _own(client, pod, by_name.get(key))
    now = datetime.datetime.now(datetime.UTC)
    for ns in sorted({c["metadata"]["namespace"] for c in config_maps}):
        own = [c for c in config_maps if c["metadata"]["namespace"] == ns]
        if not app_configs.orphans(own, [], now, grace):
            continue
        # Candidates: look at every pod of the namespace, not only labelled ones (pods injected before
        # pods were labelled mount them too, and become their owners now).
        every = await client.list_labelled("Pod", ns, "")
        labelled = {p["metadata"]["uid"] for p in pods}
        for pod in every:
            if (name := app_configs.config_map_of(pod)) and pod["metadata"]["uid"] not in labelled:
                await _own(client, pod, by_name.get((ns, name)))
        for name in app_configs.orphans(own, every, now, grace):
            await client.delete("ConfigMap", ns, name)
            log.info("sidecar configuration %s/%s deleted: no pod uses it", ns, name)


def register(
    registry: kopf.OperatorRegistry,
    pods: render.PodSettings,
    namespaces: tuple[str, ...],
    login: Callable[[], kopf.ConnectionInfo],
    *,
    ignore_failures: bool,
    sidecar_kind: str = "auto",
    resync_seconds: float = 60.0,
) -> None:
    state = _State()

    async def sweep_forever() -> None:
        grace = datetime.timedelta(seconds=resync_seconds)
        while True:
            await asyncio.sleep(resync_seconds)
            assert state.client is not None
            for namespace in namespaces or (None,):
                try:
                    await _sweep(state.client, namespace, grace)
                except Exception as exc:
                    log.warning("sidecar configuration pass failed: %s", exc)

    @kopf.on.startup(id="sidecar-injection", registry=registry)
    async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Only injected pods are watched (a server-side label selector, not every pod of the cluster).
        settings.watching.label_selectors["", "v1", "pods"] = inject.APP_ID_LABEL
        state.client = Client(login)
        version = None
        if sidecar_kind == "auto":
            try:
                version = await state.client.request("GET", "/version")
            except Exception as exc:  # the ordinary container works on every version
                log.warning("could not read the API server's version: %s", exc)
        state.native, why = inject.native_sidecars(sidecar_kind, version)
        log.info("sidecar injection on: %s sidecars (%s)", "native" if state.native else "ordinary", why)
        state.sweep = asyncio.create_task(sweep_forever())

    @kopf.on.cleanup(id="sidecar-injection-cleanup", registry=registry)
    async def _cleanup(**_: Any) -> None:
        if state.sweep is not None:
            state.sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await state.sweep
        if state.client is not None:
            await state.client.close()

    @kopf.on.event(
        "",
        "v1",
        "pods",
        id="sidecar-config-owner",
        labels={inject.APP_ID_LABEL: kopf.PRESENT},
        registry=registry,
    )
    async def pod_event(type: str, body: kopf.Body, **_: Any) -> None:
        """An injected pod appeared or changed: it owns its ConfigMap (deleted pods: the GC's part)."""
        meta = body.get("metadata", {})
        key = (str(meta.get("namespace") or ""), app_configs.config_map_of(body) or "", str(meta.get("uid")))
        if type == "DELETED":
            state.owned.discard(key)
            return
        if state.client is None or not all(key) or key in state.owned:
            return
        await _own(state.client, body, await state.client.get("ConfigMap", key[0], key[1]))
        state.owned.add(key)

    @kopf.on.mutate(
        "",
        "v1",
        "pods",
        id="inject-sidecar",
        operations=["CREATE"],
        side_effects=True,  # the per-app-id ConfigMap (not on dry runs)
        ignore_failures=ignore_failures,
        registry=registry,
    )
    async def inject_sidecar(
        body: kopf.Body, patch: kopf.Patch, warnings: list[str], dryrun: bool, **_: Any
    ) -> None:
        namespace = str(body.get("metadata", {}).get("namespace") or "")
        if namespace and namespaces and namespace not in namespaces:
            return
        if inject.skip_reason(body, namespace) is not None:
            return
        assert state.client is not None
        try:
            req = inject.request(body)
        except inject.InjectError as exc:
            raise kopf.AdmissionError(str(exc), code=422) from None
        selection = inject.select(await _components(state.client, namespace), req.app_id, req.stores)
        warnings.extend(selection.warnings)
        warnings.extend(inject.pluggable_plan(body, req, selection)[1])
        if not dryrun:
            await _apply_if_changed(state.client, inject.config_map(namespace, req, selection))
        mutated = inject.mutate(body, namespace, req, selection, pods, native=state.native)
        patch["spec"] = {
            k: mutated["spec"][k] for k in ("containers", "initContainers", "volumes") if k in mutated["spec"]
        }
        patch["metadata"] = {
            "annotations": {inject.INJECTED_ANNOTATION: req.app_id},
            "labels": {inject.APP_ID_LABEL: mutated["metadata"]["labels"][inject.APP_ID_LABEL]},
        }

    @kopf.on.event(naming.GROUP, naming.VERSION, naming.PLURAL, id="sidecar-configs", registry=registry)
    async def component_changed(namespace: str | None, **_: Any) -> None:
        """Render the namespace's per-app-id ConfigMaps again: a Component changed, came or went."""
        if state.client is None or not namespace:
            return
        listed = await state.client.request(
            "GET", path_of("ConfigMap", namespace), params={"labelSelector": inject.APP_ID_LABEL}
        )
        existing = (listed or {}).get("items") or []
        if not existing:
            return
        components = await _components(state.client, namespace)
        for cm in existing:
            req = inject.request_of_config_map(cm)
            if req.app_id:
                selection = inject.select(components, req.app_id, req.stores)
                await _apply_if_changed(state.client, inject.config_map(namespace, req, selection))
