"""Values come back as they were sent: the JSON text of each value, byte for byte (numbers in the
form given, string escapes, key order and spacing), through save, transaction, get, bulk get and
query; only PostgreSQL's jsonb normalises JSON text, as it does for daprd (docs/state-api.md)."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import httpx
import pytest

from fixtures.stores import ComponentUnderTest

STATE = "/v1.0/state/store"

# Each value exactly as it appears in the body, and as PostgreSQL's jsonb gives it back.
VALUES: dict[str, tuple[bytes, bytes]] = {
    "exponent": (b"1e3", b"1000"),
    "float": (b"1.50", b"1.50"),
    "negative-zero": (b"-0", b"0"),
    "big-int": (b"123456789012345678901234567890", b"123456789012345678901234567890"),
    "int64": (b"9223372036854775807", b"9223372036854775807"),
    "escapes": (b'"caf\\u00e9 \\/ \\"q\\""', b'"caf\xc3\xa9 / \\"q\\""'),
    "object": (b'{ "b" : 1e3,"a":[ 1 , 2.0 ] }', b'{"a": [1, 2.0], "b": 1000}'),
}


def body_of(values: dict[str, bytes], k: str) -> bytes:
    items = b", ".join(
        b'{"key": "%s-%s", "value": %s}' % (k.encode(), n.encode(), v) for n, v in values.items()
    )
    return b"[" + items + b"]"


def expected(component: ComponentUnderTest, name: str) -> bytes:
    sent, normalised = VALUES[name]
    return normalised if not component.offers.exact_json else sent


async def test_values_come_back_as_sent(api: httpx.AsyncClient, component: ComponentUnderTest) -> None:
    k = uuid.uuid4().hex
    sent = {name: v for name, (v, _) in VALUES.items()}
    r = await api.post(STATE, content=body_of(sent, k), headers={"content-type": "application/json"})
    assert r.status_code == 204, r.text
    for name in VALUES:
        got = await api.get(f"{STATE}/{k}-{name}")
        assert got.status_code == 200 and got.content == expected(component, name), name
    bulk = await api.post(f"{STATE}/bulk", json={"keys": [f"{k}-{name}" for name in VALUES]})
    raw = bulk.content
    for name in VALUES:
        # Bulk get embeds each value's text as is.
        assert b'"data":' + expected(component, name) in raw, name


async def test_transaction_values_come_back_as_sent(
    api: httpx.AsyncClient, component: ComponentUnderTest
) -> None:
    k = "{" + uuid.uuid4().hex + "}"  # a hash tag: one Redis Cluster slot for the whole transaction
    operations = b", ".join(
        b'{"operation": "upsert", "Request": {"key": "%s-%s", "value": %s}}' % (k.encode(), n.encode(), v)
        for n, (v, _) in VALUES.items()
    )
    r = await api.post(
        f"{STATE}/transaction",
        content=b'{"operations": [' + operations + b"]}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 204, r.text
    for name in VALUES:
        got = await api.get(f"{STATE}/{quote(k)}-{name}")
        assert got.content == expected(component, name), name


@pytest.mark.parametrize("item", [b'{"key": "%s", "value": 1, "value": 1e3}', b'{"key": "%s", "Value": 1e3}'])
async def test_the_value_go_would_decode_is_the_one_stored(
    api: httpx.AsyncClient, component: ComponentUnderTest, item: bytes
) -> None:
    """Duplicate members: the last wins; names match case-insensitively, as Go decodes them."""
    k = uuid.uuid4().hex
    assert (await api.post(STATE, content=b"[" + item % k.encode() + b"]")).status_code == 204
    got = await api.get(f"{STATE}/{k}")
    assert got.content == (b"1e3" if component.offers.exact_json else b"1000")
