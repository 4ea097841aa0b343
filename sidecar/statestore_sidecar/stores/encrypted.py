"""daprd's state encryption as a layer around any `Store`: values are sealed on the way in and opened
on the way out, so every backend stores and returns exactly what daprd would.

A stored value is `base64(nonce + ciphertext + tag) + "||" + <key's secret name>` (AES-GCM, 12-byte
random nonce, no associated data). Writes use the primary key; reads take the key the suffix names,
primary or secondary. Keys and ETags, TTLs and deletes pass through untouched. Queries are refused:
the store cannot filter or sort values it only holds encrypted.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..encryption import Keys
from .base import (
    DeleteRequest,
    Feature,
    Item,
    Operation,
    QueryError,
    QueryPage,
    SetRequest,
    Store,
    StoreError,
)

if TYPE_CHECKING:
    from ..query import Query

SEPARATOR = b"||"
NONCE_BYTES = 12  # Go's cipher.NewGCM nonce size
QUERY_REFUSED = "cannot query encrypted store"  # daprd's words
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


class EncryptedStore:
    """`inner` with every value encrypted by `keys`; `name` (the Component's) is for error messages."""

    def __init__(self, inner: Store, keys: Keys, name: str) -> None:
        self.inner = inner
        self.name = name
        self.features: frozenset[Feature] = inner.features
        self._primary = keys.primary.name.encode()
        self._seal = AESGCM(keys.primary.material)
        self._ciphers = {
            key.name.encode(): AESGCM(key.material) for key in (keys.secondary, keys.primary) if key
        }

    def seal(self, value: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return base64.b64encode(nonce + self._seal.encrypt(nonce, value, None)) + SEPARATOR + self._primary

    def open(self, stored: bytes) -> bytes:
        if not stored:
            return stored  # daprd returns an empty value as it is
        cut = stored.rfind(SEPARATOR)
        if cut < 0 or not _BASE64.fullmatch(stored, 0, cut):
            # Most likely stored before encryption was turned on: turning it on re-encrypts nothing.
            raise self._unreadable("the value is not encrypted")
        name = stored[cut + len(SEPARATOR) :]
        if not name:
            raise self._unreadable("encryption key name not found on record")
        cipher = self._ciphers.get(name)
        if cipher is None:
            shown = name[:100].decode("utf-8", "replace")
            raise self._unreadable(
                f"the value was encrypted with key {shown!r}, which is neither primaryEncryptionKey"
                " nor secondaryEncryptionKey"
            )
        try:
            sealed = base64.b64decode(stored[:cut], validate=True)
        except binascii.Error:
            raise self._unreadable("the value is not base64") from None
        if len(sealed) < NONCE_BYTES:
            raise self._unreadable("the value is too short")
        try:
            return cipher.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], None)
        except InvalidTag:
            raise self._unreadable(
                "message authentication failed (another key, or an altered value)"
            ) from None

    def _unreadable(self, why: str) -> StoreError:
        return StoreError(f"could not decrypt data for state store {self.name}: {why}")

    def _opened(self, item: Item) -> Item:
        return dataclasses.replace(item, data=self.open(item.data))

    def _sealed(self, op: Operation) -> Operation:
        return dataclasses.replace(op, value=self.seal(op.value)) if isinstance(op, SetRequest) else op

    async def init(self) -> None:
        await self.inner.init()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        await self.inner.ping()

    async def get(self, key: str) -> Item | None:
        item = await self.inner.get(key)
        return None if item is None else self._opened(item)

    async def bulk_get(self, keys: Sequence[str]) -> Mapping[str, Item]:
        found = await self.inner.bulk_get(keys)
        return {key: self._opened(item) for key, item in found.items()}

    async def set(self, request: SetRequest) -> None:
        await self.inner.set(dataclasses.replace(request, value=self.seal(request.value)))

    async def delete(self, request: DeleteRequest) -> None:
        await self.inner.delete(request)

    async def transact(self, operations: Sequence[Operation]) -> None:
        await self.inner.transact([self._sealed(op) for op in operations])

    async def query(self, query: Query, key_prefix: str) -> QueryPage:
        raise QueryError(QUERY_REFUSED)
