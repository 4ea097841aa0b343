"""Specific hostile inputs, on every backend: each gets a clear 4xx (or Dapr's documented status),
a Dapr-shaped body without internals, and leaves the server answering."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from hostile import STORE, Api, check, healthy

STATE = "/v1.0/state/store"
QUERY = "/v1.0-alpha1/state/store/query"
# docs/state-api.md: values nest at most 254 levels, query filters at most 24.
VALUE_DEPTH_LIMIT = 254
FILTER_DEPTH_LIMIT = 24


@pytest.fixture
def k() -> str:
    return uuid.uuid4().hex[:10]


def error(r: Any) -> tuple[int, str, str]:
    body = r.json()
    return r.status_code, body["errorCode"], body["message"]


def query_refused(api: Api) -> bool:
    """True, after checking Dapr's not-supported answer, for a store documented without the query API."""
    if api.components[STORE].offers.query:
        return False
    r = api.request("POST", "/v1.0-alpha1/state/store/query", content=b"{}")
    assert (r.status_code, r.json()["errorCode"]) == (500, "ERR_STATE_STORE_NOT_SUPPORTED")
    return True


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


# --- deeply nested JSON ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "path", "body", "status", "code"),
    [
        ("save", STATE, b'[{"key":"k","value":' + nested(100_000) + b"}]", 400, "ERR_MALFORMED_REQUEST"),
        ("save", STATE, nested(100_000), 400, "ERR_MALFORMED_REQUEST"),
        ("bulk", f"{STATE}/bulk", b'{"keys":' + nested(100_000, b'"k"') + b"}", 400, "ERR_MALFORMED_REQUEST"),
        (
            "transaction",
            f"{STATE}/transaction",
            b'{"operations":[{"operation":"upsert","request":{"key":"k","value":'
            + b'{"a":' * 100_000
            + b"1"
            + b"}" * 100_000
            + b"}}]}",
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "query",
            QUERY,
            b'{"filter":' + b'{"AND":[' * 100_000 + b"]}" * 100_000 + b"}",
            500,
            "ERR_STATE_QUERY",
        ),
    ],
    ids=["save-value", "save-body", "bulk", "transaction", "query"],
)
def test_json_nested_100k_levels_is_refused_fast(
    api: Api, route: str, path: str, body: bytes, *, status: int, code: str
) -> None:
    if route == "query" and query_refused(api):
        return
    started = time.monotonic()
    r = api.request("POST", path, content=body)
    assert time.monotonic() - started < 5
    check(route, r)
    assert error(r)[:2] == (status, code)
    assert "depth" in r.json()["message"]
    healthy(api)


def test_values_nested_as_deep_as_the_server_writes_round_trip(api: Api, k: str) -> None:
    value = nested(VALUE_DEPTH_LIMIT)
    r = api.request("POST", STATE, content=b'[{"key":"' + k.encode() + b'","value":' + value + b"}]")
    assert r.status_code == 204, r.text
    got = api.request("GET", f"{STATE}/{k}")
    assert got.status_code == 200 and orjson.loads(got.content) == orjson.loads(value)


@pytest.mark.parametrize("depth", [VALUE_DEPTH_LIMIT + 1, 1000])
def test_values_nested_deeper_than_the_server_writes_are_400(api: Api, k: str, depth: int) -> None:
    """The parser reads 1024 levels but values are written back at most VALUE_DEPTH_LIMIT deep."""
    value = b'{"a":' * depth + b"1" + b"}" * depth
    for route, path, body in (
        ("save", STATE, b'[{"key":"' + k.encode() + b'","value":' + value + b"}]"),
        (
            "transaction",
            f"{STATE}/transaction",
            b'{"operations":[{"operation":"upsert","request":{"key":"k","value":' + value + b"}}]}",
        ),
    ):
        r = api.request("POST", path, content=body)
        check(route, r)
        assert error(r)[:2] == (400, "ERR_MALFORMED_REQUEST"), r.text
        assert "value is nested deeper than 254 levels" in r.json()["message"]
    healthy(api)


# --- invalid UTF-8 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "path", "body"),
    [
        ("save", STATE, b'[{"key":"k","value":"\xff\xfe"}]'),
        ("save", STATE, b'[{"key":"\xc3\x28","value":1}]'),
        ("save", STATE, b'[{"key":"k","value":"\\ud800"}]'),  # a lone surrogate escape
        ("bulk", f"{STATE}/bulk", b'{"keys":["\xed\xa0\x80"]}'),  # an encoded surrogate
        (
            "transaction",
            f"{STATE}/transaction",
            b'{"operations":[{"operation":"upsert","request":{"key":"\x80","value":1}}]}',
        ),
    ],
)
def test_invalid_utf8_in_bodies_is_400(api: Api, route: str, path: str, body: bytes) -> None:
    r = api.request("POST", path, content=body)
    check(route, r)
    assert error(r)[:2] == (400, "ERR_MALFORMED_REQUEST")


