"""The store types this server knows, each one module beside this file.

A store module defines `SCHEMA` (a `StoreSchema`) and `create(config: StoreConfig) -> Store`.
Modules import their database drivers lazily, so the operator can read every schema cheaply.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from ..schema import Resolved, StoreSchema
    from .base import Store

# Type name -> module holding it. Adding a backend means one line here and one module.
_MODULES = {
    "state.in-memory": "memory",
    "state.sqlite": "sqlite",
    "state.redis": "redis",
    "state.postgresql": "postgresql",
    "state.mysql": "mysql",
}
_ALIASES = {"state.sqlite3": "state.sqlite", "state.postgres": "state.postgresql"}


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """What a store module gets to build a store: its Component name and resolved metadata."""

    name: str
    metadata: Resolved


class _StoreModule(Protocol):
    SCHEMA: StoreSchema

    def create(self, config: StoreConfig) -> Store: ...


class UnknownStoreType(LookupError):
    pass


def known_types() -> list[str]:
    return sorted(_MODULES)


def _module(store_type: str) -> _StoreModule:
    canonical = canonical_type(store_type)
    module: ModuleType = importlib.import_module(f"{__name__}.{_MODULES[canonical]}")
    return cast(_StoreModule, module)


def canonical_type(store_type: str) -> str:
    lowered = store_type.lower()
    lowered = _ALIASES.get(lowered, lowered)
    if lowered not in _MODULES:
        raise UnknownStoreType(f"unknown state store type {store_type!r} (known: {', '.join(known_types())})")
    return lowered


def schema_for(store_type: str) -> StoreSchema:
    """The metadata schema of a store type, or UnknownStoreType."""
    return _module(store_type).SCHEMA


def create_store(store_type: str, config: StoreConfig) -> Store:
    return _module(store_type).create(config)
