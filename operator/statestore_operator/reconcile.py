"""One level-based reconciliation of a Component: read everything, decide, write only differences.

Every trigger (the Component's own events, its Deployment's events, a periodic resync, another actor
store going away) calls the same `Reconciler.reconcile`, which re-reads the Component and compares
what it wants with what is there; repeating it changes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import access, actors, conditions, events, fallback, metrics, naming, render, scaling
from .children import Blocked, Children
from .conditions import Condition
from .events import now
from .kube import JSON, Client
from .validation import Outcome, check, is_state_store, keys_to_read

log = logging.getLogger("statestore.operator")

CONTROLLER = "component"


@dataclass(frozen=True, slots=True)
class Decision:
    """What a reconciliation concluded, for the status and for tests."""

    outcome: Outcome
    conflict: str | None
    status: dict[str, Any]
    changed: list[Condition]


class Reconciler:
    def __init__(
        self, client: Client, pods: render.PodSettings, app_id_label: str = access.DEFAULT_APP_ID_LABEL
    ) -> None:
        self.client = client
        self.children = Children(client)
        self.pods = pods
        self.app_id_label = app_id_label
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # The resourceVersion our last status patch of each Component produced.
        self._status_versions: dict[tuple[str, str], str] = {}
        # What the last full pass of each Component concluded (for Deployment-only refreshes).
        self._seen: dict[tuple[str, str], _Seen] = {}
        # False where Dapr's own CRD is installed: conditions then go into annotations (fallback.py).
        self.status_subresource = True
        self._told_no_status: set[tuple[str, str]] = set()

    async def refresh_status_support(self) -> bool:
        """Look up (discovery) whether Components have a status subresource; log when that changes."""
        found = fallback.has_status_subresource(await self.client.discovery())
        if not found and self.status_subresource:
            log.warning("%s", fallback.NO_STATUS_MESSAGE)
        elif found and not self.status_subresource:
            log.info("the components.dapr.io CRD now has a status subresource: conditions go to .status")
            self._told_no_status.clear()
        self.status_subresource = found
        return found

    def is_own_status_write(self, namespace: str, name: str, resource_version: str | None) -> bool:
        """Whether a Component watch event shows exactly the object our last status patch wrote."""
        return (
            resource_version is not None and self._status_versions.get((namespace, name)) == resource_version
        )

    def _lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    async def reconcile(self, namespace: str, name: str, full: bool = True) -> None:
        """Reconcile one Component by name (serialised per Component across all triggers).

        `full=False` (its Deployment changed) only refreshes the conditions from the Deployment, as long
        as the Component is unchanged since the last full pass; otherwise it is a full pass.
        """
        started = time.monotonic()
        try:
            async with self._lock(namespace, name):
                await self._reconcile(namespace, name, full)
        except Exception:
            metrics.RECONCILE_TOTAL.labels(CONTROLLER, "error").inc()
            metrics.RECONCILE_ERRORS.labels(CONTROLLER).inc()
            raise
        else:
            metrics.RECONCILE_TOTAL.labels(CONTROLLER, "success").inc()
        finally:
            metrics.RECONCILE_TIME.labels(CONTROLLER).observe(time.monotonic() - started)

    async def _reconcile(self, namespace: str, name: str, full: bool = True) -> None:
        # Read the Component fresh: an event's body may predate the status we wrote last.
        body = await self.client.get(naming.KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self._status_versions.pop((namespace, name), None)
            self._seen.pop((namespace, name), None)
            self._locks.pop((namespace, name), None)
            return
        if not is_state_store(body):
            # Only reached through a leftover Deployment: the type was changed away from state.*.
            await self._forget(body)
            return
        key = (namespace, name)
        if not self.status_subresource:
            # What .status would hold lives in annotations; decide() compares against that.
            body = {**body, "status": fallback.status_of(body)}
            if key not in self._told_no_status:
                self._told_no_status.add(key)
                await events.post_event(
                    self.client, body, "Warning", fallback.NO_STATUS_REASON, fallback.NO_STATUS_MESSAGE
                )
        seen = self._seen.get(key)
        if not full and seen is not None and seen.version == body["metadata"].get("resourceVersion"):
            # Only the Deployment moved: two GETs instead of every child, Secret and list. A Deployment
            # that is gone or was edited (a new generation) takes the full pass below.
            current = None
            if seen.blocked is None:
                current = await self.client.get("Deployment", namespace, naming.child_name(name))
            if seen.blocked is not None or _generation(current) == seen.deployment_generation:
                version = await self._report(body, seen.outcome, seen.conflict, current, seen.blocked)
                self._seen[key] = dataclasses.replace(seen, version=version)
                return
        outcome, secrets = await self._validate(body)
        conflict = await self._actor_conflict(body) if outcome.ok else None
        deployment: JSON | None
        blocked: Blocked | None = None
        if outcome.ok and outcome.component is not None:
            replicas = 0 if conflict else 1
            try:
                await self.children.ensure(body, render.config_map(body))
                token_uid = ""
                if outcome.token is not None and outcome.token.generated:
                    generated = await self.children.ensure_token_secret(body)
                    token_uid = str(generated["metadata"]["uid"])
                    secrets[generated["metadata"]["name"]] = generated
                # The policy before the pods, so a scoped Component's pods never run unprotected.
                policy = render.network_policy(body, self.app_id_label)
                if policy is not None:
                    await self.children.ensure(body, policy)
                plan = scaling.plan(body, outcome.component, self.pods.default_replicas)
                if plan.claim:
                    await self.children.ensure_claim(body, plan)  # before the pods that mount it
                deployment = await self.children.ensure(
                    body,
                    scaling.shape(
                        render.deployment(
                            body,
                            outcome.component,
                            self.pods,
                            replicas=replicas,
                            token=outcome.token,
                            token_secret_uid=token_uid,
                            secrets=secrets,
                        ),
                        plan,
                        stopped=bool(conflict),
                    ),
                )
                await self.children.ensure(body, render.service(body))
                await self.children.ensure_scaling(body, plan, stopped=bool(conflict))
                if policy is None:
                    await self.children.delete_owned(body, "NetworkPolicy")  # the scopes were removed
            except Blocked as exc:
                deployment, blocked = None, exc
        else:
            # An invalid spec is not rolled out: pods of the last good one (if any) keep serving.
            deployment = await self.client.get("Deployment", namespace, naming.child_name(name))
        version = await self._report(body, outcome, conflict, deployment, blocked)
        self._seen[key] = _Seen(version, outcome, conflict, blocked, _generation(deployment))

    async def _report(
        self,
        body: Mapping[str, Any],
        outcome: Outcome,
        conflict: str | None,
        deployment: JSON | None,
        blocked: Blocked | None,
    ) -> str:
        """Write the conditions (and post Events) if they changed; the Component's resourceVersion after."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        key = (namespace, name)
        version = str(body["metadata"].get("resourceVersion", ""))
        decision = decide(
            body,
            outcome,
            conflict,
            deployment,
            now(),
            blocked=None if blocked is None else str(blocked),
            blocked_reason=conditions.REASON_NOT_OWNED if blocked is None else blocked.reason,
        )
        if self.status_subresource and fallback.has_annotations(body):
            version = (
                await self._remember(
                    key, await self.client.patch_annotations(namespace, name, fallback.annotations_for(None))
                )
                or version
            )
        if self.status_subresource:
            current = {k: v for k, v in (body.get("status") or {}).items() if k in decision.status}
            stale = decision.status != current
        else:
            patch = fallback.annotations_for(decision.status)
            stale = not render.is_subset(patch, body["metadata"].get("annotations") or {})
        if stale:
            if self.status_subresource:
                written = await self.client.patch_status(namespace, name, decision.status)
            else:
                written = await self.client.patch_annotations(namespace, name, patch)
            version = await self._remember(key, written) or version
            for cond in decision.changed:
                await self._event(
                    body, cond, warnings=bool(outcome.warnings) and cond.type == conditions.VALIDATED
                )
        return version

    async def _remember(self, key: tuple[str, str], written: JSON | None) -> str:
        version = str((written or {}).get("metadata", {}).get("resourceVersion") or "")
        if version:
            self._status_versions[key] = version
        return version

    async def _forget(self, body: Mapping[str, Any]) -> None:
        """Delete what we made for a Component that is no longer a state store, and our status.

        A generated token Secret stays (the operator has no `delete` on Secrets); it goes with the
        Component, through its ownerReference.
        """
        meta = body["metadata"]
        for kind in (
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Deployment",
            "Service",
            "NetworkPolicy",
            "ConfigMap",
        ):
            await self.children.delete_owned(body, kind)
        if body.get("status"):
            await self.client.patch_status(meta["namespace"], meta["name"], None)
        if fallback.has_annotations(body):
            await self.client.patch_annotations(
                meta["namespace"], meta["name"], fallback.annotations_for(None)
            )

    async def _validate(self, body: Mapping[str, Any]) -> tuple[Outcome, dict[str, JSON | None]]:
        """The verdict, and the referenced Secrets as read now (for the secrets hash of the pods)."""
        first = check(body, None)
        if first.component is None:
            return first, {}
        namespace = body["metadata"]["namespace"]
        names = [item.secret.name for item in first.component.metadata if item.secret is not None]
        if first.token is not None and not first.token.generated:
            names.append(first.token.secret)
        found: dict[str, JSON | None] = {}
        for secret in names:
            if secret not in found:
                # GET by name in the Component's own namespace: no list, no other namespace.
                found[secret] = await self.client.get("Secret", namespace, secret)
        keys = {n: None if s is None else set((s.get("data") or {}).keys()) for n, s in found.items()}
        # The encryption keys are the only values read: a key of the wrong length is refused here,
        # not by a crash-looping pod. The values go to validation only (never logged or stored).
        read: dict[str, str] = {}
        for item, ref in keys_to_read(first.component).items():
            data = (found.get(ref.name) or {}).get("data") or {}
            if ref.key in data:
                read[item] = _secret_text(data[ref.key])
        return check(body, keys, read), found

    async def _actor_conflict(self, body: Mapping[str, Any]) -> str | None:
        if not actors.claims_actor_store(body):
            return None
        me = actors.actor_store(body)
        # A namespaced list, not the kopf index: the decision must not lag behind a deletion.
        claimants = [
            actors.actor_store(other)
            for other in await self.client.list_components(me.namespace)
            if actors.claims_actor_store(other) and not other["metadata"].get("deletionTimestamp")
        ]
        holder = actors.winner([me, *claimants])
        if holder is None or holder.name == me.name:
            return None
        return actors.conflict_message(me.name, holder.name, me.namespace)

    async def _event(self, body: Mapping[str, Any], cond: Condition, *, warnings: bool) -> None:
        await events.post_event(self.client, body, *conditions.event_for(cond, warnings))


