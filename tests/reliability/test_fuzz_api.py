"""Property-based fuzzing of every route of the state API, on every backend.

Each example sends hostile but plausible requests and holds the server to these properties:

* no 5xx except the 500s Dapr documents for client-controlled input (`hostile.DOCUMENTED_500`), and
  none of those may carry an unexpected-exception marker;
* every error body is Dapr's JSON (`errorCode` + `message`), except daprd's plain-text answers (bad
  path escape 400, router 404) and the empty 405;
* every request is answered within a timeout, and `/v1.0/healthz` still answers afterwards;
* data saved (or written by a transaction) with 204 reads back equal, through bulk get and GET;
* query results satisfy the query's filter and page limit.

The number of examples is `FUZZ_EXAMPLES` per test and backend (see `hostile.examples`).
"""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import orjson
from hostile import DOCUMENTED_500, Api, check, examples, healthy
from hostile_strategies import (
    items,
    json_values,
    keys,
    queries,
    query_params,
    query_string,
    raw_bodies,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from statestore_sidecar import query as q

STATE = "/v1.0/state/store"
QUERY = "/v1.0-alpha1/state/store/query"
UNSET = object()


def fuzz_settings(default: int, backend: str) -> settings:
    return settings(
        max_examples=examples(default, backend),
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


def run(test: Any, default: int, backend: str) -> None:
    """Run a @given test with the settings of this backend (hypothesis decorators need them late)."""
    settings(fuzz_settings(default, backend))(test)()


def expected(value: Any) -> Any:
    """The value as the server returns it: as sent (numbers beyond 64 bits included)."""
    return json.loads(json.dumps(value))


def exact(value: Any) -> Any:
    """`value` with each number as its exact decimal value, for comparing what was read back.

    PostgreSQL's jsonb keeps a number's value but not its spelling (`5.1e+16` comes back as
    `51000000000000000`; docs/state-api.md, "Values"), so numbers are compared by value.
    """
    return decoded(json.dumps(value).encode())


def decoded(body: bytes) -> Any:
    return json.loads(body, parse_float=Decimal, parse_int=Decimal)


def ttl_of(meta: Any) -> str | None:
    return meta.get("ttlInSeconds") if isinstance(meta, dict) else None


def lasting(ttl: str | None) -> bool:
    """Whether an item with this accepted `ttlInSeconds` is sure to outlive the check."""
    return ttl is None or int(ttl) <= 0 or int(ttl) >= 60


def field(item: dict[str, Any], name: str, default: Any = None) -> Any:
    """A field matched case-insensitively, the last spelling winning (as Go's decoder does)."""
    found = default
    for k, v in item.items():
        if k.lower() == name:
            found = v
    return found


def read_back(api: Api, want: dict[str, Any]) -> None:
    """Bulk get (and GET, for keys a URL can carry) returns each key's expected value or absence."""
    if not want:
        return
    r = api.request("POST", f"{STATE}/bulk", json={"keys": list(want)})
    check("bulk", r)
    assert r.status_code == 200, r.text
    got = {entry["key"]: entry for entry in decoded(r.content)}
    assert set(got) == set(want)
    for key, value in want.items():
        entry = got[key]
        if value is UNSET:
            assert "data" not in entry, (key, entry)
        else:
            assert "data" in entry and entry["data"] == exact(value), (key, entry, value)
            assert entry.get("etag"), entry
        if key in (".", ".."):
            continue  # path cleaning resolves these segments before routing, as daprd's does
        g = api.request("GET", f"{STATE}/{quote(key, safe='')}")
        check("get", g)
        if value is UNSET:
            assert g.status_code == 204, (key, g.status_code, g.text)
        else:
            assert g.status_code == 200 and decoded(g.content) == exact(value), (key, g.text)


# --- save -----------------------------------------------------------------------------------


def test_save(api: Api, component: Any) -> None:
    @given(body=st.lists(items(), max_size=4), params=query_params)
    # A float whose shortest form has an exponent: jsonb gives it back spelt out.
    @example(body=[{"key": "big", "value": 5.140821452085841e16}], params=[])
    def save(body: list[Any], params: list[tuple[str, str]]) -> None:
        r = api.request("POST", STATE + query_string(params), content=json.dumps(body).encode())
        check("save", r)
        if r.status_code != 204:
            return
        url_ttl = next((v for n, v in params if n == "metadata.ttlInSeconds"), None)
        seen: dict[str, int] = {}
        for item in body:
            if isinstance(item, dict):
                seen[field(item, "key")] = seen.get(field(item, "key"), 0) + 1
        want: dict[str, Any] = {}
        for item in body:
            key = field(item, "key")
            ttl = url_ttl if url_ttl is not None else ttl_of(field(item, "metadata"))
            # Items of one request run in parallel, so a repeated key has no single expected value.
            if seen[key] == 1 and lasting(ttl):
                want[key] = expected(field(item, "value"))
        read_back(api, want)

    run(save, 150, component.backend)
    healthy(api)


# --- get and delete -------------------------------------------------------------------------


def test_get_and_delete(api: Api, component: Any) -> None:
    headers = st.dictionaries(
        st.sampled_from(["if-match", "If-Match", "content-type", "x-anything", "dapr-api-token"]),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12),
        max_size=3,
    )

    @given(key=keys, params=query_params, hdrs=headers, method=st.sampled_from(["GET", "DELETE"]))
    def get_delete(key: str, params: list[tuple[str, str]], hdrs: dict[str, str], method: str) -> None:
        route = "get" if method == "GET" else "delete"
        # Fully escaped, and with the characters a URL may carry raw left raw ("+" then means a space).
        for path in {quote(key, safe=""), quote(key, safe="/+:@!$&'()*,;=")}:
            r = api.request(method, f"{STATE}/{path}{query_string(params)}", headers=hdrs)
            check(route, r)

    run(get_delete, 150, component.backend)
    healthy(api)


# --- bulk get -------------------------------------------------------------------------------


def test_bulk_get(api: Api, component: Any) -> None:
    body = st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "keys": st.one_of(st.lists(keys, max_size=8), json_values),
                "parallelism": st.one_of(st.integers(-5, 5), json_values),
                "metadata": st.one_of(st.dictionaries(st.text(max_size=4), st.text(max_size=4)), json_values),
            },
        ),
        json_values,
    )

    @given(body=body, params=query_params)
    def bulk(body: Any, params: list[tuple[str, str]]) -> None:
        r = api.request("POST", f"{STATE}/bulk{query_string(params)}", content=json.dumps(body).encode())
        check("bulk", r)
        if r.status_code == 200:
            wanted = (body or {}).get("keys") or []
            assert sorted(e["key"] for e in r.json()) == sorted(wanted)

    run(bulk, 150, component.backend)
    healthy(api)


