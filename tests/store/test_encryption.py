"""The encryption layer around stores: daprd's value format, key rotation, and its refusals.

Fast checks on the in-memory store plus every backend; the daprd round trips are in
tests/daprd/test_encryption_daprd.py.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fixtures.sidecar import sidecar
from fixtures.stores import ComponentUnderTest, open_store
from statestore_sidecar import query as q
from statestore_sidecar.components import secret_env_var
from statestore_sidecar.encryption import Key, KeyRuleError, Keys, check_refs, parse_key
from statestore_sidecar.schema import Resolved
from statestore_sidecar.stores import StoreConfig
from statestore_sidecar.stores.base import DeleteRequest, QueryError, SetRequest, StoreError
from statestore_sidecar.stores.encrypted import EncryptedStore
from statestore_sidecar.stores.memory.store import create as create_memory

KEY1 = Key("key1", bytes.fromhex("000102030405060708090a0b0c0d0e0f"))
KEY2 = Key("key2", bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff"))
# Written by daprd 1.14.0 (HTTP save of the string "hello" under KEY1), as found in its SQLite file
# after base64-decoding the binary column.
DAPRD_SEALED = b"va9aH4lrbHh2is5tS3ET5ps7/ZKEBrloKa9hdO5GAQtR||key1"
SEALED = re.compile(rb"[A-Za-z0-9+/]+=*\|\|key[12]")


def memory() -> EncryptedStore:
    return EncryptedStore(create_memory(StoreConfig("store", Resolved({}))), Keys(KEY1), "store")


def test_opens_what_daprd_sealed() -> None:
    assert memory().open(DAPRD_SEALED) == b"hello"


def test_sealed_values_are_daprd_form_and_fresh_each_time() -> None:
    store = memory()
    first, second = store.seal(b'{"a":1}'), store.seal(b'{"a":1}')
    assert SEALED.fullmatch(first) and first.endswith(b"||key1")
    assert first != second  # a random nonce per value
    sealed = base64.b64decode(first.rsplit(b"||", 1)[0])
    assert len(sealed) == 12 + len(b'{"a":1}') + 16  # nonce, ciphertext, GCM tag
    assert store.open(first) == b'{"a":1}'


@pytest.mark.parametrize(
    ("stored", "why"),
    [
        (b"plain text", "the value is not encrypted"),
        (b'{"a":"x||key1"}', "the value is not encrypted"),
        (b"abc||", "encryption key name not found on record"),
        (b"abc||key9", "the value was encrypted with key 'key9', which is neither"),
        (b"abc||key1", "the value is not base64"),
        (b"AAAA||key1", "the value is too short"),
        (DAPRD_SEALED.replace(b"va9a", b"va9b"), "message authentication failed"),
    ],
)
def test_unreadable_values_are_errors_naming_the_store(stored: bytes, why: str) -> None:
    with pytest.raises(StoreError, match=r"^could not decrypt data for state store store: ") as info:
        memory().open(stored)
    assert why in str(info.value)


def test_a_value_of_another_key_is_refused() -> None:
    other = EncryptedStore(
        create_memory(StoreConfig("s", Resolved({}))), Keys(Key("key1", KEY2.material)), "s"
    )
    with pytest.raises(StoreError, match="message authentication failed"):
        other.open(memory().seal(b"x"))


async def test_rotation_writes_with_the_primary_and_reads_both() -> None:
    inner = create_memory(StoreConfig("store", Resolved({})))
    old = EncryptedStore(inner, Keys(KEY1), "store")
    await old.init()
    await old.set(SetRequest("a", b'"old"'))
    rotated = EncryptedStore(inner, Keys(KEY2, KEY1), "store")
    await rotated.set(SetRequest("b", b'"new"'))
    assert (await inner.get("a")).data.endswith(b"||key1")  # type: ignore[union-attr]
    assert (await inner.get("b")).data.endswith(b"||key2")  # type: ignore[union-attr]
    found = await rotated.bulk_get(["a", "b", "c"])
    assert {k: v.data for k, v in found.items()} == {"a": b'"old"', "b": b'"new"'}
    await rotated.transact([SetRequest("a", b"1"), DeleteRequest("b")])
    assert (await inner.get("a")).data.endswith(b"||key2")  # type: ignore[union-attr]
    assert await rotated.get("b") is None
    with pytest.raises(QueryError, match=r"^cannot query encrypted store$"):
        await rotated.query(q.parse({"filter": {}}), "")


async def test_every_backend_keeps_only_sealed_values(component: ComponentUnderTest) -> None:
    """ETags, first-write and TTLs work as without encryption; the backend holds only sealed values."""
    async with open_store(component) as inner:
        store = EncryptedStore(inner, Keys(KEY2, KEY1), "store")
        key = f"enc-{component.backend}"
        await store.set(SetRequest(key, b'{"secret":"value"}', ttl=3600))
        item = await store.get(key)
        assert item is not None and item.data == b'{"secret":"value"}' and item.expires_at is not None
        raw = await inner.get(key)
        assert raw is not None and SEALED.fullmatch(raw.data) and b"secret" not in raw.data
        assert raw.etag == item.etag
        await store.set(SetRequest(key, b"2", etag=item.etag))
        assert (await store.get(key)).data == b"2"  # type: ignore[union-attr]
        with pytest.raises(StoreError):
            await store.set(SetRequest(key, b"3", etag=item.etag))
        await store.delete(DeleteRequest(key))
        assert await store.get(key) is None


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_key_lengths_daprd_accepts(bits: int) -> None:
    text = "ab" * (bits // 8)
    assert parse_key(text) == bytes.fromhex(text)
    assert parse_key(text.upper()) == bytes.fromhex(text)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "the secret is empty"),
        ("ab" * 8 + "\n", "characters other than 0-9 and a-f (a trailing newline or spaces?)"),
        ("zz" * 16, "characters other than 0-9 and a-f"),
        ("abc", "odd number of hex digits (3)"),
        ("ab" * 10, "the key is 80 bits (20 hex digits); AES-GCM takes 128-, 192- or 256-bit keys"),
        ("ab" * 64, "the key is 512 bits (128 hex digits)"),
        ("secretpassword12", "characters other than 0-9 and a-f"),
    ],
)
def test_bad_keys_are_refused_without_quoting_them(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)) as info:
        parse_key(text)
    if text.strip():
        assert text.strip() not in str(info.value)


@pytest.mark.parametrize(
    ("given", "item", "why"),
    [
        ({"primaryEncryptionKey": None}, "primaryEncryptionKey", "must be a secretKeyRef"),
        ({"PrimaryEncryptionKey": "s"}, "PrimaryEncryptionKey", "write it as 'primaryEncryptionKey'"),
        ({"secondaryEncryptionKey": "s"}, "secondaryEncryptionKey", "needs primaryEncryptionKey"),
        (
            {"primaryEncryptionKey": "s", "secondaryEncryptionKey": "s"},
            "secondaryEncryptionKey",
            "names the same secret as primaryEncryptionKey ('s')",
        ),
    ],
)
def test_key_naming_rules(given: dict[str, str | None], item: str, why: str) -> None:
    with pytest.raises(KeyRuleError, match=re.escape(why)) as info:
        check_refs(given)
    assert info.value.item == item


def test_key_naming_rules_accept_two_secrets() -> None:
    check_refs({"primaryEncryptionKey": "new", "secondaryEncryptionKey": "old", "other": None})


def test_turning_encryption_on_leaves_older_values_unreadable_with_a_clear_error(tmp_path: Path) -> None:
    """Through the server: what was stored in plain text before stays so, and reads say why."""
    db = tmp_path / "state.db"
    items: list[dict[str, Any]] = [{"name": "connectionString", "value": str(db)}]
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(manifest(items)))
    with sidecar(["--app-id", "app", "--resources-path", str(plain)]) as url:
        assert httpx.post(f"{url}/v1.0/state/store", json=[{"key": "k", "value": 1}]).status_code == 204
    keyed = tmp_path / "keyed.yaml"
    ref: dict[str, Any] = {"name": "primaryEncryptionKey", "secretKeyRef": {"name": "enc", "key": "key"}}
    keyed.write_text(yaml.safe_dump(manifest([*items, ref])))
    env = {secret_env_var("enc", "key"): KEY1.material.hex()}
    with sidecar(["--app-id", "app", "--resources-path", str(keyed)], env) as url:
        old = httpx.get(f"{url}/v1.0/state/store/k")
        assert old.status_code == 500 and old.json() == {
            "errorCode": "ERR_STATE_GET",
            "message": "fail to get k from state store store: could not decrypt data for state store store:"
            " the value is not encrypted",
        }
        assert httpx.post(f"{url}/v1.0/state/store", json=[{"key": "k", "value": 2}]).status_code == 204
        assert httpx.get(f"{url}/v1.0/state/store/k").json() == 2


def manifest(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "store"},
        "spec": {"type": "state.sqlite", "version": "v1", "metadata": items},
    }
