"""Loading the state store Components a server is given, as daprd loads its resources."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from . import components
from .components import ComponentError

log = logging.getLogger("statestore.sidecar")


def load_stores(paths: Sequence[str], app_id: str, namespace: str | None) -> list[components.Validated]:
    """Every state store in the resources, validated; ComponentError on the first bad one."""
    loaded = components.load([Path(p) for p in paths], app_id=app_id, namespace=namespace)
    for what, why in loaded.skipped:
        log.info("skipping %s: %s", what, why)
    validated: list[components.Validated] = []
    for component in loaded.stores:
        try:
            item = components.validate(component, components.metadata_values(component, os.environ))
        except ComponentError:
            if component.ignore_errors:
                log.warning("state store %s is invalid and ignoreErrors is set: not loaded", component.name)
                continue
            raise
        for warning in item.warnings:
            log.warning("%s: component %r: %s", component.source, component.name, warning)
        validated.append(item)
    components.single_actor_store(validated)
    return validated
