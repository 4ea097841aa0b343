"""`state.in-memory` settings: none beyond those every store has."""

from __future__ import annotations

from ...schema import Persistence, StoreSchema
from ..base import Feature

SCHEMA = StoreSchema(
    type="state.in-memory",
    fields=(),
    features=frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API}),
    persistence=Persistence.MEMORY,
)
