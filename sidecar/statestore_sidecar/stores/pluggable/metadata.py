"""A pluggable component's metadata: passed to its Init as given; only the settings every state store
has (keyPrefix, actorStateStore) are this server's."""

from __future__ import annotations

from ...schema import StoreSchema

SCHEMA = StoreSchema(type="state.pluggable", fields=(), features=frozenset(), passthrough=True)