# --- transactions ---------------------------------------------------------------------------


def test_transaction(api: Api, component: Any) -> None:
    tx_keys = st.sampled_from(["t1", "t2", "t3", "t 4", "t/5"]) | keys
    operation = st.one_of(
        st.fixed_dictionaries(
            {
                "operation": st.sampled_from(["upsert", "delete", "upsert", "Upsert", "get", ""])
                | json_values,
                "request": st.one_of(items(tx_keys), items(tx_keys), items(tx_keys), json_values),
            }
        ),
        json_values,
    )
    body = st.one_of(
        st.fixed_dictionaries(
            {"operations": st.one_of(st.lists(operation, max_size=5), json_values)},
            optional={
                "metadata": st.one_of(st.dictionaries(st.text(max_size=4), st.text(max_size=4)), json_values)
            },
        ),
        json_values,
    )

    @given(body=body, params=query_params)
    def transaction(body: Any, params: list[tuple[str, str]]) -> None:
        r = api.request(
            "POST", f"{STATE}/transaction{query_string(params)}", content=json.dumps(body).encode()
        )
        check("transaction", r)
        if r.status_code != 204 or not isinstance(body, dict) or not body.get("operations"):
            return
        url_ttl = next((v for n, v in params if n == "metadata.ttlInSeconds"), None)
        want: dict[str, Any] = {}
        unsure: set[str] = set()
        for op in body["operations"]:
            request = op["request"]
            key = field(request, "key")
            if op["operation"] == "delete":
                want[key] = UNSET
                unsure.discard(key)
                continue
            ttl = url_ttl if url_ttl is not None else ttl_of(field(request, "metadata"))
            want[key] = expected(field(request, "value"))
            if lasting(ttl):
                unsure.discard(key)
            else:
                unsure.add(key)
        read_back(api, {k: v for k, v in want.items() if k not in unsure})

    run(transaction, 150, component.backend)
    healthy(api)


