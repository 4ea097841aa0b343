"""kopf registrations of sidecar mode: the Pod mutating webhook and the per-app-id ConfigMaps (thin;
the decisions are in `inject`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kopf

from . import inject, naming, render
from .kube import Client, path_of

log = logging.getLogger("statestore.operator.inject")


@dataclass
class _State:
    client: Client | None = None
    native: bool = True


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


def register(
    registry: kopf.OperatorRegistry,
    pods: render.PodSettings,
    namespaces: tuple[str, ...],
    login: Callable[[], kopf.ConnectionInfo],
    *,
    ignore_failures: bool,
) -> None:
    state = _State()

    @kopf.on.startup(id="sidecar-injection", registry=registry)
    async def _startup(**_: Any) -> None:
        state.client = Client(login)
        version = await state.client.request("GET", "/version") or {}
        state.native = inject.supports_native_sidecars(
            str(version.get("major", "")), str(version.get("minor", ""))
        )
        log.info("sidecar injection on (%s sidecars)", "native" if state.native else "ordinary")

    @kopf.on.cleanup(id="sidecar-injection-cleanup", registry=registry)
    async def _cleanup(**_: Any) -> None:
        if state.client is not None:
            await state.client.close()

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
        patch["metadata"] = {"annotations": {inject.INJECTED_ANNOTATION: req.app_id}}

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
