"""Hypothesis strategies for hostile state API requests: keys, JSON values, bodies, query strings."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

# Keys: any text a JSON string can carry (no lone surrogates), biased towards the awkward ones.
AWKWARD_KEYS = [
    "",
    " ",
    ".",
    "..",
    "/",
    "a/b",
    "+",
    "a b",
    "%",
    "%zz",
    "%2F",
    "||",
    "a||b",
    "|",
    "\x00",
    "nul\x00key",
    "\x01\x1f\x7f",
    "\t\r\n",
    "\u200b",
    "\ufeff",
    "ключ",
    "🗝",
    "k" * 300,
    "'; DROP TABLE state; --",
    '"',
    "`",
    "\\",
    "?x=1",
    "#frag",
]
keys = st.one_of(
    st.sampled_from(AWKWARD_KEYS),
    st.text(st.characters(codec="utf-8"), max_size=24),
    st.text("ab|. /%+", max_size=6),
)

# Numbers: beyond 64 bits too (orjson and Go decode those as float64).
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, 0]),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), numbers, st.text(st.characters(codec="utf-8"), max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(st.characters(codec="utf-8"), max_size=6), children, max_size=4),
    ),
    max_leaves=12,
)

TTL_VALUES = ["-1", "0", "1", "100", "-2", "abc", "", " 5", "1e3", "2147483647", "2147483648", "9" * 30]
CONCURRENCY = ["first-write", "last-write", "", "FIRST-WRITE", "x"]
CONSISTENCY = ["strong", "eventual", "", "x"]


def _field_name(name: str) -> st.SearchStrategy[str]:
    # Go matches field names case-insensitively.
    return st.sampled_from([name, name.upper(), name.capitalize()])


def _or_wrong_type(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(good, good, good, json_values)


metadata_maps = st.dictionaries(
    st.sampled_from(["ttlInSeconds", "contentType", "partitionKey", "x"]) | st.text(max_size=6),
    st.sampled_from(TTL_VALUES) | st.text(max_size=6),
    max_size=3,
)
options = st.fixed_dictionaries(
    {},
    optional={
        "concurrency": _or_wrong_type(st.sampled_from(CONCURRENCY)),
        "consistency": _or_wrong_type(st.sampled_from(CONSISTENCY)),
    },
)


@st.composite
def items(draw: st.DrawFn, key_strategy: st.SearchStrategy[str] = keys) -> Any:
    """A save item or transaction request: mostly well formed, with wrong types and junk mixed in."""
    if draw(st.integers(0, 15)) == 0:
        return draw(json_values)  # not an object at all
    item: dict[str, Any] = {}
    fields: dict[str, st.SearchStrategy[Any]] = {
        "key": _or_wrong_type(key_strategy),
        "value": json_values,
        "etag": _or_wrong_type(
            st.sampled_from(["", "bad-etag", "1", "00000000-0000-0000-0000-000000000000"])
        ),
        "metadata": _or_wrong_type(metadata_maps),
        "options": _or_wrong_type(options),
        "contentType": _or_wrong_type(st.sampled_from(["application/json", "text/plain"])),
        "unknownField": json_values,
    }
    for name, strategy in fields.items():
        if name == "key" or draw(st.booleans()):
            item[draw(_field_name(name))] = draw(strategy)
    return item


query_params = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "metadata.ttlInSeconds",
                "metadata.contentType",
                "metadata.",
                "metadata.x",
                "consistency",
                "concurrency",
                "appid",
            ]
        )
        | st.text(max_size=6),
        st.sampled_from(TTL_VALUES + CONCURRENCY + CONSISTENCY) | st.text(max_size=6),
    ),
    max_size=3,
)


def query_string(params: list[tuple[str, str]]) -> str:
    if not params:
        return ""
    return "?" + "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in params)


# Raw bodies: valid JSON of any shape, and byte-level damage.
def _dump(value: Any) -> bytes:
    return json.dumps(value).encode()


RAW_BODY_SAMPLES = [
    b"",
    b" ",
    b"null",
    b"[",
    b"{",
    b"[]",
    b"{}",
    b"NaN",
    b"[NaN]",
    b"[Infinity, -Infinity]",
    b'[{"key":"k","value":NaN}]',
    b'[{"key":"k","value":1e999}]',
    b'[{"key":"k","key":"other","value":1}]',
    b'{"keys":["a"],"keys":"b"}',
    b'[{"key":"k","value":"\xff\xfe"}]',
    b'[{"key":"\xc3\x28","value":1}]',
    b'[{"key":"k","value":"\\ud800"}]',
    b'[{"key":"k\\u0000","value":"\\u0000"}]',
    b"\xef\xbb\xbf[]",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b'[{"key":"k","value":' + b"9" * 5000 + b"}]",
    b'[{"key":"k","value":123456789012345678901234567890}]',
    b"\x00" * 64,
    b'{"operations":[{"operation":"upsert","request":{"key":"k","value":1}},]}',
]


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return draw(st.sampled_from(RAW_BODY_SAMPLES))
    if choice == 1:
        return draw(st.binary(max_size=64))
    body = _dump(draw(st.one_of(json_values, st.lists(items(), max_size=3))))
    if choice == 2:
        return body
    if choice == 3 and body:  # truncated
        return body[: draw(st.integers(0, len(body) - 1))]
    # a byte flipped
    if not body:
        return body
    at = draw(st.integers(0, len(body) - 1))
    return body[:at] + bytes([draw(st.integers(0, 255))]) + body[at + 1 :]


# Query filters: the grammar of reference §9 with invalid shapes mixed in.
PATHS = ["a", "b", "c.d", "missing", "a.b", "", "a..b", ".", "a\x00", "ü"]
COMPARE_OPS = ["EQ", "NEQ", "GT", "GTE", "LT", "LTE"]


def filters() -> st.SearchStrategy[Any]:
    leaf = st.one_of(
        st.builds(
            lambda op, path, value: {op: {path: value}},
            st.sampled_from([*COMPARE_OPS, "eq", "LIKE"]),
            st.sampled_from(PATHS),
            json_scalars,
        ),
        st.builds(
            lambda path, values: {"IN": {path: values}},
            st.sampled_from(PATHS),
            st.one_of(st.lists(json_scalars, max_size=4), json_scalars),
        ),
        json_values.map(lambda v: {"EQ": v}),
    )
    return st.recursive(
        leaf,
        lambda children: st.builds(
            lambda op, kids: {op: kids},
            st.sampled_from(["AND", "OR", "AND", "OR", "NOT"]),
            st.one_of(st.lists(children, min_size=0, max_size=4), children),
        ),
        max_leaves=10,
    )


queries = st.fixed_dictionaries(
    {},
    optional={
        "filter": st.one_of(filters(), st.just({}), json_values),
        "sort": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {"key": st.sampled_from(PATHS) | json_scalars},
                    optional={"order": st.sampled_from(["ASC", "DESC", "asc", ""]) | json_scalars},
                ),
                max_size=3,
            ),
            json_values,
        ),
        "page": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "limit": st.one_of(st.integers(-2, 5), numbers, json_scalars),
                    "token": st.one_of(
                        st.sampled_from(["", "0", "1", "3", "x", "-1", "9" * 30]), json_scalars
                    ),
                },
            ),
            json_values,
        ),
    },
)
