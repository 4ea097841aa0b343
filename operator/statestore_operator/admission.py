"""The validating webhook's decision (pure): what `kubectl apply` is told about a Component."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import actors
from .validation import check, is_state_store


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    message: str = ""
    warnings: tuple[str, ...] = ()


def review(body: Mapping[str, Any], claimants: Iterable[actors.ActorStore]) -> Verdict:
    """Allow or refuse a Component create/update.

    Secrets are not checked here: a Secret is often applied after the Component that uses it; the
    reconciler reports a missing one in the status instead.
    """
    if not is_state_store(body):
        return Verdict(True)
    outcome = check(body, None)
    if not outcome.ok:
        return Verdict(False, outcome.message)
    if actors.claims_actor_store(body):
        name = str(body["metadata"].get("name", ""))
        namespace = str(body["metadata"].get("namespace", ""))
        others = sorted(c for c in claimants if c.name != name)
        if others:
            return Verdict(False, actors.conflict_message(name, others[0].name, namespace), outcome.warnings)
    return Verdict(True, "", outcome.warnings)