# --- query ----------------------------------------------------------------------------------

SEED = [
    {"a": 1, "b": "x", "c": {"d": True}},
    {"a": 2.5, "b": "y", "c": {"d": False}},
    {"a": -3, "b": "", "c": {"d": None}},
    {"a": "1", "b": 1, "c": []},
    {"a": None},
    {"a": [1, 2], "b": {"x": 1}},
    {"ü": "ü", "a\x00": "\x00"},
    "not an object",
    42,
    None,
    {"a": 10**30, "b": "zz"},
]


# A reference evaluator of the documented query semantics (docs/state-api.md, "Query semantics"),
# written here from the docs so the check does not share code with any store. A comparison it cannot
# decide (numbers whose exact and float64 comparisons disagree, or two documents' orders of "other"
# values) is None: such documents may or may not be results.
_OTHER = 4


def _rank(value: Any) -> int:
    """Ascending order across types: missing or null, booleans, numbers, strings, other."""
    if value is None or value is UNSET:
        return 0
    if isinstance(value, bool):
        return 1
    if isinstance(value, int | float):
        return 2
    return 3 if isinstance(value, str) else _OTHER


def _at(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return UNSET
        doc = doc[part]
    return doc


def _compare(left: Any, right: Any) -> int | None:
    """-1, 0 or 1 for two values of one rank; None when undecidable."""
    if isinstance(left, int | float) and not isinstance(left, bool):
        exact = (left > right) - (left < right)
        loose = (float(left) > float(right)) - (float(left) < float(right))
        return exact if exact == loose else None
    if isinstance(left, str):
        return int(left > right) - int(left < right)
    return 0 if left == right else None


def _holds(node: dict[str, Any], doc: Any) -> bool | None:
    ((op, arg),) = node.items()
    if op in ("AND", "OR"):
        outcomes = [_holds(child, doc) for child in arg]
        decided = [o for o in outcomes if o is not None]
        if op == "AND":
            return False if False in decided else (True if len(decided) == len(outcomes) else None)
        return True if True in decided else (False if len(decided) == len(outcomes) else None)
    ((path, wanted),) = arg.items()
    found = _at(doc, path)
    if found is UNSET:
        return False  # a missing path never matches, NEQ included
    if op == "IN":
        outcomes = [_holds({"EQ": {path: v}}, doc) for v in wanted]
        return True if True in outcomes else (None if None in outcomes else False)
    same_rank = _rank(found) == _rank(wanted)
    if op in ("EQ", "NEQ"):
        equal = same_rank and _compare(found, wanted)
        if equal is None:
            return None
        return (equal == 0) == (op == "EQ") if same_rank else op == "NEQ"
    if not same_rank or _rank(found) not in (2, 3):
        return False  # orderings compare numbers with numbers and strings with strings only
    order = _compare(found, wanted)
    if order is None:
        return None
    return {"GT": order > 0, "GTE": order >= 0, "LT": order < 0, "LTE": order <= 0}[op]


def _before(body: Any, first: tuple[str, Any], second: tuple[str, Any]) -> bool | None:
    """Whether `first` (key, doc) sorts strictly before `second`: by the sort keys, then by key."""
    for entry in body.get("sort") or []:
        left, right = _at(first[1], entry["key"]), _at(second[1], entry["key"])
        order = _rank(left) - _rank(right)
        if order == 0 and _rank(left) != 0:
            decided = _compare(left, right)
            if decided is None:
                return None
            order = decided
        if order:
            return (order < 0) != ((entry.get("order") or "ASC") == "DESC")
    return first[0] < second[0]


def _reference_cases(test: Any) -> Any:
    """Valid queries every run tries first, whatever hypothesis draws: each rule of the semantics once."""
    for body in (
        {"filter": {"NEQ": {"b": "x"}}},  # a missing path never matches, NEQ included
        {"filter": {"EQ": {"a": 1}}},  # 1 but neither "1" nor true
        {"filter": {"GT": {"a": 0}}, "sort": [{"key": "a", "order": "DESC"}]},
        {"filter": {"LTE": {"b": "y"}}, "sort": [{"key": "b"}]},  # strings with strings only
        {"filter": {"OR": [{"IN": {"c.d": [True, None]}}, {"EQ": {"b": 1}}]}},
        {"sort": [{"key": "a", "order": "DESC"}, {"key": "b"}], "page": {"limit": 4}},
        {"sort": [{"key": "a"}], "page": {"limit": 3, "token": "3"}},
    ):
        test = example(body=body, params=[])(test)
    return test


def test_query(api: Api, component: Any) -> None:
    seed = [{"key": f"doc-{i}", "value": v} for i, v in enumerate(SEED)]
    assert api.request("POST", STATE, json=seed).status_code == 204
    stored: dict[str, Any] = {str(item["key"]): expected(item["value"]) for item in seed}
    # docs/state-api.md: PostgreSQL's jsonb cannot hold NUL, so such values are never query results there.
    searched = {
        key: doc
        for key, doc in stored.items()
        if component.backend != "postgresql" or "\\u0000" not in json.dumps(doc)
    }

    @given(body=st.one_of(queries, queries, json_values), params=query_params)
    @_reference_cases
    def query(body: Any, params: list[tuple[str, str]]) -> None:
        r = api.request("POST", QUERY + query_string(params), content=json.dumps(body).encode())
        check("query", r)
        if r.status_code not in (200, 204):
            return
        body = orjson.loads(json.dumps(body))  # as the server decoded it; it was accepted, so it is valid
        parsed = q.parse(body)
        flt = body.get("filter") or None
        outcome = {key: True if flt is None else _holds(flt, doc) for key, doc in searched.items()}
        sure = sorted(k for k, o in outcome.items() if o)
        maybe = sorted(k for k, o in outcome.items() if o is not False)
        # The page the reference expects: every match after the token, at most `limit` of them.
        fewest, most = (max(0, len(found) - parsed.offset) for found in (sure, maybe))
        if parsed.limit:
            fewest, most = min(fewest, parsed.limit), min(most, parsed.limit)
        results = r.json()["results"] if r.status_code == 200 else []
        keys = [result["key"] for result in results]
        assert fewest <= len(keys) <= most, (body, keys, sure)
        assert set(keys) <= set(maybe) and len(set(keys)) == len(keys), (body, keys, maybe)
        if not parsed.offset and (not parsed.limit or parsed.limit >= len(maybe)):
            assert set(sure) <= set(keys), (body, keys, sure)
        if parsed.limit and results:
            assert r.json()["token"] == str(parsed.offset + len(results))
        for result in results:
            assert result["etag"] and result["data"] == stored[result["key"]], result
        for first, second in itertools.pairwise(keys):
            order = _before(body, (second, stored[second]), (first, stored[first]))
            assert order is not True, (body, keys)

    run(query, 150, component.backend)
    healthy(api)


# --- any request at all ---------------------------------------------------------------------

SEGMENTS = st.one_of(
    st.sampled_from(["store", "other", "", ".", "..", "%", "%zz", "%2F", "%00", "%FF%FE", "a+b", "bulk"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#?/"), max_size=8),
)
PREFIXES = ["/v1.0/state", "/v1.0-alpha1/state", "/v1.0/metadata", "/v1.0/healthz", "/v1.0", "/livez", ""]


def test_any_request(api: Api, component: Any) -> None:
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
        prefix=st.sampled_from(PREFIXES),
        segments=st.lists(SEGMENTS, max_size=3),
        tail=st.sampled_from(["", "/bulk", "/transaction", "/query", "/"]),
        params=query_params,
        body=raw_bodies(),
        content_type=st.sampled_from(
            ["application/json", "text/plain", "", "application/x-www-form-urlencoded"]
        ),
    )
    def any_request(
        *,
        method: str,
        prefix: str,
        segments: list[str],
        tail: str,
        params: list[tuple[str, str]],
        body: bytes,
        content_type: str,
    ) -> None:
        path = prefix + "".join("/" + s for s in segments) + tail
        headers = {"content-type": content_type} if content_type else {}
        url = "http://state" + (path or "/") + query_string(params)
        r = api.request(method, url, content=body, headers=headers)
        # Which route answered is not known here, so any route's documented 500 is accepted.
        failures = []
        for route in DOCUMENTED_500:
            try:
                check(route, r)
            except AssertionError as exc:
                failures.append(exc)
                continue
            return
        raise failures[-1]

    run(any_request, 300, component.backend)
    healthy(api)


def test_openapi_routes_are_all_fuzzed(api: Api) -> None:
    """Every route of the OpenAPI document is one the tests above exercise; a new route must join."""
    r = api.request("GET", "/v1.0/openapi.json")
    assert r.status_code == 200
    documented = {(path, method.upper()) for path, ops in r.json()["paths"].items() for method in ops}
    fuzzed = {
        ("/v1.0/state/{storeName}", "POST"),
        ("/v1.0/state/{storeName}", "PUT"),
        ("/v1.0/state/{storeName}/{key}", "GET"),
        ("/v1.0/state/{storeName}/{key}", "DELETE"),
        ("/v1.0/state/{storeName}/bulk", "POST"),
        ("/v1.0/state/{storeName}/bulk", "PUT"),
        ("/v1.0/state/{storeName}/transaction", "POST"),
        ("/v1.0/state/{storeName}/transaction", "PUT"),
        ("/v1.0-alpha1/state/{storeName}/query", "POST"),
        ("/v1.0-alpha1/state/{storeName}/query", "PUT"),
        # reached by test_any_request (prefixes /v1.0/healthz, /v1.0/metadata, /livez)
        ("/v1.0/healthz", "GET"),
        ("/v1.0/healthz/outbound", "GET"),
        ("/v1.0/metadata", "GET"),
        ("/v1.0/metadata/{key}", "PUT"),
        ("/livez", "GET"),
    }
    assert documented <= fuzzed, f"routes nobody fuzzes: {sorted(documented - fuzzed)}"


def test_put_is_fuzzed_like_post(api: Api) -> None:
    """The PUT spellings share the POST handlers; one smoke request each keeps that true."""
    for path, body in (
        (STATE, b"[]"),
        (f"{STATE}/bulk", b"{}"),
        (f"{STATE}/transaction", b"{}"),
        (QUERY, b"{}"),
    ):
        r = api.request("PUT", path, content=body)
        check("other" if path != QUERY else "query", r)
        assert r.status_code < 300 or "NOT_SUPPORTED" in r.text, (path, r.status_code, r.text)
