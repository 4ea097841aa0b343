"""The actor state store rule: at most one `state.*` Component with `actorStateStore` per namespace.

Dapr enforces one actor store per daprd (per app, after `scopes`); a shared state API per namespace
makes the namespace the unit, which is stricter. The webhook refuses a second one at admission; the
reconciler decides between Components that got in anyway (webhook off) with `winner()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from statestore_sidecar.validation import UnknownStoreType, is_truthy, schema_for

from .validation import is_state_store

CONFLICT = "ActorStateStoreConflict"


@dataclass(frozen=True, slots=True, order=True)
class ActorStore:
    """One claimant; ordering is the tie-break: the oldest, then the name, wins."""

    created: str  # RFC 3339 creationTimestamp; these sort chronologically as text
    name: str
    namespace: str = ""


def claims_actor_store(body: Mapping[str, Any]) -> bool:
    """Whether a Component asks to be the actor store (a literal truthy `actorStateStore` value).

    Components whose type is unknown or cannot hold actor state do not count: they fail validation
    and never serve, so they must not block a valid one.
    """
    if not is_state_store(body):
        return False
    spec = body.get("spec") or {}
    items = spec.get("metadata") or []
    flagged = any(
        isinstance(item, Mapping)
        and str(item.get("name", "")).lower() == "actorstatestore"
        and is_truthy(None if item.get("value") is None else str(item.get("value")))
        for item in (items if isinstance(items, list) else [])
    )
    if not flagged:
        return False
    try:
        return schema_for(str(spec.get("type"))).transactional_with_etags
    except UnknownStoreType:
        return False


def actor_store(body: Mapping[str, Any]) -> ActorStore:
    meta = body.get("metadata") or {}
    return ActorStore(
        str(meta.get("creationTimestamp") or ""), str(meta["name"]), str(meta.get("namespace") or "")
    )


def winner(claimants: Iterable[ActorStore]) -> ActorStore | None:
    """The Component that holds the namespace's actor store: the oldest, then the first by name."""
    return min(claimants, default=None)


def conflict_message(loser: str, holder: str, namespace: str) -> str:
    return (
        f"metadata 'actorStateStore': state store {holder!r} is already the actor state store of namespace "
        f"{namespace}; only one per namespace is allowed ({loser!r} is not served until {holder!r} is "
        "deleted or drops actorStateStore)"
    )