def test_invalid_utf8_in_query_bodies_is_a_query_error(query_api: Api) -> None:
    api = query_api
    r = api.request("POST", QUERY, content=b'{"filter":{"EQ":{"a":"\xff"}}}')
    check("query", r)
    assert error(r)[:2] == (500, "ERR_STATE_QUERY")


def test_invalid_utf8_in_path_keys_is_decoded_leniently(api: Api) -> None:
    """A key's percent escapes that are not UTF-8 decode with U+FFFD, as a JSON body could not carry
    them anyway: no 5xx, and the key simply is not there."""
    for method in ("GET", "DELETE"):
        r = api.request(method, f"{STATE}/%FF%FE%C3%28")
        check("get" if method == "GET" else "delete", r)
        assert r.status_code == 204


# --- numbers, duplicates, NaN, non-objects, wrong types -------------------------------------


def test_numbers_beyond_64_bits_come_back_as_sent(api: Api, k: str) -> None:
    """Values are kept as sent (docs/state-api.md, "Values"), where daprd turns these into float64s."""
    body = f'[{{"key":"{k}","value":[18446744073709551616,-9223372036854775809,{10**30}]}}]'
    assert api.request("POST", STATE, content=body.encode()).status_code == 204
    got = json.loads(api.request("GET", f"{STATE}/{k}").content)
    assert got == [2**64, -(2**63) - 1, 10**30] and all(isinstance(n, int) for n in got)


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"9" * 400])
def test_numbers_beyond_float64_are_400(api: Api, number: bytes) -> None:
    r = api.request("POST", STATE, content=b'[{"key":"k","value":' + number + b"}]")
    check("save", r)
    assert error(r)[:2] == (400, "ERR_MALFORMED_REQUEST")


def test_duplicate_json_keys_last_one_wins_as_in_go(api: Api, k: str) -> None:
    body = f'[{{"key":"{k}-first","value":1,"Key":"{k}","value":2,"VALUE":3}}]'.encode()
    assert api.request("POST", STATE, content=body).status_code == 204
    assert api.request("GET", f"{STATE}/{k}").json() == 3
    assert api.request("GET", f"{STATE}/{k}-first").status_code == 204


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf"])
@pytest.mark.parametrize("route", ["save", "transaction", "query"])
def test_nan_and_infinity_tokens_are_refused(api: Api, token: bytes, route: str) -> None:
    if route == "query" and query_refused(api):
        return
    path, body = {
        "save": (STATE, b'[{"key":"k","value":' + token + b"}]"),
        "transaction": (
            f"{STATE}/transaction",
            b'{"operations":[{"operation":"upsert","request":{"key":"k","value":' + token + b"}}]}",
        ),
        "query": (QUERY, b'{"filter":{"EQ":{"a":' + token + b"}}}"),
    }[route]
    r = api.request("POST", path, content=body)
    check(route, r)
    assert error(r)[:2] == ((500, "ERR_STATE_QUERY") if route == "query" else (400, "ERR_MALFORMED_REQUEST"))


@pytest.mark.parametrize("item", ["1", '"k"', "true", "[]", '[{"key":"k"}]'])
def test_non_object_items_in_save_arrays_are_400(api: Api, item: str, k: str) -> None:
    body = f'[{{"key":"{k}","value":1}},{item}]'.encode()
    r = api.request("POST", STATE, content=body)
    check("save", r)
    assert error(r)[:2] == (400, "ERR_MALFORMED_REQUEST")
    # Nothing of a refused request is written.
    assert api.request("GET", f"{STATE}/{k}").status_code == 204


WRONG = [1, 1.5, True, [], {}, ["a"], {"a": 1}]


def _wrong_types(good: Any) -> list[Any]:
    return [w for w in WRONG if type(w) is not type(good)]


SAVE_FIELDS: list[tuple[str, Any]] = [
    ("key", lambda v: {"key": v}),
    ("etag", lambda v: {"key": "k", "etag": v}),
    ("metadata", lambda v: {"key": "k", "metadata": v}),
    ("metadata value", lambda v: {"key": "k", "metadata": {"ttlInSeconds": v}}),
    ("options", lambda v: {"key": "k", "options": v}),
    ("options.concurrency", lambda v: {"key": "k", "options": {"concurrency": v}}),
    ("options.consistency", lambda v: {"key": "k", "options": {"consistency": v}}),
]


