"""The store types this server knows, each one package beside this file.

A store package `<name>/` holds `metadata.py` (`SCHEMA`: the settings and the parsers of their
values, importable without the database driver, so the operator validates with it cheaply) and
`store.py` (`create(config: StoreConfig) -> Store`). SQL stores add `dialect.py`, their dialect of the
shared query translator in `sql/`.

A `state.<name>` type that is none of these is a Dapr pluggable component when a socket named
`<name>` (any extension) is in the pluggable sockets folder (`pluggable/sockets.py`): the package
`pluggable/` serves it, as daprd does. A type declared pluggable (`pluggable=True`: its Component names
the container serving it) is one whether or not its socket is there yet: the store waits for it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, cast

from .pluggable.sockets import socket_folder, socket_for

if TYPE_CHECKING:
    from ..schema import Resolved, StoreSchema
    from .base import Store

# Type name -> package holding it. Adding a backend means one line here and one package.
_PACKAGES = {
    "state.in-memory": "memory",
    "state.sqlite": "sqlite",
    "state.redis": "redis",
    "state.postgresql": "postgresql",
    "state.mysql": "mysql",
}
_ALIASES = {"state.sqlite3": "state.sqlite", "state.postgres": "state.postgresql"}


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """What a store module gets to build a store: its Component name, resolved metadata and
    `spec.version` ("" when not given)."""

    name: str
    metadata: Resolved
    version: str = ""
    store_type: str = ""


class _MetadataModule(Protocol):
    SCHEMA: StoreSchema  # a module may add VERSIONS: {spec.version: StoreSchema} for other versions


class _StoreModule(Protocol):
    def create(self, config: StoreConfig) -> Store: ...


class UnknownStoreType(LookupError):
    pass


def known_types() -> list[str]:
    return sorted(_PACKAGES)


def canonical_type(store_type: str, *, pluggable: bool = False) -> str:
    lowered = store_type.lower()
    lowered = _ALIASES.get(lowered, lowered)
    if lowered in _PACKAGES:
        return lowered
    if is_pluggable(store_type, declared=pluggable):
        return store_type  # the socket's name, as written
    raise UnknownStoreType(
        f"unknown state store type {store_type!r} (known: {', '.join(known_types())}; "
        f"or a pluggable component's socket in {socket_folder()})"
    )


def is_pluggable(store_type: str, *, declared: bool = False) -> bool:
    """Whether the type is no built-in one and is declared pluggable or names a socket present now."""
    lowered = store_type.lower()
    if _ALIASES.get(lowered, lowered) in _PACKAGES or not lowered.startswith("state."):
        return False
    return declared or socket_for(store_type) is not None


def _package(store_type: str, pluggable: bool = False) -> str:
    canonical = canonical_type(store_type, pluggable=pluggable)
    return _PACKAGES.get(canonical, "pluggable")


def metadata_module(store_type: str, *, pluggable: bool = False) -> str:
    """The module name of a store type's metadata (schema and parsers)."""
    return f"{__name__}.{_package(store_type, pluggable)}.metadata"


def schema_for(store_type: str, version: str = "", *, pluggable: bool = False) -> StoreSchema:
    """The metadata schema of a store type (and `spec.version`), or UnknownStoreType."""
    module = cast(_MetadataModule, importlib.import_module(metadata_module(store_type, pluggable=pluggable)))
    versions: dict[str, StoreSchema] = getattr(module, "VERSIONS", {})
    return versions.get(version, module.SCHEMA)


def create_store(store_type: str, config: StoreConfig, *, pluggable: bool = False) -> Store:
    package = _package(store_type, pluggable)
    config = replace(config, store_type=canonical_type(store_type, pluggable=pluggable))
    return cast(_StoreModule, importlib.import_module(f"{__name__}.{package}.store")).create(config)
