"""Writing a Component's children: only what differs from the server's copy, never an object of the
same name that the Component does not control, and deleting only what it owns."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from . import access, conditions, metrics, naming, render, scaling
from .kube import JSON, ApiError, Client, path_of
from .validation import SECRET_KEY_NOT_FOUND

log = logging.getLogger("statestore.operator")


class Blocked(Exception):
    """The Component cannot be served as it is; `reason` becomes the Available condition's reason."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotOwned(Blocked):
    """A child's name is taken by an object this Component does not control."""

    def __init__(self, message: str) -> None:
        super().__init__(message, conditions.REASON_NOT_OWNED)


def controlled_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    uid = owner["metadata"]["uid"]
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


class Children:
    """The child objects of Components, through one API client."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def ensure_scaling(self, body: Mapping[str, Any], plan: scaling.Plan, *, stopped: bool) -> None:
        """The disruption budget and the autoscaler the plan asks for; those it no longer asks for go."""
        owner = render.owner_reference(body)
        wanted = {
            "PodDisruptionBudget": scaling.disruption_budget(body, plan, owner),
            "HorizontalPodAutoscaler": None if stopped else scaling.autoscaler(body, plan, owner),
        }
        for kind, desired in wanted.items():
            if desired is None:
                await self.delete_owned(body, kind)
            else:
                await self.ensure(body, desired)

    async def ensure_claim(self, body: Mapping[str, Any], plan: scaling.Plan) -> None:
        """The data claim: created once (its size and class are fixed then); afterwards only whether the
        Component owns it (and so deletes it with itself) follows the annotation.

        Not owned by default, a claim is recognised by its component annotation: a Component of the
        same name takes a kept claim (and its data) back.
        """
        meta = body["metadata"]
        owner = render.owner_reference(body)
        desired = scaling.claim(body, plan, owner)
        name = desired["metadata"]["name"]
        current = await self.client.get("PersistentVolumeClaim", meta["namespace"], name)
        if current is None:
            log.info("creating PersistentVolumeClaim %s/%s", meta["namespace"], name)
            metrics.OBJECT_WRITES.labels("PersistentVolumeClaim").inc()
            await self.client.create(desired)
            return
        annotations = current["metadata"].get("annotations") or {}
        if annotations.get(naming.COMPONENT_ANNOTATION) != meta["name"]:
            raise NotOwned(
                f"PersistentVolumeClaim {name} already exists and is not the data of this Component; "
                "delete or rename it (or rename the Component)"
            )
        refs = current["metadata"].get("ownerReferences") or []
        others = [r for r in refs if r.get("uid") != meta["uid"]]
        refs_wanted = [*others, owner] if plan.delete_claim else others
        if refs != refs_wanted:
            log.info(
                "PersistentVolumeClaim %s/%s: deleted with the Component: %s",
                meta["namespace"],
                name,
                plan.delete_claim,
            )
            metrics.OBJECT_WRITES.labels("PersistentVolumeClaim").inc()
            await self.client.request(
                "PATCH",
                path_of("PersistentVolumeClaim", meta["namespace"], name),
                body={"metadata": {"ownerReferences": refs_wanted or None}},
                content_type="application/merge-patch+json",
            )

    async def delete_owned(self, body: Mapping[str, Any], kind: str) -> None:
        """Delete the Component's child of this kind, if there is one and it is ours."""
        meta = body["metadata"]
        name = naming.child_name(meta["name"])
        try:
            current = await self.client.get(kind, meta["namespace"], name)
        except ApiError as exc:
            if exc.status != 403:
                raise
            # RBAC without `get` (e.g. an older role without NetworkPolicies): nothing we could have made.
            log.warning("cannot read %s %s: %s", kind, name, exc)
            return
        owners = (current or {}).get("metadata", {}).get("ownerReferences") or []
        if any(o.get("uid") == meta["uid"] for o in owners):
            log.info("deleting %s %s/%s", kind, meta["namespace"], name)
            try:
                await self.client.delete(kind, meta["namespace"], name)
            except ApiError as exc:
                if exc.status != 403:
                    raise
                # RBAC without `delete`: leave it (deleting the Component still collects it).
                log.warning("cannot delete %s %s: %s", kind, name, exc)

    async def ensure_token_secret(self, body: Mapping[str, Any]) -> JSON:
        """The generated API token Secret: created once with a fresh token, then never written again.

        A Secret of that name that this Component does not control is never taken over (NameInUse).
        The value is never logged, compared or copied anywhere but into the new Secret.
        """
        meta = body["metadata"]
        name = access.token_secret_name(meta["name"])
        current = await self.client.get("Secret", meta["namespace"], name)
        if current is None:
            log.info("creating Secret %s/%s (a new API token)", meta["namespace"], name)
            metrics.OBJECT_WRITES.labels("Secret").inc()
            try:
                current = await self.client.create(render.token_secret(body, access.new_token()))
            except ApiError as exc:
                if exc.status != 409:
                    raise
                current = None  # created meanwhile (by whom is decided below)
            if current is None:
                current = await self.client.get("Secret", meta["namespace"], name)
                if current is None:
                    raise RuntimeError(f"Secret {name} was created and is gone again")
        if not controlled_by(current, body):
            raise NotOwned(
                f"Secret {name} already exists and is not controlled by this Component; it is never "
                f"overwritten: delete or rename it, or name it with {access.API_TOKEN_SECRET_ANNOTATION}"
            )
        if access.TOKEN_KEY not in (current.get("data") or {}):
            raise Blocked(
                f"Secret {name} has no key {access.TOKEN_KEY!r}; delete it and the operator generates a new token",
                reason=SECRET_KEY_NOT_FOUND,
            )
        return current

    async def ensure(self, owner: Mapping[str, Any], desired: Mapping[str, Any]) -> JSON:
        """The object as wanted; written (server-side apply) only when it differs from the server's.

        An object of that name that this Component does not control is never taken over.
        """
        meta = desired["metadata"]
        current = await self.client.get(desired["kind"], meta["namespace"], meta["name"])
        if current is not None and not controlled_by(current, owner):
            raise NotOwned(
                f"{desired['kind']} {meta['name']} already exists and is not controlled by this Component; "
                "delete or rename it (or rename the Component)"
            )
        if current is not None and render.is_subset(
            {k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}, current
        ):
            return current
        metrics.OBJECT_WRITES.labels(desired["kind"]).inc()
        log.info("applying %s %s/%s", desired["kind"], meta["namespace"], meta["name"])
        return await self.client.apply(desired)
