"""The contract every backend implements, and the values that cross it.

Routes speak to stores only through `Store`; a store never sees HTTP, JSON bodies or key prefixes
beyond the stored key it is given. Values are the exact bytes to store and return.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..query import Query


class Feature(enum.StrEnum):
    """Capabilities a store advertises, named as Dapr names them in `/v1.0/metadata`."""

    ETAG = "ETAG"
    TRANSACTIONAL = "TRANSACTIONAL"
    TTL = "TTL"
    QUERY_API = "QUERY_API"


class Concurrency(enum.StrEnum):
    FIRST_WRITE = "first-write"
    LAST_WRITE = "last-write"


@dataclass(frozen=True, slots=True)
class SetRequest:
    key: str
    value: bytes
    etag: str | None = None
    concurrency: Concurrency = Concurrency.LAST_WRITE
    # Seconds as given by `ttlInSeconds`: None when absent, -1 or 0 for "never expires".
    ttl: int | None = None


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    key: str
    etag: str | None = None
    concurrency: Concurrency = Concurrency.LAST_WRITE


Operation = SetRequest | DeleteRequest


@dataclass(frozen=True, slots=True)
class Item:
    """A stored value; `expires_at` is a Unix time in seconds, or None when the item never expires."""

    data: bytes
    etag: str
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class QueryItem:
    key: str
    data: bytes
    etag: str


@dataclass(frozen=True, slots=True)
class QueryPage:
    items: list[QueryItem] = field(default_factory=list)
    token: str | None = None


class StoreError(Exception):
    """A store could not do what was asked; the message is safe to show to clients."""


class EtagMismatch(StoreError):
    """The etag given does not match the item, or a first-write found the item present."""


class BackendUnavailable(StoreError):
    """The backend cannot be reached, or did not answer within the configured timeout."""


class NotThereYet(BackendUnavailable):
    """The backend is not there yet and checking again is cheap (a pluggable component's socket that
    its container has not made yet): retried often, not with the growing backoff."""


class QueryError(StoreError):
    """The query is well formed but this store cannot run it (for example a bad page token)."""


@runtime_checkable
class Store(Protocol):
    """One configured state store. Every method is safe to call concurrently."""

    features: frozenset[Feature]

    async def init(self) -> None:
        """Connect and prepare the backend (tables, scripts); raise BackendUnavailable if unreachable."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return when the backend answers; raise BackendUnavailable otherwise."""

    async def get(self, key: str) -> Item | None: ...

    async def bulk_get(self, keys: Sequence[str]) -> Mapping[str, Item]:
        """Found, unexpired items by key, fetched in one backend round trip."""

    async def set(self, request: SetRequest) -> None:
        """Write one item; raise EtagMismatch when the etag rules refuse it."""

    async def delete(self, request: DeleteRequest) -> None:
        """Delete one item; a missing key without an etag is not an error."""

    async def transact(self, operations: Sequence[Operation]) -> None:
        """Apply the operations in order, all or none."""

    async def query(self, query: Query, key_prefix: str) -> QueryPage:
        """Items whose stored key starts with `key_prefix`, filtered, sorted and paged."""


def etag_mismatch(key: str) -> EtagMismatch:
    return EtagMismatch(f"etag mismatch for key {key}")


def first_write_conflict(key: str) -> EtagMismatch:
    return EtagMismatch(f"key {key} already exists and first-write was requested")


def check_set(current: Item | None, request: SetRequest) -> None:
    """The etag rules of a write, for stores that compare etags in Python.

    With an etag the item must exist and carry it; first-write without an etag needs the key absent.
    """
    if request.etag:
        if current is None or current.etag != request.etag:
            raise etag_mismatch(request.key)
    elif request.concurrency is Concurrency.FIRST_WRITE and current is not None:
        raise first_write_conflict(request.key)


def check_delete(current: Item | None, request: DeleteRequest) -> None:
    """Deletes only check a given etag; first-write without one behaves like last-write."""
    if request.etag and (current is None or current.etag != request.etag):
        raise etag_mismatch(request.key)


def expiry(ttl: int | None, now: float) -> float | None:
    """When an item written now with this `ttlInSeconds` expires; None for never."""
    return now + ttl if ttl is not None and ttl > 0 else None