@dataclass(frozen=True, slots=True)
class _Seen:
    """A full pass's conclusions, valid while the Component keeps this resourceVersion."""

    version: str
    outcome: Outcome
    conflict: str | None
    blocked: Blocked | None
    deployment_generation: int | None


def _generation(obj: Mapping[str, Any] | None) -> int | None:
    return None if obj is None else int(obj["metadata"].get("generation", 0))


def decide(
    body: Mapping[str, Any],
    outcome: Outcome,
    conflict: str | None,
    deployment: Mapping[str, Any] | None,
    timestamp: str,
    *,
    blocked: str | None = None,
    blocked_reason: str = conditions.REASON_NOT_OWNED,
) -> Decision:
    """The status a Component should have, given what was found (pure)."""
    meta = body["metadata"]
    generation = int(meta.get("generation", 1))
    validated = Condition.of(conditions.VALIDATED, outcome.ok, outcome.reason, outcome.message)
    available = conditions.availability(deployment)
    if blocked:
        available = Condition(conditions.AVAILABLE, "False", blocked_reason, blocked)
    ignore_errors = outcome.component is not None and outcome.component.ignore_errors
    ready = conditions.readiness(validated, available, conflict, ignore_errors=ignore_errors)
    new = [validated, available, ready]
    old = list((body.get("status") or {}).get("conditions") or [])
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": conditions.merge(old, new, generation, timestamp),
    }
    if deployment is not None:
        status["endpoint"] = naming.endpoint(meta["name"], meta["namespace"])
        status["grpcEndpoint"] = naming.grpc_endpoint(meta["name"], meta["namespace"])
        status.update(scaling.replica_counts(deployment))
    return Decision(outcome, conflict, status, conditions.transitions(old, new))


def _secret_text(encoded: object) -> str:
    """A Secret's data value as text; what is not base64 UTF-8 comes out as is, for validation to refuse."""
    try:
        return base64.b64decode(str(encoded), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return str(encoded)
