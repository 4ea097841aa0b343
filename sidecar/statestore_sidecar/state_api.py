"""The state API's operations, whatever the transport: one rule, one place.

The HTTP adapter (`app.py`) and the gRPC adapter (`grpc_api.py`) decode their requests into the
values here (`ItemRequest`, store names, keys), call a `StateCore` method, and render what it
returns or the `ApiError` it raises (`errors.py` gives every error its HTTP and gRPC form). Key
validation and prefixing, readiness, option and TTL rules, the parallel independent writes of a
bulk save, and how store failures become Dapr's errors live only here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import errors, keys
from . import query as q
from .errors import ApiError
from .json_codec import Malformed, decode_json
from .runtime import Runtime, StoreHandle
from .stores.base import (
    Concurrency,
    DeleteRequest,
    Feature,
    Item,
    Operation,
    QueryError,
    QueryPage,
    SetRequest,
    StoreError,
)

log = logging.getLogger("statestore.api")

TTL_MAX = 2**31 - 1


def ttl_seconds(metadata: Mapping[str, str]) -> int | None:
    """`ttlInSeconds` from request metadata; a bad value is a store error (HTTP 500, as daprd)."""
    raw = metadata.get("ttlInSeconds")
    if raw is None:
        return None
    try:
        ttl = int(raw)
    except ValueError:
        raise StoreError(f"incorrect value for metadata ttlInSeconds: {raw!r} is not an integer") from None
    if not -1 <= ttl <= TTL_MAX:
        raise StoreError(f"incorrect value for metadata ttlInSeconds: {ttl} is not between -1 and {TTL_MAX}")
    return ttl


def concurrency(value: str | None) -> Concurrency:
    if not value:
        return Concurrency.LAST_WRITE
    try:
        return Concurrency(value)
    except ValueError:
        raise StoreError(f"unrecognized concurrency model '{value}'") from None


def check_consistency(value: str | None) -> None:
    # Accepted and validated like daprd's stores; a single-node backend has nothing to vary.
    if value and value not in ("strong", "eventual"):
        raise StoreError(f"unrecognized consistency model '{value}'")


def check_operation_kind(kind: str) -> None:
    if kind not in ("upsert", "delete"):
        raise errors.operation_not_supported(kind)


@dataclass(frozen=True, slots=True)
class ItemRequest:
    """One item to save or delete (or one transaction operation's request), however it arrived."""

    key: str
    value: bytes
    etag: str | None = None
    metadata: Mapping[str, str] | None = None
    concurrency: str | None = None
    consistency: str | None = None

    def set_request(self, stored_key: str, extra_metadata: Mapping[str, str]) -> SetRequest:
        """The store write; StoreError for option or TTL values a store would refuse."""
        check_consistency(self.consistency)
        return SetRequest(
            key=stored_key,
            value=self.value,
            etag=self.etag or None,
            concurrency=concurrency(self.concurrency),
            ttl=ttl_seconds({**(self.metadata or {}), **extra_metadata}),
        )

    def delete_request(self, stored_key: str) -> DeleteRequest:
        check_consistency(self.consistency)
        return DeleteRequest(stored_key, self.etag or None, concurrency(self.concurrency))


@dataclass(frozen=True, slots=True)
class ComponentInfo:
    name: str
    type: str
    version: str
    capabilities: list[str]


@dataclass(frozen=True, slots=True)
class MetadataView:
    """What `GET /v1.0/metadata` and gRPC `GetMetadata` report."""

    app_id: str
    runtime_version: str
    extended: dict[str, str]
    components: list[ComponentInfo]


class StateCore:
    """The operations over one runtime's stores; methods raise `ApiError` for every refusal."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app_id = runtime.settings.app_id
        self.max_body_size = runtime.settings.max_body_size

    # -- lookups ------------------------------------------------------------------------------

    def handle(self, name: str, for_query: bool = False) -> StoreHandle:
        stores = self.runtime.stores
        if not stores:
            raise errors.store_not_configured(name, self.app_id, for_query)
        handle = stores.get(name)
        if handle is None:
            raise errors.store_not_found(name, self.app_id, for_query)
        return handle

    def transactional(self, name: str) -> StoreHandle:
        """The store, which must offer transactions (checked before the request is decoded)."""
        handle = self.handle(name)
        if Feature.TRANSACTIONAL not in handle.features:
            raise errors.transactions_not_supported(handle.name)
        return handle

    def queryable(self, name: str) -> StoreHandle:
        handle = self.handle(name, for_query=True)
        if Feature.QUERY_API not in handle.features:
            raise errors.query_not_supported(handle.name)
        return handle

    def stored_key(self, handle: StoreHandle, key: str) -> str:
        if keys.SEPARATOR in key:
            raise errors.illegal_key(handle.name, key)
        return handle.keys.stored(key)

    # -- operations ---------------------------------------------------------------------------

    async def save(
        self, handle: StoreHandle, items: Sequence[ItemRequest], extra_metadata: Mapping[str, str]
    ) -> None:
        """Independent writes, in parallel as daprd runs them; partial success is allowed."""
        stored: list[str] = []
        for item in items:
            if not item.key:
                raise errors.empty_key()
            stored.append(self.stored_key(handle, item.key))
        if not items:
            return
        if not handle.ready.is_set():
            raise errors.state_save(handle.name, [handle.unavailable()])

        async def save_one(item: ItemRequest, key: str) -> None:
            await handle.store.set(item.set_request(key, extra_metadata))

        failures = await _each(save_one(i, k) for i, k in zip(items, stored, strict=True))
        if failures:
            raise errors.state_save(handle.name, failures)

    async def get(self, handle: StoreHandle, key: str, consistency: str | None) -> Item | None:
        stored = self.stored_key(handle, key)
        try:
            check_consistency(consistency)
            if not handle.ready.is_set():
                raise handle.unavailable()
            return await handle.store.get(stored)
        except StoreError as exc:
            raise errors.state_get(handle.name, key, str(exc)) from None
        except Exception as exc:
            raise errors.state_get(handle.name, key, _unexpected(exc)) from None

    async def bulk_get(self, handle: StoreHandle, wanted: Sequence[str]) -> list[tuple[str, Item | None]]:
        """Each requested key with its item (None when missing), in the order asked."""
        if not wanted:
            return []
        stored = [self.stored_key(handle, k) for k in wanted]
        try:
            if not handle.ready.is_set():
                raise handle.unavailable()
            found = await handle.store.bulk_get(list(dict.fromkeys(stored)))
        except StoreError as exc:
            raise errors.bulk_get(str(exc)) from None
        except Exception as exc:
            raise errors.bulk_get(_unexpected(exc)) from None
        return [(key, found.get(skey)) for key, skey in zip(wanted, stored, strict=True)]

    async def delete(
        self,
        handle: StoreHandle,
        key: str,
        etag: str | None,
        mode: str | None = None,
        consistency: str | None = None,
    ) -> None:
        stored = self.stored_key(handle, key)
        try:
            request = DeleteRequest(stored, etag or None, concurrency(mode))
            check_consistency(consistency)
            if not handle.ready.is_set():
                raise handle.unavailable()
            await handle.store.delete(request)
        except StoreError as exc:
            raise errors.state_delete(key, exc) from None
        except Exception as exc:
            raise errors.state_delete(key, StoreError(_unexpected(exc))) from None

    async def delete_bulk(self, handle: StoreHandle, items: Sequence[ItemRequest]) -> None:
        """Independent deletes in parallel, as `save` (gRPC only: HTTP has no bulk delete)."""
        stored = [self.stored_key(handle, item.key) for item in items]
        if not items:
            return
        if not handle.ready.is_set():
            raise errors.state_delete_bulk(handle.name, [handle.unavailable()])

        async def delete_one(item: ItemRequest, key: str) -> None:
            await handle.store.delete(item.delete_request(key))

        failures = await _each(delete_one(i, k) for i, k in zip(items, stored, strict=True))
        if failures:
            raise errors.state_delete_bulk(handle.name, failures)

    def operation(
        self, handle: StoreHandle, kind: str, item: ItemRequest, extra_metadata: Mapping[str, str]
    ) -> Operation:
        """One transaction operation; option and TTL errors fail the transaction.

        Unlike daprd, an empty key is refused here as in saves (docs/state-api.md).
        """
        check_operation_kind(kind)
        if not item.key:
            raise errors.empty_key()
        stored = self.stored_key(handle, item.key)
        try:
            if kind == "delete":
                return item.delete_request(stored)
            return item.set_request(stored, extra_metadata)
        except StoreError as exc:
            raise errors.transaction(describe(exc)) from None

    async def transact(self, handle: StoreHandle, operations: Sequence[Operation]) -> None:
        if not operations:
            return
        try:
            if not handle.ready.is_set():
                raise handle.unavailable()
            await handle.store.transact(operations)
        except StoreError as exc:
            raise errors.transaction(describe(exc)) from None
        except Exception as exc:
            raise errors.transaction(_unexpected(exc)) from None

    async def query(self, handle: StoreHandle, body: bytes) -> QueryPage:
        try:
            parsed = q.parse(decode_json(body))
        except (Malformed, q.QuerySyntaxError) as exc:
            raise errors.query_failed(handle.name, f"failed to parse JSON query body: {exc}") from None
        try:
            if not handle.ready.is_set():
                raise handle.unavailable()
            return await handle.store.query(parsed, handle.keys.query_prefix)
        except (QueryError, StoreError) as exc:
            raise errors.query_failed(handle.name, str(exc)) from None
        except Exception as exc:
            raise errors.query_failed(handle.name, _unexpected(exc)) from None

    # -- runtime ------------------------------------------------------------------------------

    def metadata(self) -> MetadataView:
        settings = self.runtime.settings
        return MetadataView(
            app_id=settings.app_id,
            runtime_version=settings.runtime_version,
            extended={"daprRuntimeVersion": settings.runtime_version, **self.runtime.extended},
            components=[
                ComponentInfo(h.name, h.type, h.version, h.capabilities) for h in self.runtime.stores.values()
            ],
        )

    def set_metadata(self, key: str, value: str) -> None:
        self.runtime.extended[key] = value

    async def health(self, app_id: str | None = None) -> None:
        if app_id and app_id != self.app_id:
            raise errors.app_id_mismatch()
        if self.runtime.drain.draining:  # stopping: take this replica out of the Service's endpoints
            raise errors.not_ready(["shutting down"])
        failing = await self.runtime.unhealthy()
        if failing:
            raise errors.not_ready([f"state store {name}" for name in failing])

    async def outbound_health(self) -> None:
        if await self.runtime.unhealthy():
            raise errors.outbound_not_ready()


async def _each(calls: Any) -> list[StoreError]:
    """Run store calls (one directly, several in parallel); their failures, in request order."""
    pending: list[Awaitable[None]] = list(calls)
    if len(pending) == 1:
        outcomes = [await _capture(pending[0])]
    else:
        outcomes = await asyncio.gather(*(_capture(c) for c in pending))
    return [o for o in outcomes if o is not None]


async def _capture(awaitable: Awaitable[None]) -> StoreError | None:
    try:
        await awaitable
    except StoreError as exc:
        return exc
    except ApiError:
        raise
    except Exception as exc:
        return StoreError(_unexpected(exc))
    return None


describe = errors.describe


def _unexpected(exc: Exception) -> str:
    log.error("unexpected error: %r", exc, exc_info=exc)
    return f"internal error ({type(exc).__name__})"


def expire_time(expires_at: float) -> str:
    """`ttlExpireTime` as daprd reports it: RFC 3339 in UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at))