@pytest.mark.parametrize(("name", "build"), SAVE_FIELDS, ids=[n for n, _ in SAVE_FIELDS])
def test_wrong_types_in_save_fields_are_400(api: Api, name: str, build: Any) -> None:
    good = {} if name in ("metadata", "options") else ""
    for wrong in _wrong_types(good):
        item = build(wrong)
        if name in ("metadata", "options") and wrong == {}:
            continue
        for route, path, body in (
            ("save", STATE, [item]),
            (
                "transaction",
                f"{STATE}/transaction",
                {"operations": [{"operation": "upsert", "request": item}]},
            ),
        ):
            r = api.request("POST", path, content=json.dumps(body).encode())
            check(route, r)
            assert error(r)[:2] == (400, "ERR_MALFORMED_REQUEST"), (route, name, wrong, r.text)


@pytest.mark.parametrize(
    "body",
    [
        {"keys": "k"},
        {"keys": [1]},
        {"keys": [["k"]]},
        {"keys": {"k": 1}},
        {"keys": ["k"], "parallelism": "10"},
        {"keys": ["k"], "parallelism": 1.5},
        {"keys": ["k"], "parallelism": [1]},
        {"keys": ["k"], "metadata": "x"},
        {"keys": ["k"], "metadata": {"a": 1}},
        [],
        "keys",
        1,
    ],
)
def test_wrong_types_in_bulk_fields_are_400(api: Api, body: Any) -> None:
    r = api.request("POST", f"{STATE}/bulk", content=json.dumps(body).encode())
    check("bulk", r)
    assert error(r)[:2] == (400, "ERR_MALFORMED_REQUEST"), r.text


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"operations": "x"}, "ERR_MALFORMED_REQUEST"),
        ({"operations": {"operation": "upsert"}}, "ERR_MALFORMED_REQUEST"),
        ({"operations": [1]}, "ERR_MALFORMED_REQUEST"),
        ({"operations": [{"operation": "upsert", "request": "k"}]}, "ERR_MALFORMED_REQUEST"),
        ({"operations": [{"operation": "upsert", "request": ["k"]}]}, "ERR_MALFORMED_REQUEST"),
        ({"operations": [{"operation": 1, "request": {"key": "k"}}]}, "ERR_NOT_SUPPORTED_STATE_OPERATION"),
        (
            {"operations": [{"operation": ["upsert"], "request": {"key": "k"}}]},
            "ERR_NOT_SUPPORTED_STATE_OPERATION",
        ),
        (
            {"operations": [{"operation": "upsert", "request": {"key": "k"}}], "metadata": "x"},
            "ERR_MALFORMED_REQUEST",
        ),
        (
            {"operations": [{"operation": "upsert", "request": {"key": "k"}}], "metadata": {"a": 1}},
            "ERR_MALFORMED_REQUEST",
        ),
        ([], "ERR_MALFORMED_REQUEST"),
        ("operations", "ERR_MALFORMED_REQUEST"),
    ],
)
def test_wrong_types_in_transaction_fields_are_400(api: Api, body: Any, code: str) -> None:
    r = api.request("POST", f"{STATE}/transaction", content=json.dumps(body).encode())
    check("transaction", r)
    assert error(r)[:2] == (400, code), r.text


@pytest.mark.parametrize(
    "body",
    [
        [],
        "filter",
        {"filter": []},
        {"filter": "EQ"},
        {"filter": {"EQ": []}},
        {"filter": {"EQ": {"a": [1]}}},
        {"filter": {"EQ": {"a": {"b": 1}}}},
        {"filter": {"IN": {"a": 1}}},
        {"filter": {"AND": {"EQ": {"a": 1}}}},
        {"filter": {"EQ": {"a": 1}, "NEQ": {"a": 2}}},
        {"filter": {"EQ": {"": 1}}},
        {"sort": "a"},
        {"sort": [1]},
        {"sort": [{"key": 1}]},
        {"sort": [{"key": "a", "order": 1}]},
        {"page": 1},
        {"page": {"limit": "1"}},
        {"page": {"limit": -1}},
        {"page": {"limit": True}},
        {"page": {"limit": 1.5}},
        {"page": {"token": 3}},
        {"page": {"token": "-1"}},
    ],
)
def test_wrong_types_in_queries_are_query_errors(query_api: Api, body: Any) -> None:
    api = query_api
    r = api.request("POST", QUERY, content=json.dumps(body).encode())
    check("query", r)
    assert error(r)[:2] == (500, "ERR_STATE_QUERY"), r.text
    assert "failed to parse JSON query body" in r.json()["message"]


