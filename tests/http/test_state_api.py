"""Every route of the state API, with the status codes and bodies daprd returns, on every backend."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

import httpx
import pytest

from fixtures.stores import ComponentUnderTest, key_base

if TYPE_CHECKING:
    from conftest import MakeApi

STATE = "/v1.0/state/store"
QUERY = "/v1.0-alpha1/state/store/query"


@pytest.fixture
def k(request: pytest.FixtureRequest) -> str:
    return key_base(request, 10)


def error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["errorCode"], body["message"]


async def save(api: httpx.AsyncClient, *items: dict[str, object], params: str = "") -> httpx.Response:
    return await api.post(STATE + params, json=list(items))


# --- save and get ---------------------------------------------------------------------------


async def test_save_then_get_returns_the_value_and_etag(api: httpx.AsyncClient, k: str) -> None:
    r = await save(api, {"key": k, "value": {"name": "Ada", "n": 1}})
    assert r.status_code == 204 and r.content == b""
    r = await api.get(f"{STATE}/{k}")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"name": "Ada", "n": 1}
    assert r.headers["etag"]
    assert "metadata.ttlexpiretime" not in r.headers


async def test_values_of_every_json_type(api: httpx.AsyncClient, k: str) -> None:
    values: list[object] = ["hello world", "", 123, 1.5, True, None, [1, "a"], {"a": {"b": []}}, '{"a":"b"}']
    r = await save(api, *({"key": f"{k}-{i}", "value": v} for i, v in enumerate(values)))
    assert r.status_code == 204
    for i, value in enumerate(values):
        got = await api.get(f"{STATE}/{k}-{i}")
        assert got.status_code == 200 and got.json() == value


async def test_item_without_value_stores_null(api: httpx.AsyncClient, k: str) -> None:
    assert (await save(api, {"key": k, "unknownField": 1})).status_code == 204
    r = await api.get(f"{STATE}/{k}")
    assert r.status_code == 200 and r.content == b"null"


async def test_get_missing_key_is_204_without_body(api: httpx.AsyncClient, k: str) -> None:
    r = await api.get(f"{STATE}/{k}", params={"consistency": "strong"})
    assert r.status_code == 204 and r.content == b"" and "etag" not in r.headers


async def test_field_names_match_case_insensitively(api: httpx.AsyncClient, k: str) -> None:
    assert (await save(api, {"Key": k, "VALUE": 7})).status_code == 204
    assert (await api.get(f"{STATE}/{k}")).json() == 7


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("with space", "with+space"),
        ("with space", "with%20space"),
        ("a/b/c", "a%2Fb%2Fc"),
        ("plus+sign", "plus%2Bsign"),
        ("ключ-🗝-ü", quote("ключ-🗝-ü")),
    ],
)
async def test_keys_decode_as_daprd_decodes_them(api: httpx.AsyncClient, key: str, path: str) -> None:
    key = f"{uuid.uuid4().hex[:6]}{key}"
    path = quote_plus(key[:6]) + path
    assert (await save(api, {"key": key, "value": key})).status_code == 204
    r = await api.get(f"{STATE}/{path}")
    assert r.status_code == 200 and r.json() == key
    bulk = await api.post(f"{STATE}/bulk", json={"keys": [key]})
    assert bulk.json()[0]["key"] == key
    assert (await api.delete(f"{STATE}/{path}")).status_code == 204
    assert (await api.get(f"{STATE}/{path}")).status_code == 204


async def test_bad_escape_in_key_is_a_plain_400(api: httpx.AsyncClient) -> None:
    r = await api.get(f"{STATE}/bad%zzkey")
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/plain")
    assert "invalid URL escape" in r.text


async def test_unescaped_slash_in_key_is_not_a_route(api: httpx.AsyncClient) -> None:
    assert (await api.get(f"{STATE}/a/b")).status_code == 404


async def test_paths_are_cleaned_before_routing(api: httpx.AsyncClient, k: str) -> None:
    await save(api, {"key": k, "value": {"n": 1}})
    cleaned = await api.get(f"/v1.0//state/store/{k}/")
    assert (cleaned.status_code, cleaned.json()) == (200, {"n": 1})
    assert cleaned.headers["etag"] == (await api.get(f"{STATE}/{k}")).headers["etag"]


async def test_large_value_of_three_mebibytes(api: httpx.AsyncClient, k: str) -> None:
    value = "x" * (3 * 1024 * 1024)
    assert (await save(api, {"key": k, "value": value})).status_code == 204
    assert (await api.get(f"{STATE}/{k}")).json() == value
    tx = {"operations": [{"operation": "upsert", "request": {"key": f"{k}-tx", "value": value}}]}
    assert (await api.post(f"{STATE}/transaction", json=tx)).status_code == 204
    assert (await api.get(f"{STATE}/{k}-tx")).json() == value


# --- save errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "invalid JSON"),
        (b'[{"key": "a",}]', "invalid JSON"),
        (b'{"key": "a"}', "cannot unmarshal object"),
        (b'[{"key": "a", "etag": 5}]', "SetRequest.etag of type string"),
        (b'[{"key": "a", "metadata": {"ttlInSeconds": 5}}]', "of type string"),
        (b'[{"value": 1}]', '"key" is a required field'),
        (b'[{"key": "", "value": 1}]', '"key" is a required field'),
        (b"", "unexpected end of JSON input"),
    ],
)
async def test_malformed_saves_are_400(api: httpx.AsyncClient, body: bytes, message: str) -> None:
    r = await api.post(STATE, content=body)
    status, code, text = error(r)
    assert (status, code) == (400, "ERR_MALFORMED_REQUEST")
    assert message in text
    assert "details" not in r.json()


async def test_empty_and_null_saves_do_nothing(api: httpx.AsyncClient) -> None:
    assert (await api.post(STATE, content=b"[]")).status_code == 204
    assert (await api.post(STATE, content=b"null")).status_code == 204


async def test_key_with_double_pipe_is_refused_everywhere(api: httpx.AsyncClient) -> None:
    for response in (
        await save(api, {"key": "a||b", "value": 1}),
        await api.get(f"{STATE}/a||b"),
        await api.delete(f"{STATE}/a||b"),
        await api.post(f"{STATE}/bulk", json={"keys": ["ok", "a||b"]}),
        await api.post(
            f"{STATE}/transaction", json={"operations": [{"operation": "upsert", "request": {"key": "a||b"}}]}
        ),
    ):
        body = response.json()
        assert response.status_code == 400
        assert body["errorCode"] == "ERR_MALFORMED_REQUEST"
        assert body["message"] == (
            "api error: code = InvalidArgument desc = input key/keyPrefix 'a||b' can't contain '||'"
        )
        assert [d["@type"].rsplit(".", 1)[1] for d in body["details"]] == [
            "BadRequest",
            "ResourceInfo",
            "ErrorInfo",
        ]
        assert body["details"][2]["reason"] == "DAPR_STATE_ILLEGAL_KEY"
        assert body["details"][1]["resource_name"] == "store"


async def test_unknown_store_is_400_not_found(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1.0/state/nope", content=b"not even json")
    body = r.json()
    assert r.status_code == 400
    assert body["errorCode"] == "ERR_STATE_STORE_NOT_FOUND"
    assert body["message"] == "state store nope is not found"
    assert body["details"][0]["reason"] == "DAPR_STATE_NOT_FOUND"
    assert body["details"][0]["metadata"] == {"appID": "myapp"}
    for r in (
        await api.get("/v1.0/state/nope/k"),
        await api.delete("/v1.0/state/nope/k"),
        await api.post("/v1.0/state/nope/bulk", json={}),
        await api.post("/v1.0/state/nope/transaction", json={}),
    ):
        assert (r.status_code, r.json()["errorCode"]) == (400, "ERR_STATE_STORE_NOT_FOUND")
    r = await api.post("/v1.0-alpha1/state/nope/query", json={})
    assert (r.status_code, r.json()["errorCode"]) == (400, "ERR_STATE_STORE_NOT_FOUND")
    assert r.json()["details"][0]["metadata"] is None


async def test_unknown_concurrency_and_consistency_are_store_errors(api: httpx.AsyncClient, k: str) -> None:
    r = await save(api, {"key": k, "value": 1, "options": {"concurrency": "sometimes"}})
    assert error(r) == (
        500,
        "ERR_STATE_SAVE",
        "failed saving state in state store store: unrecognized concurrency model 'sometimes'",
    )
    r = await save(api, {"key": k, "value": 1, "options": {"consistency": "maybe"}})
    assert error(r)[:2] == (500, "ERR_STATE_SAVE")
    r = await api.delete(f"{STATE}/{k}", params={"concurrency": "x"})
    assert error(r)[:2] == (500, "ERR_STATE_DELETE")
    ok = await save(
        api, {"key": k, "value": 1, "options": {"concurrency": "last-write", "consistency": "strong"}}
    )
    assert ok.status_code == 204


async def test_body_over_the_limit_is_refused(make_api: MakeApi, component: ComponentUnderTest) -> None:
    api = await make_api({"store": component}, max_body_size=1024)
    r = await api.post(STATE, json=[{"key": "big", "value": "x" * 2000}])
    assert error(r)[:2] == (400, "ERR_MALFORMED_REQUEST")
    assert "too large" in r.json()["message"]
    r = await api.post(QUERY, content=b"{" + b" " * 2000 + b"}")
    if r.json()["errorCode"] != "ERR_STATE_STORE_NOT_SUPPORTED":
        assert error(r)[:2] == (400, "ERR_BODY_READ")
    assert (await api.post(STATE, json=[{"key": "small", "value": "x"}])).status_code == 204


# --- etags, first-write, concurrency --------------------------------------------------------


async def test_etag_mismatch_on_save_is_409(api: httpx.AsyncClient, k: str) -> None:
    await save(api, {"key": k, "value": 1})
    etag = (await api.get(f"{STATE}/{k}")).headers["etag"]
    r = await save(api, {"key": k, "value": 2, "etag": "bad-etag"})
    status, code, message = error(r)
    assert (status, code) == (409, "ERR_STATE_SAVE")
    assert message.startswith("failed saving state in state store store: possible etag mismatch")
    assert (await save(api, {"key": k, "value": 2, "etag": etag})).status_code == 204
    after = await api.get(f"{STATE}/{k}")
    assert after.json() == 2 and after.headers["etag"] != etag


async def test_multi_item_save_is_not_atomic(api: httpx.AsyncClient, k: str) -> None:
    await save(api, {"key": f"{k}-1", "value": 1})
    r = await save(api, {"key": f"{k}-1", "value": 2, "etag": "bad"}, {"key": f"{k}-2", "value": 2})
    assert error(r)[:2] == (409, "ERR_STATE_SAVE")
    assert (await api.get(f"{STATE}/{k}-1")).json() == 1
    assert (await api.get(f"{STATE}/{k}-2")).json() == 2


async def test_first_write(api: httpx.AsyncClient, k: str) -> None:
    fw = {"concurrency": "first-write"}
    assert (await save(api, {"key": k, "value": 1, "options": fw})).status_code == 204
    assert (await save(api, {"key": k, "value": 2, "options": fw})).status_code == 409
    assert (await save(api, {"key": k, "value": 2, "etag": "", "options": fw})).status_code == 409
    assert (await api.get(f"{STATE}/{k}")).json() == 1


async def test_32_concurrent_first_writes_with_one_etag(api: httpx.AsyncClient, k: str) -> None:
    await save(api, {"key": k, "value": 0})
    etag = (await api.get(f"{STATE}/{k}")).headers["etag"]
    responses = await asyncio.gather(
        *(
            save(api, {"key": k, "value": i, "etag": etag, "options": {"concurrency": "first-write"}})
            for i in range(32)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [204] + [409] * 31


async def test_8_clients_increment_without_losing_updates(api: httpx.AsyncClient, k: str) -> None:
    await save(api, {"key": k, "value": 0})

    async def client() -> int:
        conflicts = 0
        for _ in range(10):
            while True:
                current = await api.get(f"{STATE}/{k}")
                r = await save(api, {"key": k, "value": current.json() + 1, "etag": current.headers["etag"]})
                if r.status_code == 204:
                    break
                assert r.status_code == 409
                conflicts += 1
        return conflicts

    await asyncio.gather(*(client() for _ in range(8)))
    assert (await api.get(f"{STATE}/{k}")).json() == 80


# --- delete ---------------------------------------------------------------------------------


async def test_delete_with_if_match(api: httpx.AsyncClient, k: str) -> None:
    await save(api, {"key": k, "value": 1})
    etag = (await api.get(f"{STATE}/{k}")).headers["etag"]
    r = await api.delete(f"{STATE}/{k}", headers={"If-Match": "bad-etag"})
    status, code, message = error(r)
    assert (status, code) == (409, "ERR_STATE_DELETE")
    assert message.startswith(f"failed deleting state with key {k}: possible etag mismatch")
    assert (await api.delete(f"{STATE}/{k}", headers={"If-Match": etag})).status_code == 204
    assert (await api.get(f"{STATE}/{k}")).status_code == 204
    # Missing keys delete fine without an etag; an empty If-Match counts as none.
    assert (await api.delete(f"{STATE}/{k}")).status_code == 204
    assert (await api.delete(f"{STATE}/{k}", headers={"If-Match": ""})).status_code == 204


# --- bulk get -------------------------------------------------------------------------------


async def test_bulk_get(api: httpx.AsyncClient, k: str) -> None:
    await save(api, {"key": f"{k}-a", "value": {"a": 1}}, {"key": f"{k}-b", "value": "b"})
    r = await api.post(f"{STATE}/bulk", json={"keys": [f"{k}-a", f"{k}-b", f"{k}-missing"], "parallelism": 2})
    assert r.status_code == 200 and r.content.endswith(b"\n")
    entries = {e["key"]: e for e in r.json()}
    assert entries[f"{k}-a"]["data"] == {"a": 1} and entries[f"{k}-a"]["etag"]
    assert entries[f"{k}-b"]["data"] == "b"
    assert entries[f"{k}-missing"] == {"key": f"{k}-missing"}
    r = await api.put(f"{STATE}/bulk", json={"keys": [f"{k}-a"]})
    assert r.json()[0]["data"] == {"a": 1}


async def test_bulk_get_edge_cases(api: httpx.AsyncClient) -> None:
    bodies: tuple[dict[str, Any], ...] = ({}, {"keys": []}, {"keys": None})
    for body in bodies:
        r = await api.post(f"{STATE}/bulk", json=body)
        assert r.status_code == 200 and r.json() == []
    r = await api.post(f"{STATE}/bulk", content=b"{nope")
    status, code, message = error(r)
    assert (status, code) == (400, "ERR_MALFORMED_REQUEST")
    assert message.startswith("failed deserializing HTTP body")
    r = await api.post(f"{STATE}/bulk", json={"keys": [1, 2]})
    assert error(r)[:2] == (400, "ERR_MALFORMED_REQUEST")


async def test_bulk_get_of_10000_keys(api: httpx.AsyncClient, k: str) -> None:
    await save(api, *({"key": f"{k}-{i}", "value": i} for i in range(0, 10_000, 500)))
    keys = [f"{k}-{i}" for i in range(10_000)]
    r = await api.post(f"{STATE}/bulk", json={"keys": keys})
    assert r.status_code == 200
    entries = r.json()
    assert len(entries) == 10_000
    found = {e["key"]: e["data"] for e in entries if "data" in e}
    assert found == {f"{k}-{i}": i for i in range(0, 10_000, 500)}


# --- TTL ------------------------------------------------------------------------------------


def expire_time(response: httpx.Response) -> float:
    stamp = datetime.strptime(response.headers["metadata.ttlExpireTime"], "%Y-%m-%dT%H:%M:%SZ")
    return stamp.replace(tzinfo=UTC).timestamp()


async def test_ttl_from_item_metadata_and_url(api: httpx.AsyncClient, k: str) -> None:
    before = time.time()
    r = await save(api, {"key": k, "value": "value1", "metadata": {"ttlInSeconds": "3600"}})
    after = time.time()
    assert r.status_code == 204
    got = await api.get(f"{STATE}/{k}")
    assert got.json() == "value1"
    # The expiry is the save's time plus the TTL (the header has whole seconds, truncated; MySQL's
    # TIMESTAMP keeps whole seconds, rounded up).
    assert int(before) + 3600 - 1 <= expire_time(got) <= after + 3600 + 1
    bulk = (await api.post(f"{STATE}/bulk", json={"keys": [k]})).json()
    assert bulk[0]["metadata"]["ttlExpireTime"] == got.headers["metadata.ttlExpireTime"]
    # The URL wins over the item's metadata.
    before = time.time()
    r = await save(
        api,
        {"key": f"{k}-url", "value": 1, "metadata": {"ttlInSeconds": "1"}},
        params="?metadata.ttlInSeconds=7200",
    )
    assert int(before) + 7200 - 1 <= expire_time(await api.get(f"{STATE}/{k}-url")) <= time.time() + 7200 + 1


async def test_an_item_with_a_short_ttl_expires(api: httpx.AsyncClient, k: str) -> None:
    assert (await save(api, {"key": k, "value": 1, "metadata": {"ttlInSeconds": "1"}})).status_code == 204
    saved = time.monotonic()
    deadline = saved + 60  # generous: a loaded machine; expiry itself is due after 1 s
    while (await api.get(f"{STATE}/{k}")).status_code != 204:  # polling the public API is the point
        assert time.monotonic() < deadline, "a 1 s TTL item still there after 60 s"
        await asyncio.sleep(0.2)
    print(f"expired {time.monotonic() - saved:.1f}s after its save")
    bulk = (await api.post(f"{STATE}/bulk", json={"keys": [k]})).json()
    assert bulk == [{"key": k}]


async def test_ttl_minus_one_and_zero_never_expire(api: httpx.AsyncClient, k: str) -> None:
    for ttl in ("-1", "0"):
        await save(api, {"key": k, "value": 1, "metadata": {"ttlInSeconds": "60"}})
        await save(api, {"key": k, "value": 1, "metadata": {"ttlInSeconds": ttl}})
        assert "metadata.ttlexpiretime" not in (await api.get(f"{STATE}/{k}")).headers


@pytest.mark.parametrize("ttl", ["foo", "-2", "2147483648", "1.5"])
async def test_bad_ttl_is_a_store_error(api: httpx.AsyncClient, k: str, ttl: str) -> None:
    r = await save(api, {"key": k, "value": 1, "metadata": {"ttlInSeconds": ttl}})
    status, code, message = error(r)
    assert (status, code) == (500, "ERR_STATE_SAVE") and "ttlInSeconds" in message
    assert (await api.get(f"{STATE}/{k}")).status_code == 204


# --- transactions ---------------------------------------------------------------------------


async def test_transaction(api: httpx.AsyncClient, k: str) -> None:
    await save(api, {"key": f"{k}-old", "value": "old"})
    body = {
        "operations": [
            {"operation": "upsert", "request": {"key": f"{k}-1", "value": {"n": 1}}},
            {"operation": "delete", "request": {"key": f"{k}-old"}},
            {
                "operation": "upsert",
                "request": {"key": f"{k}-2", "value": 2, "metadata": {"ttlInSeconds": "3600"}},
            },
        ],
        "metadata": {"partitionKey": "p"},
    }
    r = await api.post(f"{STATE}/transaction", json=body)
    assert r.status_code == 204
    assert (await api.get(f"{STATE}/{k}-1")).json() == {"n": 1}
    assert (await api.get(f"{STATE}/{k}-old")).status_code == 204
    assert "metadata.ttlexpiretime" in (await api.get(f"{STATE}/{k}-2")).headers


async def test_transaction_etag_mismatch_is_500_and_applies_nothing(api: httpx.AsyncClient, k: str) -> None:
    await save(api, {"key": k, "value": 0})
    body = {
        "operations": [
            {"operation": "upsert", "request": {"key": f"{k}-new", "value": 1}},
            {"operation": "upsert", "request": {"key": k, "value": 1, "etag": "bad-etag"}},
        ]
    }
    r = await api.post(f"{STATE}/transaction", json=body)
    status, code, message = error(r)
    assert (status, code) == (500, "ERR_STATE_TRANSACTION")
    assert message.startswith("error while executing state transaction: ")
    assert (await api.get(f"{STATE}/{k}-new")).status_code == 204
    assert (await api.get(f"{STATE}/{k}")).json() == 0


async def test_transaction_errors(api: httpx.AsyncClient, k: str) -> None:
    r = await api.post(
        f"{STATE}/transaction", json={"operations": [{"operation": "merge", "request": {"key": k}}]}
    )
    assert error(r) == (400, "ERR_NOT_SUPPORTED_STATE_OPERATION", "operation type merge not supported")
    r = await api.post(
        f"{STATE}/transaction", json={"operations": [{"operation": "Upsert", "request": {"key": k}}]}
    )
    assert error(r)[:2] == (400, "ERR_NOT_SUPPORTED_STATE_OPERATION")
    r = await api.post(f"{STATE}/transaction", content=b"[oops")
    status, code, message = error(r)
    assert (status, code) == (400, "ERR_MALFORMED_REQUEST")
    assert message.startswith("failed deserializing HTTP body")
    r = await api.post(
        f"{STATE}/transaction",
        json={"operations": [{"operation": "upsert", "request": {"key": k, "etag": 3}}]},
    )
    assert error(r)[:2] == (400, "ERR_MALFORMED_REQUEST")
    r = await api.post(
        f"{STATE}/transaction", json={"operations": [{"operation": "upsert", "request": {"value": 3}}]}
    )
    assert error(r)[:2] == (400, "ERR_MALFORMED_REQUEST")
    empties: tuple[dict[str, Any], ...] = ({}, {"operations": []})
    for empty in empties:
        assert (await api.post(f"{STATE}/transaction", json=empty)).status_code == 204


# --- query ----------------------------------------------------------------------------------


async def test_query(api: httpx.AsyncClient, component: ComponentUnderTest, k: str) -> None:
    if not component.offers.query:
        r = await api.post(QUERY, json={})
        body = r.json()
        assert (r.status_code, body["errorCode"]) == (500, "ERR_STATE_STORE_NOT_SUPPORTED")
        assert body["message"] == "state store does not support querying"
        assert body["details"][1]["reason"] == "DAPR_STATE_QUERYING_NOT_SUPPORTED"
        return
    people: list[dict[str, Any]] = [
        {"key": f"{k}-{i}", "value": {"person": {"org": org, "id": i}, "state": st}}
        for i, (org, st) in enumerate(
            [("Dev Ops", "CA"), ("Hardware", "WA"), ("Dev Ops", "WA"), ("Finance", "NY"), ("Dev Ops", "CA")]
        )
    ]
    await save(api, *people)
    body = {
        "filter": {"AND": [{"EQ": {"person.org": "Dev Ops"}}, {"IN": {"state": ["CA", "WA"]}}]},
        "sort": [{"key": "state", "order": "DESC"}, {"key": "person.id"}],
        "page": {"limit": 2},
    }
    r = await api.post(QUERY, json=body)
    assert r.status_code == 200
    page = r.json()
    assert [x["key"] for x in page["results"]] == [f"{k}-2", f"{k}-0"]
    assert page["token"] == "2"
    assert all(x["etag"] for x in page["results"])
    assert page["results"][0]["data"] == people[2]["value"]
    body["page"] = {"limit": 2, "token": "2"}
    page = (await api.put(QUERY, json=body)).json()
    assert [x["key"] for x in page["results"]] == [f"{k}-4"] and page["token"] == "3"
    body["page"] = {"limit": 2, "token": "3"}
    r = await api.post(QUERY, json=body)
    assert r.status_code == 204 and r.content == b""


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"filter": {"LIKE": {"a": 1}}}',
        b'{"filter": {"EQ": {"a": 1}, "NEQ": {"b": 2}}}',
        b'{"filter": {"AND": [{"EQ": {"a": 1}}]}}',
        b'{"filter": {"IN": {"a": []}}}',
        b'{"filter": {"IN": {"a": 1}}}',
        b'{"filter": {"GT": {"a": true}}}',
        b'{"sort": [{"key": "a", "order": "SIDEWAYS"}]}',
        b'{"page": {"limit": -1}}',
        b'{"page": {"limit": 1, "token": "abc"}}',
    ],
)
async def test_bad_queries_are_500_query_errors(
    api: httpx.AsyncClient, component: ComponentUnderTest, body: bytes
) -> None:
    r = await api.post(QUERY, content=body)
    payload = r.json()
    assert r.status_code == 500
    if not component.offers.query:
        assert payload["errorCode"] == "ERR_STATE_STORE_NOT_SUPPORTED"
        return
    assert payload["errorCode"] == "ERR_STATE_QUERY"
    assert payload["message"].startswith("state store store query failed: failed to parse JSON query body: ")
    assert payload["details"][1]["reason"] == "DAPR_STATE_QUERY_FAILED"


async def test_query_nested_thousands_deep_is_a_clean_error(
    api: httpx.AsyncClient, component: ComponentUnderTest
) -> None:
    leaf = '{"EQ":{"a":1}}'
    nested = '{"AND":[' * 3000 + leaf + ("," + leaf + "]}") * 3000
    r = await api.post(QUERY, content=('{"filter":' + nested + "}").encode())
    # docs/state-api.md: filters deeper than 24 levels fail with 500 ERR_STATE_QUERY on every store.
    code = "ERR_STATE_QUERY" if component.offers.query else "ERR_STATE_STORE_NOT_SUPPORTED"
    assert (r.status_code, r.json()["errorCode"]) == (500, code)


# --- health, metadata, methods --------------------------------------------------------------


async def test_health(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1.0/healthz")).status_code == 204
    assert (await api.get("/v1.0/healthz/outbound")).status_code == 204
    assert (await api.get("/v1.0/healthz", params={"appid": "myapp"})).status_code == 204
    r = await api.get("/v1.0/healthz", params={"appid": "other"})
    assert error(r) == (500, "ERR_HEALTH_APPID_NOT_MATCH", "dapr app-id does not match")


async def test_metadata(api: httpx.AsyncClient, component: object) -> None:
    r = await api.get("/v1.0/metadata")
    assert r.status_code == 200 and r.content.endswith(b"\n")
    body = r.json()
    assert body["id"] == "myapp"
    assert body["extended"]["daprRuntimeVersion"]
    (store,) = body["components"]
    assert store["name"] == "store" and store["version"] == "v1"
    assert {"ETAG", "TRANSACTIONAL", "TTL", "ACTOR"} <= set(store["capabilities"])
    assert (await api.put("/v1.0/metadata/team", content=b"blue")).status_code == 204
    assert (await api.get("/v1.0/metadata")).json()["extended"]["team"] == "blue"


async def test_methods_and_unknown_paths(api: httpx.AsyncClient) -> None:
    assert (await api.patch(STATE)).status_code == 405
    assert (await api.post(f"{STATE}/somekey")).status_code == 405
    assert (await api.get("/v1.0/nothing-here")).status_code == 404
    assert (await api.get("/v1.0/openapi.json")).json()["paths"]["/v1.0/state/{storeName}"]["post"]


async def test_openapi_document_describes_every_route(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/v1.0/openapi.json")).json()["paths"]
    assert set(paths) >= {
        "/v1.0/state/{storeName}",
        "/v1.0/state/{storeName}/bulk",
        "/v1.0/state/{storeName}/transaction",
        "/v1.0/state/{storeName}/{key}",
        "/v1.0-alpha1/state/{storeName}/query",
        "/v1.0/healthz",
        "/v1.0/healthz/outbound",
        "/v1.0/metadata",
    }
    document = (await api.get("/v1.0/openapi.json")).json()
    assert document["openapi"] == "3.1.0" and document["info"]["title"] == "statestore-sidecar"
    get = paths["/v1.0/state/{storeName}/{key}"]["get"]
    assert get["operationId"] == "get_get"
    assert [(p["name"], p["in"]) for p in get["parameters"]] == [
        ("storeName", "path"),
        ("key", "path"),
        ("consistency", "query"),
        ("metadata", "query"),
    ]
    assert set(get["responses"]) == {"200", "204", "400", "500"}
    save = paths["/v1.0/state/{storeName}"]["post"]
    assert save["requestBody"]["content"]["application/json"]["schema"]["type"] == "array"
    assert set(save["responses"]) == {"204", "400", "409", "500"}  # no 200: a save answers 204
    assert set(paths["/v1.0/state/{storeName}/{key}"]) == {"get", "delete"}


async def test_openapi_viewer_page(api: httpx.AsyncClient) -> None:
    page = await api.get("/v1.0/docs")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert 'url: "/v1.0/openapi.json"' in page.text and "swagger-ui-bundle.js" in page.text
    assert (await api.head("/v1.0/docs")).status_code == 405  # GET routes only, as daprd's router
