"""The store conformance suite: every backend, the same behaviour, through the `Store` protocol.

Modelled on Dapr's state store conformance tests (dapr/components-contrib, tests/conformance/state),
written for our protocol. Stores that do not advertise a feature must say so, and refuse it.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from fixtures.stores import ComponentUnderTest, key_base, read_before_expiry
from statestore_sidecar import query as q
from statestore_sidecar.stores.base import (
    Concurrency,
    DeleteRequest,
    EtagMismatch,
    Feature,
    SetRequest,
    Store,
    StoreError,
)

FIRST = Concurrency.FIRST_WRITE


def js(value: object) -> bytes:
    return orjson.dumps(value)


@pytest.fixture
def base(request: pytest.FixtureRequest) -> str:
    """A random key base per test, as the reference suite uses, so tests never see each other."""
    return key_base(request)


def is_json(value: bytes) -> bool:
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return True


SCENARIOS: dict[str, bytes] = {
    "int": js(123),
    "bool": js(True),
    "bytes": b"\x01",
    "proto": bytes([0x0A, 0x03, 0xFF, 0xFE, 0x00, 0x12, 0x01, 0x80]),
    "string-with-json": js('{"a":"b"}'),
    "string": js("hello world"),
    "empty-string": js(""),
    "null": b"null",
    "struct": js({"message": "test"}),
    "unicode": js({"emoji": "⏱️", "text": "grüße"}),
}


async def test_features_are_the_documented_ones(store: Store, component: ComponentUnderTest) -> None:
    offers = component.offers
    documented = {
        Feature.ETAG: True,
        Feature.QUERY_API: offers.query,
        Feature.TRANSACTIONAL: offers.transactions,
        Feature.TTL: offers.ttl,
    }
    assert store.features == {feature for feature, offered in documented.items() if offered}


async def test_ping(store: Store) -> None:
    await store.ping()


async def test_set_and_get_every_kind_of_value(
    store: Store, base: str, component: ComponentUnderTest
) -> None:
    for name, value in SCENARIOS.items():
        await store.set(SetRequest(f"{base}-{name}", value))
    for name, value in SCENARIOS.items():
        item = await store.get(f"{base}-{name}")
        assert item is not None, name
        if component.offers.exact_json or not is_json(value):
            assert item.data == value, name  # byte-exact, binary included
        else:  # PostgreSQL's jsonb rewrites JSON text, as daprd's does: the same value comes back
            assert orjson.loads(item.data) == orjson.loads(value), name
        assert item.etag, name
        assert item.expires_at is None, name


async def test_get_missing_key_is_none(store: Store, base: str) -> None:
    assert await store.get(f"{base}-nothing") is None


async def test_overwrite_replaces_value_and_etag(store: Store, base: str) -> None:
    key = f"{base}-k"
    await store.set(SetRequest(key, js(1)))
    first = await store.get(key)
    await store.set(SetRequest(key, js(2)))
    second = await store.get(key)
    assert first is not None and second is not None
    assert second.data == js(2)
    assert second.etag != first.etag


async def test_delete(store: Store, base: str) -> None:
    await store.set(SetRequest(f"{base}-gone", js("to be deleted")))
    await store.delete(DeleteRequest(f"{base}-gone"))
    assert await store.get(f"{base}-gone") is None
    # Deleting a key that was never written succeeds.
    await store.delete(DeleteRequest(f"{base}-never-written"))


async def test_bulk_get_includes_found_items_only(store: Store, base: str) -> None:
    keys = [f"{base}-bulk-{i}" for i in range(7)]
    for i, key in enumerate(keys):
        await store.set(SetRequest(key, js({"i": i})))
    found = await store.bulk_get([*keys, f"{base}-doesnotexist"])
    assert set(found) == set(keys)
    for i, key in enumerate(keys):
        assert orjson.loads(found[key].data) == {"i": i}
        assert found[key].etag


async def test_bulk_get_of_ten_thousand_keys(store: Store, base: str) -> None:
    keys = [f"{base}-many-{i}" for i in range(10_000)]
    await store.transact([SetRequest(keys[i], js(i)) for i in range(0, 10_000, 100)])
    found = await store.bulk_get(keys)
    assert len(found) == 100
    assert found[keys[500]].data == js(500)


async def test_large_value_round_trips(store: Store, base: str) -> None:
    value = b'{"blob": "' + b"x" * (3 * 1024 * 1024) + b'"}'  # jsonb's own form: exact everywhere
    await store.set(SetRequest(f"{base}-large", value))
    item = await store.get(f"{base}-large")
    assert item is not None and item.data == value


async def test_odd_keys_round_trip(store: Store, base: str) -> None:
    keys = [
        f"{base}-ключ 🗝",
        f"{base}/with/slashes",
        f"{base} spaces  ",
        f"{base}-'quote\"s;--",
        f"{base}-%2F+",
    ]
    for i, key in enumerate(keys):
        await store.set(SetRequest(key, js(i)))
    for i, key in enumerate(keys):
        item = await store.get(key)
        assert item is not None and item.data == js(i), key
    assert set(await store.bulk_get(keys)) == set(keys)


# --- transactions ---------------------------------------------------------------------------


async def test_transaction_applies_groups(store: Store, base: str) -> None:
    upserts = {f"{base}-trx-{n}": js(n) for n in ("int", "bool", "string")}
    await store.transact([SetRequest(k, v) for k, v in upserts.items()])
    for key, value in upserts.items():
        item = await store.get(key)
        assert item is not None and item.data == value
    await store.transact([SetRequest(f"{base}-trx-struct", js({"a": 1})), DeleteRequest(f"{base}-trx-int")])
    assert await store.get(f"{base}-trx-int") is None
    assert await store.get(f"{base}-trx-struct") is not None


async def test_transaction_deleting_missing_key_succeeds(store: Store, base: str) -> None:
    await store.transact([DeleteRequest(f"{base}-non-existent-key"), SetRequest(f"{base}-k", js(1))])
    assert await store.get(f"{base}-non-existent-key") is None
    item = await store.get(f"{base}-k")
    assert item is not None and item.data == js(1)  # the rest of the transaction was applied


async def test_transaction_runs_in_order(store: Store, base: str) -> None:
    await store.set(SetRequest(f"{base}-k1", js("value1")))
    await store.transact(
        [
            DeleteRequest(f"{base}-k1"),
            SetRequest(f"{base}-k2", js("value2")),
            DeleteRequest(f"{base}-k2"),
            SetRequest(f"{base}-k3", js("value3")),
        ]
    )
    assert await store.get(f"{base}-k1") is None
    assert await store.get(f"{base}-k2") is None
    item = await store.get(f"{base}-k3")
    assert item is not None and orjson.loads(item.data) == "value3"


async def test_transaction_is_all_or_nothing(store: Store, base: str) -> None:
    await store.set(SetRequest(f"{base}-a", js("a0")))
    await store.set(SetRequest(f"{base}-b", js("b0")))
    with pytest.raises(EtagMismatch):
        await store.transact(
            [
                SetRequest(f"{base}-a", js("a1")),
                DeleteRequest(f"{base}-b"),
                SetRequest(f"{base}-c", js("c1")),
                SetRequest(f"{base}-b", js("b1"), etag="bad-etag"),
            ]
        )
    a, b = await store.get(f"{base}-a"), await store.get(f"{base}-b")
    assert a is not None and a.data == js("a0")
    assert b is not None and b.data == js("b0")
    assert await store.get(f"{base}-c") is None


async def test_transaction_checks_each_operation_etag(store: Store, base: str) -> None:
    await store.set(SetRequest(f"{base}-x", js(0)))
    current = await store.get(f"{base}-x")
    assert current is not None
    await store.transact([SetRequest(f"{base}-x", js(1), etag=current.etag)])
    with pytest.raises(EtagMismatch):  # the etag is stale now
        await store.transact([DeleteRequest(f"{base}-x", etag=current.etag)])
    with pytest.raises(EtagMismatch):  # first-write on an existing key
        await store.transact([SetRequest(f"{base}-x", js(2), concurrency=FIRST)])
    item = await store.get(f"{base}-x")
    assert item is not None and item.data == js(1)


# --- etags and concurrency ------------------------------------------------------------------


async def test_etags(store: Store, base: str) -> None:
    keys = [f"{base}-e{i}" for i in range(4)]
    for key in keys:
        await store.set(SetRequest(key, js("first-value")))
    found = await store.bulk_get(keys)
    etags = {k: found[k].etag for k in keys}
    assert all(etags.values())

    with pytest.raises(EtagMismatch):
        await store.set(SetRequest(keys[0], js("second-value"), etag="bad-etag"))
    await store.set(SetRequest(keys[0], js("second-value"), etag=etags[keys[0]]))
    item = await store.get(keys[0])
    assert item is not None and item.data == js("second-value")
    assert item.etag != etags[keys[0]]

    with pytest.raises(EtagMismatch):
        await store.delete(DeleteRequest(keys[1], etag="bad-etag"))
    await store.delete(DeleteRequest(keys[1], etag=etags[keys[1]]))
    assert await store.get(keys[1]) is None
    # An etag on a key that does not exist is a mismatch, for writes and deletes alike.
    with pytest.raises(EtagMismatch):
        await store.set(SetRequest(keys[1], js("x"), etag=etags[keys[1]]))
    with pytest.raises(EtagMismatch):
        await store.delete(DeleteRequest(keys[1], etag=etags[keys[1]]))


async def test_first_write_without_etag(store: Store, base: str) -> None:
    key = f"{base}-fw"
    await store.set(SetRequest(key, js(1), concurrency=FIRST))
    item = await store.get(key)
    assert item is not None and item.data == js(1)
    with pytest.raises(EtagMismatch):
        await store.set(SetRequest(key, js(2), concurrency=FIRST))


async def test_first_write_with_etag(store: Store, base: str) -> None:
    key = f"{base}-fwe"
    await store.set(SetRequest(key, js(1)))
    item = await store.get(key)
    assert item is not None
    await store.set(SetRequest(key, js(2), etag=item.etag, concurrency=FIRST))
    newer = await store.get(key)
    assert newer is not None and newer.etag != item.etag
    with pytest.raises(EtagMismatch):
        await store.set(SetRequest(key, js(3), etag=item.etag, concurrency=FIRST))


async def test_concurrent_first_writes_with_one_etag_admit_exactly_one(store: Store, base: str) -> None:
    key = f"{base}-race"
    await store.set(SetRequest(key, js(0)))
    item = await store.get(key)
    assert item is not None

    async def attempt(i: int) -> bool:
        try:
            await store.set(SetRequest(key, js(i), etag=item.etag, concurrency=FIRST))
        except EtagMismatch:
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(32)))
    assert results.count(True) == 1


async def test_etag_guarded_increments_lose_no_update(store: Store, base: str) -> None:
    key = f"{base}-counter"
    await store.set(SetRequest(key, js(0)))

    async def client(n: int) -> None:
        for _ in range(n):
            while True:
                item = await store.get(key)
                assert item is not None
                try:
                    await store.set(SetRequest(key, js(orjson.loads(item.data) + 1), etag=item.etag))
                    break
                except EtagMismatch:
                    await asyncio.sleep(0)

    await asyncio.gather(*(client(10) for _ in range(8)))
    item = await store.get(key)
    assert item is not None and orjson.loads(item.data) == 80


# --- TTL ------------------------------------------------------------------------------------


async def poll_until_gone(store: Store, key: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await store.get(key) is None:
            return True
        await asyncio.sleep(0.2)
    return False


async def test_ttl_expires_items(store: Store, base: str) -> None:
    key = f"{base}-ttl"
    item = await read_before_expiry(store, key, js("⏱️"))
    assert await poll_until_gone(store, key, 60)  # generous: expiry is due within the TTL
    # Expired items are absent for bulk get, etag checks and first-write alike.
    assert await store.bulk_get([key]) == {}
    with pytest.raises(EtagMismatch):
        await store.set(SetRequest(key, js(1), etag=item.etag))
    await store.set(SetRequest(key, js("again"), concurrency=FIRST))


async def test_ttl_expire_time_is_reported_and_cleared(store: Store, base: str) -> None:
    key = f"{base}-ttl-clear"
    await store.set(SetRequest(key, js("123"), ttl=3600))
    item = await store.get(key)
    assert item is not None and item.expires_at is not None
    assert abs(item.expires_at - (time.time() + 3600)) < 600
    found = await store.bulk_get([key])
    assert found[key].expires_at is not None
    await store.set(SetRequest(key, js("123"), ttl=-1))
    item = await store.get(key)
    assert item is not None and item.expires_at is None
    await store.set(SetRequest(key, js("123"), ttl=3600))
    await store.set(SetRequest(key, js("123")))  # no TTL given clears an earlier one
    item = await store.get(key)
    assert item is not None and item.expires_at is None
    await store.set(SetRequest(key, js("123"), ttl=0))
    item = await store.get(key)
    assert item is not None and item.expires_at is None


async def test_ttl_in_transactions(store: Store, base: str) -> None:
    await store.transact([SetRequest(f"{base}-t1", js(1), ttl=1), SetRequest(f"{base}-t2", js(2))])
    assert await poll_until_gone(store, f"{base}-t1", 60)  # generous: a loaded machine
    assert await store.get(f"{base}-t2") is not None


# --- query ----------------------------------------------------------------------------------


def parse(body: object) -> q.Query:
    return q.parse(body)


@pytest.fixture
async def people(query_store: Store, base: str) -> str:
    """Documents under the prefix `<base>||`, for query tests; returns the prefix."""
    store = query_store
    prefix = f"{base}||"
    docs = {
        "struct": {"message": f"test{base}"},
        "struct-2": {"message": f"{base}test"},
        "ops": {"product": {"value": 15}, "status": "ACTIVE", "message": f"{base}message"},
        "ops-inactive": {"product": {"value": 12}, "status": "INACTIVE", "message": f"{base}message"},
        "with-int": {"message": 42},
        "scalar": "just a string",
        "null-message": {"message": None, "n": True},
    }
    for name, doc in docs.items():
        await store.set(SetRequest(prefix + name, js(doc)))
    await store.set(SetRequest(prefix + "binary", b"\xff\x00not json"))
    await store.set(SetRequest(f"{base}-elsewhere||struct", js({"message": f"test{base}"})))
    return prefix


async def run(store: Store, prefix: str, body: object) -> list[str]:
    page = await store.query(parse(body), prefix)
    return [item.key.removeprefix(prefix) for item in page.items]


async def test_query_exactly_where_documented(store: Store, component: ComponentUnderTest, base: str) -> None:
    await store.set(SetRequest(f"{base}||k", js({"a": 1})))
    if component.offers.query:
        page = await store.query(parse({}), f"{base}||")
        assert [i.key for i in page.items] == [f"{base}||k"]
    else:
        with pytest.raises(StoreError):
            await store.query(parse({}), f"{base}||")


async def test_query_reference_cases(query_store: Store, people: str, base: str) -> None:
    assert await run(
        query_store,
        people,
        {"filter": {"OR": [{"EQ": {"message": "dummy"}}, {"IN": {"message": [f"test{base}", "dummy"]}}]}},
    ) == ["struct"]
    assert await run(
        query_store,
        people,
        {
            "filter": {
                "AND": [
                    {"EQ": {"message": f"{base}message"}},
                    {"GTE": {"product.value": 10}},
                    {"LT": {"product.value": 20}},
                    {"NEQ": {"status": "INACTIVE"}},
                ]
            }
        },
    ) == ["ops"]
    assert await run(
        query_store,
        people,
        {
            "filter": {
                "OR": [
                    {
                        "AND": [
                            {"EQ": {"message": f"{base}message"}},
                            {"GT": {"product.value": 11.1}},
                            {"EQ": {"status": "INACTIVE"}},
                        ]
                    },
                    {
                        "AND": [
                            {"EQ": {"message": f"{base}message"}},
                            {"LTE": {"product.value": 0.5}},
                            {"EQ": {"status": "ACTIVE"}},
                        ]
                    },
                ]
            }
        },
    ) == ["ops-inactive"]
    assert await run(
        query_store,
        people,
        {
            "filter": {
                "OR": [{"EQ": {"message": f"{base}test"}}, {"IN": {"message": [f"test{base}", "dummy"]}}]
            }
        },
    ) == ["struct", "struct-2"]


async def test_query_is_type_aware(query_store: Store, people: str) -> None:
    assert await run(query_store, people, {"filter": {"EQ": {"message": 42}}}) == ["with-int"]
    assert await run(query_store, people, {"filter": {"EQ": {"message": "42"}}}) == []
    assert await run(query_store, people, {"filter": {"EQ": {"message": None}}}) == ["null-message"]
    assert await run(query_store, people, {"filter": {"EQ": {"n": True}}}) == ["null-message"]
    assert await run(query_store, people, {"filter": {"GT": {"message": 41.5}}}) == ["with-int"]
    # Missing paths never match, not even NEQ; non-object values never match.
    assert await run(query_store, people, {"filter": {"NEQ": {"status": "ACTIVE"}}}) == ["ops-inactive"]


async def test_query_without_filter_lists_the_prefix_in_key_order(query_store: Store, people: str) -> None:
    keys = await run(query_store, people, {})
    # Values that are not JSON (binary) are never query results.
    assert keys == sorted(["struct", "struct-2", "ops", "ops-inactive", "with-int", "scalar", "null-message"])


async def test_query_sorts_by_several_keys(query_store: Store, people: str) -> None:
    body = {
        "filter": {"EQ": {"message": people.removesuffix("||") + "message"}},
        "sort": [{"key": "status", "order": "DESC"}, {"key": "product.value"}],
    }
    assert await run(query_store, people, body) == ["ops-inactive", "ops"]
    body["sort"] = [{"key": "product.value", "order": "DESC"}]
    assert await run(query_store, people, body) == ["ops", "ops-inactive"]
    # Across types, ascending: missing/null, booleans, numbers, strings.
    mixed = await run(
        query_store,
        people,
        {"filter": {"IN": {"message": [None, 42, f"test{people[:-2]}"]}}, "sort": [{"key": "message"}]},
    )
    assert mixed == ["null-message", "with-int", "struct"]


async def test_query_pages_with_tokens(query_store: Store, people: str) -> None:
    seen: list[str] = []
    token = None
    for _ in range(10):
        body: dict[str, object] = {"page": {"limit": 3, **({"token": token} if token else {})}}
        page = await query_store.query(parse(body), people)
        if not page.items:
            break
        assert page.token == str(len(seen) + len(page.items))
        seen += [item.key.removeprefix(people) for item in page.items]
        token = page.token
    assert seen == await run(query_store, people, {})
    assert len(seen) == 7


async def test_query_results_carry_data_and_etag(query_store: Store, people: str) -> None:
    page = await query_store.query(parse({"filter": {"EQ": {"message": 42}}}), people)
    (item,) = page.items
    current = await query_store.get(people + "with-int")
    assert current is not None
    assert item.etag == current.etag
    assert orjson.loads(item.data) == {"message": 42}
    assert page.token is None


async def test_concurrent_transfers_keep_the_total(store: Store, base: str) -> None:
    """Etag-guarded two-key transactions under contention: every committed transfer counts, none tears."""
    accounts = [f"{base}-acct-{i}" for i in range(4)]
    await store.transact([SetRequest(a, js(100)) for a in accounts])
    committed = 0

    async def transfer(n: int) -> None:
        nonlocal committed
        source, target = accounts[n % 4], accounts[(n + 1) % 4]
        for _ in range(200):
            found = await store.bulk_get([source, target])
            src, dst = found[source], found[target]
            try:
                await store.transact(
                    [
                        SetRequest(source, js(orjson.loads(src.data) - 1), etag=src.etag),
                        SetRequest(target, js(orjson.loads(dst.data) + 1), etag=dst.etag),
                    ]
                )
            except EtagMismatch:
                await asyncio.sleep(0)
                continue
            committed += 1
            return
        raise AssertionError("a transfer never got through")

    await asyncio.gather(*(transfer(n) for n in range(24)))
    final = await store.bulk_get(accounts)
    balances = [orjson.loads(final[a].data) for a in accounts]
    assert sum(balances) == 400
    assert committed == 24
    # Each account sent 6 and received 6.
    assert balances == [100, 100, 100, 100]
