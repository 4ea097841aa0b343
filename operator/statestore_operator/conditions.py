"""Status conditions of a Component (metav1.Condition) and what changes between two statuses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .actors import CONFLICT

VALIDATED = "Validated"
AVAILABLE = "Available"
READY = "Ready"
ORDER = (VALIDATED, AVAILABLE, READY)

# Reasons of Available (and of Ready when it is not ready for availability reasons).
REASON_AVAILABLE = "Available"
REASON_PROGRESSING = "Progressing"
REASON_UNAVAILABLE = "Unavailable"
REASON_NOT_DEPLOYED = "NotDeployed"
REASON_SCALED_TO_ZERO = "ScaledToZero"
REASON_NOT_OWNED = "NameInUse"
_MAX_MESSAGE = 32768


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: str  # "True", "False" or "Unknown"
    reason: str
    message: str

    @classmethod
    def of(cls, type_: str, ok: bool, reason: str, message: str) -> Condition:
        return cls(type_, "True" if ok else "False", reason, message)


def availability(deployment: Mapping[str, Any] | None) -> Condition:
    """Available, from the owned Deployment's own status (as the controller-manager reports it)."""
    if deployment is None:
        return Condition(AVAILABLE, "False", REASON_NOT_DEPLOYED, "no Deployment has been created")
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = deployment["metadata"]["name"]
    wanted = int(spec.get("replicas", 1))
    if wanted == 0:
        return Condition(AVAILABLE, "False", REASON_SCALED_TO_ZERO, f"Deployment {name} runs no pods")
    observed = int(status.get("observedGeneration", 0))
    generation = int(deployment["metadata"].get("generation", 0))
    updated = int(status.get("updatedReplicas", 0))
    available = int(status.get("availableReplicas", 0))
    counts = f"{available}/{wanted} replicas available, {updated}/{wanted} updated"
    if observed >= generation and updated >= wanted and available >= wanted:
        return Condition(AVAILABLE, "True", REASON_AVAILABLE, f"Deployment {name}: {counts}")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            detail = cond.get("message") or "the rollout is stuck"
            return Condition(AVAILABLE, "False", REASON_UNAVAILABLE, f"Deployment {name}: {counts}; {detail}")
    return Condition(AVAILABLE, "False", REASON_PROGRESSING, f"Deployment {name}: {counts}")


IGNORE_ERRORS_NOTE = (
    "; spec.ignoreErrors is true: the pods are Ready even if the store failed to initialise, in which "
    "case they serve without it (its requests fail with ERR_STATE_STORE_NOT_FOUND; the pod log says why)"
)


def readiness(
    validated: Condition, available: Condition, conflict: str | None, *, ignore_errors: bool = False
) -> Condition:
    """Ready: the Component as written is served. The first thing in the way is the reason."""
    if validated.status != "True":
        return Condition(READY, "False", validated.reason, validated.message)
    if conflict:
        return Condition(READY, "False", CONFLICT, conflict)
    if available.status != "True":
        return Condition(READY, "False", available.reason, available.message)
    note = IGNORE_ERRORS_NOTE if ignore_errors else ""
    return Condition(READY, "True", REASON_AVAILABLE, "the state API is serving" + note)


def merge(
    old: Sequence[Mapping[str, Any]], new: Sequence[Condition], generation: int, now: str
) -> list[dict[str, Any]]:
    """The conditions list to write: lastTransitionTime moves only when a condition's status changes."""
    before = {c.get("type"): c for c in old}
    result: list[dict[str, Any]] = []
    for cond in new:
        prior = before.get(cond.type)
        since = (
            now
            if prior is None or prior.get("status") != cond.status
            else prior.get("lastTransitionTime", now)
        )
        result.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message[:_MAX_MESSAGE],
                "observedGeneration": generation,
                "lastTransitionTime": since,
            }
        )
    # Keep conditions someone else set (never delete conditions).
    known = {c.type for c in new}
    result.extend(dict(c) for c in old if c.get("type") not in known)
    return result


def transitions(old: Sequence[Mapping[str, Any]], new: Sequence[Condition]) -> list[Condition]:
    """Conditions whose status, reason or message changed: each deserves one Event, retries none."""
    before = {c.get("type"): c for c in old}
    changed: list[Condition] = []
    for cond in new:
        prior = before.get(cond.type)
        if prior is None or (prior.get("status"), prior.get("reason"), prior.get("message")) != (
            cond.status,
            cond.reason,
            cond.message[:_MAX_MESSAGE],
        ):
            changed.append(cond)
    return changed


def event_for(cond: Condition, warnings: bool = False) -> tuple[str, str, str]:
    """(type, reason, message) of the Event announcing a condition's new state."""
    bad = cond.status != "True" or warnings
    return ("Warning" if bad else "Normal", cond.reason, f"{cond.type}={cond.status}: {cond.message}")