# --- huge key lists, deep query filters -----------------------------------------------------


def test_bulk_get_of_100k_keys_answers_within_the_body_limit(api: Api, k: str) -> None:
    wanted = [f"{k}-{i}" for i in range(100_000)]
    assert api.request("POST", STATE, json=[{"key": wanted[7], "value": 7}]).status_code == 204
    body = json.dumps({"keys": wanted}).encode()
    assert len(body) < 4 << 20
    started = time.monotonic()
    r = api.request("POST", f"{STATE}/bulk", content=body)
    elapsed = time.monotonic() - started
    check("bulk", r)
    assert r.status_code == 200
    entries = r.json()
    assert len(entries) == 100_000
    assert [e for e in entries if "data" in e] == [{"key": wanted[7], "data": 7, "etag": entries[7]["etag"]}]
    assert elapsed < 30


def test_bulk_get_beyond_the_body_limit_is_400(api: Api) -> None:
    body = json.dumps({"keys": [f"k{i:07d}" for i in range(400_000)]}).encode()
    assert len(body) > 4 << 20
    r = api.request("POST", f"{STATE}/bulk", content=body)
    check("bulk", r)
    assert error(r)[:2] == (400, "ERR_MALFORMED_REQUEST")
    assert "too large" in r.json()["message"]


def deep_filter(depth: int) -> bytes:
    """`{"filter": ...}` with AND/OR nodes nested `depth` deep, built as text (json.dumps recurses)."""
    # AND levels hold b == 0, OR levels b == -1, so {"a": 1, "b": 0} matches through every level.
    head = b"".join((b'{"AND":[{"EQ":{"b":0}},', b'{"OR":[{"EQ":{"b":-1}},')[i % 2] for i in range(depth - 1))
    return b'{"filter":' + head + b'{"EQ":{"a":1}}' + b"]}" * (depth - 1) + b"}"


@pytest.mark.parametrize("depth", [FILTER_DEPTH_LIMIT + 1, 500, 1000, 5000])
def test_query_filters_nested_beyond_max_depth_are_query_errors(query_api: Api, depth: int) -> None:
    api = query_api
    started = time.monotonic()
    r = api.request("POST", QUERY, content=deep_filter(depth))
    assert time.monotonic() - started < 5
    check("query", r)
    status, code, message = error(r)
    assert (status, code) == (500, "ERR_STATE_QUERY")
    assert "deeper than" in message or "depth limit" in message


def test_query_filters_at_max_depth_run(query_api: Api, k: str) -> None:
    api = query_api
    assert api.request("POST", STATE, json=[{"key": k, "value": {"a": 1, "b": 0}}]).status_code == 204
    r = api.request("POST", QUERY, content=deep_filter(FILTER_DEPTH_LIMIT))
    check("query", r)
    assert r.status_code == 200, r.text
    assert [res["key"] for res in r.json()["results"]] == [k]


def test_query_with_a_wide_flat_filter_is_answered(query_api: Api, k: str) -> None:
    api = query_api
    docs = [{"key": f"{k}-hit", "value": {"a": 499}}, {"key": f"{k}-miss", "value": {"a": 500}}]
    assert api.request("POST", STATE, json=docs).status_code == 204
    r = api.request("POST", QUERY, json={"filter": {"OR": [{"EQ": {"a": i}} for i in range(500)]}})
    check("query", r)
    assert r.status_code == 200, r.text
    assert [res["key"] for res in r.json()["results"]] == [f"{k}-hit"]


def test_query_with_a_huge_flat_filter_is_answered(query_api: Api) -> None:
    """20,000 alternatives: beyond what SQLite (expression depth 1000) and PostgreSQL (32,767 bind
    parameters) take. The docs set no limit, so either answer is allowed here: the result, or a
    clean documented error, never a hang or a crash."""
    body = {"filter": {"OR": [{"EQ": {"a": i}} for i in range(20_000)]}}
    check("query", query_api.request("POST", QUERY, json=body))
    healthy(query_api)


# --- keys: control characters, NUL, length --------------------------------------------------

CONTROL_KEYS = [
    "nul\x00key",
    "\x00",
    "trailing-nul\x00",
    "ctl\x01\x02\x1f\x7f",
    "tab\tnewline\n",
    "esc\x1b[31m",
]


