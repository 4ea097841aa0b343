"""`state.in-memory`: state in this process's memory, lost on restart. For tests and demos."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence

import orjson

from ... import query as q
from ...tasks import cancel_and_wait
from .. import StoreConfig
from ..base import (
    DeleteRequest,
    Item,
    Operation,
    QueryItem,
    QueryPage,
    SetRequest,
    check_delete,
    check_set,
    expiry,
)
from .metadata import SCHEMA

_SWEEP_INTERVAL = 1.0


class MemoryStore:
    """Each method runs without awaiting, so on one event loop every call is atomic."""

    features = SCHEMA.features

    def __init__(self, config: StoreConfig) -> None:
        self._name = config.name
        self._items: dict[str, Item] = {}
        self._sweeper: asyncio.Task[None] | None = None

    async def init(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def close(self) -> None:
        if self._sweeper is not None:
            await cancel_and_wait(self._sweeper)

    async def ping(self) -> None:
        return None

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL)
            now = time.time()
            for key in [
                k for k, v in self._items.items() if v.expires_at is not None and v.expires_at <= now
            ]:
                del self._items[key]

    def _live(self, key: str, now: float) -> Item | None:
        item = self._items.get(key)
        if item is not None and item.expires_at is not None and item.expires_at <= now:
            return None
        return item

    async def get(self, key: str) -> Item | None:
        return self._live(key, time.time())

    async def bulk_get(self, keys: Sequence[str]) -> Mapping[str, Item]:
        now = time.time()
        found = {}
        for key in keys:
            item = self._live(key, now)
            if item is not None:
                found[key] = item
        return found

    async def set(self, request: SetRequest) -> None:
        now = time.time()
        check_set(self._live(request.key, now), request)
        self._items[request.key] = Item(request.value, str(uuid.uuid4()), expiry(request.ttl, now))

    async def delete(self, request: DeleteRequest) -> None:
        check_delete(self._live(request.key, time.time()), request)
        self._items.pop(request.key, None)

    async def transact(self, operations: Sequence[Operation]) -> None:
        # Apply to an overlay first, so a refused operation leaves the store untouched.
        now = time.time()
        overlay: dict[str, Item | None] = {}
        for op in operations:
            current = overlay[op.key] if op.key in overlay else self._live(op.key, now)
            if isinstance(op, SetRequest):
                check_set(current, op)
                overlay[op.key] = Item(op.value, str(uuid.uuid4()), expiry(op.ttl, now))
            else:
                check_delete(current, op)
                overlay[op.key] = None
        for key, item in overlay.items():
            if item is None:
                self._items.pop(key, None)
            else:
                self._items[key] = item

    async def query(self, query: q.Query, key_prefix: str) -> QueryPage:
        now = time.time()
        rows: list[tuple[tuple[object, ...], QueryItem]] = []
        for key, item in self._items.items():
            if not key.startswith(key_prefix) or (item.expires_at is not None and item.expires_at <= now):
                continue
            try:
                doc = orjson.loads(item.data)
            except orjson.JSONDecodeError:
                continue
            if q.matches(query.filter, doc):
                rows.append((q.sort_key(query, key, doc), QueryItem(key, item.data, item.etag)))
        rows.sort(key=lambda row: row[0])
        end = query.offset + query.limit if query.limit else None
        items = [item for _, item in rows[query.offset : end]]
        return QueryPage(items, q.next_token(query, len(items)))


def create(config: StoreConfig) -> MemoryStore:
    return MemoryStore(config)
