"""The compact single-item save body takes a short cut to its value's text (raw_values.py); it must
give what the full walk gives, for every body, including the ones built to mislead it."""

from __future__ import annotations

import pytest

from statestore_sidecar import raw_values
from statestore_sidecar.json_codec import decode_json

BODIES = [
    b'[{"key":"a","value":1}]',
    b'[{"key":"a","value":1.0}]',
    b'[{"key":"a","value":1.00}]',
    b'[{"key":"a","value":1e3}]',
    b'[{"value":1.00,"abc\\"value":1.0}]',
    b'[{"key":"a","value":{"a":1},"o":{"value":{"a":1}}}]',
    b'[{"key":"a","Value":2,"value":1}]',
    b'[{"key":"a","value":"\\u00e9"}]',
    b'[{"key":"a","value":"\xc3\xa9"}]',
    b' [ {"key":"a", "value": [1, 2]} ] ',
    b'[{"key":"a","value":[1,2]}]\n',
    b'[{"key":"a","value":null}]',
    b'[{"value":{"x":{"value":1}}}]',
    b'[{"key":"a","value":{"b":2,"a":1}}]',
    b'[{"key":"a","value":1,"value":2}]',
    b'[{"key":"a","value":"x"},{"key":"b","value":"x"}]',
    b'[{"key":"a","value":"}]"}]',
    b'[{"key":"a","etag":"1","value":{"k":"\\"value\\":1}]"}}]',
    b"[1]",
    b"[]",
]


@pytest.mark.parametrize("body", BODIES)
def test_same_as_the_full_walk(body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = decode_json(body)
    raw_values.attach_to_save(body, fast)
    walked = decode_json(body)
    monkeypatch.setattr(raw_values, "_compact_single", lambda body, decoded: False)
    raw_values.attach_to_save(body, walked)
    assert fast == walked


def test_the_short_cut_is_taken_for_the_common_body() -> None:
    body = b'[{"key":"k","value":{"a":[1,2,{"b":"c"}]}}]'
    decoded = decode_json(body)
    assert raw_values._compact_single(body, decoded)
    assert decoded[0]["value"] == raw_values.RawValue(b'{"a":[1,2,{"b":"c"}]}', {"a": [1, 2, {"b": "c"}]})