@pytest.mark.parametrize("key", CONTROL_KEYS, ids=[repr(k) for k in CONTROL_KEYS])
def test_control_characters_and_nul_in_keys_round_trip(api: Api, component: Any, key: str) -> None:
    """Dapr accepts any key but one containing `||`, so every backend keeps these exactly, except
    that PostgreSQL text cannot hold NUL: there such keys are absent and writing one is refused."""
    key = uuid.uuid4().hex[:6] + key
    path = f"{STATE}/{quote(key, safe='')}"
    r = api.request("POST", STATE, json=[{"key": key, "value": {"v": key}}])
    check("save", r)
    if component.backend == "postgresql" and "\x00" in key:
        assert error(r) == (
            500,
            "ERR_STATE_SAVE",
            "failed saving state in state store store: PostgreSQL cannot store keys containing NUL characters",
        )
        assert api.request("GET", path).status_code == 204
        assert api.request("POST", f"{STATE}/bulk", json={"keys": [key]}).json() == [{"key": key}]
        assert api.request("DELETE", path).status_code == 204
        assert api.request("DELETE", path, headers={"if-match": "x"}).status_code == 409
        tx = {"operations": [{"operation": "upsert", "request": {"key": key, "value": 3}}]}
        r = api.request("POST", f"{STATE}/transaction", json=tx)
        check("transaction", r)
        assert error(r)[:2] == (500, "ERR_STATE_TRANSACTION")
        return
    assert r.status_code == 204, r.text
    got = api.request("GET", path)
    assert got.status_code == 200 and got.json() == {"v": key}
    bulk = api.request("POST", f"{STATE}/bulk", json={"keys": [key, key + "x"]})
    assert bulk.status_code == 200
    assert bulk.json()[0] == {"key": key, "data": {"v": key}, "etag": got.headers["etag"]}
    assert bulk.json()[1] == {"key": key + "x"}
    # Conditional writes and deletes address the same row.
    r = api.request("POST", STATE, json=[{"key": key, "value": 2, "etag": got.headers["etag"]}])
    assert r.status_code == 204, r.text
    tx = {"operations": [{"operation": "upsert", "request": {"key": key, "value": 3}}]}
    assert api.request("POST", f"{STATE}/transaction", json=tx).status_code == 204
    assert api.request("GET", path).json() == 3
    query = api.request("POST", QUERY, json={"filter": {"EQ": {"v": key}}})
    # Nothing has the value any more: 204, or Redis's documented refusal of queries.
    assert query.status_code == (204 if component.offers.query else 500)
    assert api.request("DELETE", path).status_code == 204
    assert api.request("GET", path).status_code == 204
    healthy(api)


# docs/security.md: MySQL keys hold at most 255 characters with their prefix (`myapp||` here; daprd's
# id column), PostgreSQL keys about 2700 bytes after compression; the other stores take any length
# that fits in the body.
KEY_LIMITS = {"mysql": 255 - len("myapp||"), "postgresql": 2700}


@pytest.mark.parametrize("size", [248, 249, 1024, 2041, 2042, 64 * 1024])
def test_very_long_keys_work_up_to_the_documented_limit(api: Api, component: Any, size: int) -> None:
    key = secrets.token_hex(size)[:size]  # random, so a backend cannot compress it below its limits
    r = api.request("POST", STATE, json=[{"key": key, "value": 1}])
    check("save", r)
    fits = size <= KEY_LIMITS.get(component.backend, size)
    assert r.status_code == (204 if fits else 500), r.text
    if fits:
        bulk = api.request("POST", f"{STATE}/bulk", json={"keys": [key]})
        assert bulk.json()[0]["data"] == 1
        tx = {"operations": [{"operation": "delete", "request": {"key": key}}]}
        assert api.request("POST", f"{STATE}/transaction", json=tx).status_code == 204
    else:  # the backend's key column or index is smaller (documented store failure)
        status, code, message = error(r)
        assert (status, code) == (500, "ERR_STATE_SAVE"), r.text
        assert "too long" in message
    bulk = api.request("POST", f"{STATE}/bulk", json={"keys": [key]})
    check("bulk", bulk)
    assert bulk.status_code == 200 and bulk.json() == [{"key": key}]
    if size < 60_000:  # httpx refuses URLs beyond 64 KiB
        for method in ("GET", "DELETE"):
            g = api.request(method, f"{STATE}/{key}")
            check(method.lower(), g)
            assert g.status_code == 204
    healthy(api)


# --- routing --------------------------------------------------------------------------------


def test_unknown_routes_and_methods_answer_as_daprd(api: Api) -> None:
    r = api.request("GET", "/v1.0/nothing/here")
    assert (r.status_code, r.text) == (404, "404 page not found\n")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    r = api.request("PATCH", STATE)
    assert r.status_code == 405 and r.content == b""
    assert "POST" in r.headers["allow"]
