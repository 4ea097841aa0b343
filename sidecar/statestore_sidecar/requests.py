"""Decoding of request bodies and parameters the way daprd decodes them.

Field names match case-insensitively (Go's encoding/json), type mismatches are malformed requests,
and `metadata.*` query parameters merge into per-item metadata with the URL winning.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import orjson

from .raw_values import RawValue
from .stores.base import Concurrency, DeleteRequest, SetRequest, StoreError

TTL_MAX = 2**31 - 1
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class Malformed(ValueError):
    """The body or a parameter does not decode; the message is shown to the client."""


class BadEscape(ValueError):
    pass


def unescape_segment(segment: str) -> str:
    """A path segment decoded as daprd decodes it: percent escapes, and `+` as a space."""
    bad = _BAD_ESCAPE.search(segment)
    if bad:
        raise BadEscape(f'invalid URL escape "{segment[bad.start() : bad.start() + 3]}"')
    return unquote_plus(segment)


def decode_json(body: bytes) -> Any:
    """Parse a JSON body; integers beyond 64 bits fall back to the standard library, as Go accepts them."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not body.strip():
            raise Malformed("unexpected end of JSON input") from None
        if "Integer" in str(exc):
            try:
                return json.loads(body, parse_constant=_refuse_constant)
            except ValueError:
                pass
        raise Malformed(f"invalid JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


# orjson writes JSON nested at most this deep (it reads up to 1024 levels).
MAX_VALUE_DEPTH = 254


def encode_value(value: Any) -> bytes:
    """A value's JSON: its text as sent (a RawValue), else the decoded value as compact JSON;
    Malformed when it cannot be stored."""
    if isinstance(value, RawValue):
        if len(value.text) > 2 * MAX_VALUE_DEPTH:  # shorter text cannot nest that deep
            encode_value(value.value)
        return value.text
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        if "Recursion" in str(exc):
            raise Malformed(f"value is nested deeper than {MAX_VALUE_DEPTH} levels") from None
    try:  # an integer beyond 64 bits, decoded by the fallback
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except (RecursionError, ValueError) as exc:
        raise Malformed(f"value cannot be stored as JSON: {exc}") from None


_GO_TYPES = {str: "string", dict: "map", list: "array", bool: "bool", int: "number", float: "number"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return _GO_TYPES.get(type(value), "value")


def fields(obj: Mapping[str, Any], known: frozenset[str], struct: str) -> dict[str, Any]:
    """An object's known fields by lower-case name, ignoring unknown ones, as Go's decoder does."""
    out: dict[str, Any] = {}
    for name, value in obj.items():
        lowered = name.lower()
        if lowered in known:
            out[lowered] = value
    return out


def expect_string(value: Any, struct: str, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise Malformed(
        f"json: cannot unmarshal {_json_type(value)} into Go struct field {struct}.{name} of type string"
    )


def expect_string_map(value: Any, struct: str, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise Malformed(
            f"json: cannot unmarshal {_json_type(value)} into Go struct field {struct}.{name} "
            "of type map[string]string"
        )
    for item in value.values():
        if not isinstance(item, str):
            raise Malformed(
                f"json: cannot unmarshal {_json_type(item)} into Go struct field "
                f"{struct}.{name} of type string"
            )
    return dict(value)


def expect_object(value: Any, struct: str, name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise Malformed(
            f"json: cannot unmarshal {_json_type(value)} into Go struct field {struct}.{name} of type object"
        )
    return value


def url_metadata(query_string: bytes) -> dict[str, str]:
    """`metadata.<name>` query parameters; the first of repeated parameters wins."""
    out: dict[str, str] = {}
    if not query_string:
        return out
    for pair in query_string.decode("latin-1").split("&"):
        name, _, value = pair.partition("=")
        name = unquote_plus(name)
        if name.startswith("metadata.") and len(name) > 9:
            out.setdefault(name[9:], unquote_plus(value))
    return out


def query_param(query_string: bytes, wanted: str) -> str | None:
    if not query_string:
        return None
    for pair in query_string.decode("latin-1").split("&"):
        name, _, value = pair.partition("=")
        if unquote_plus(name) == wanted:
            return unquote_plus(value)
    return None


def ttl_seconds(metadata: Mapping[str, str]) -> int | None:
    """`ttlInSeconds` from request metadata; a bad value is a store error (HTTP 500, as daprd)."""
    raw = metadata.get("ttlInSeconds")
    if raw is None:
        return None
    try:
        ttl = int(raw)
    except ValueError:
        raise StoreError(f"incorrect value for metadata ttlInSeconds: {raw!r} is not an integer") from None
    if not -1 <= ttl <= TTL_MAX:
        raise StoreError(f"incorrect value for metadata ttlInSeconds: {ttl} is not between -1 and {TTL_MAX}")
    return ttl


def concurrency(value: str | None) -> Concurrency:
    if not value:
        return Concurrency.LAST_WRITE
    try:
        return Concurrency(value)
    except ValueError:
        raise StoreError(f"unrecognized concurrency model '{value}'") from None


def check_consistency(value: str | None) -> None:
    # Accepted and validated like daprd's stores; a single-node backend has nothing to vary.
    if value and value not in ("strong", "eventual"):
        raise StoreError(f"unrecognized consistency model '{value}'")


_ITEM_FIELDS = frozenset({"key", "value", "etag", "metadata", "options", "contenttype"})
_OPTION_FIELDS = frozenset({"concurrency", "consistency"})


@dataclass(frozen=True, slots=True)
class ItemRequest:
    """One save item or transaction request, decoded as Go decodes `state.SetRequest`."""

    key: str
    value: bytes  # encoded when decoded, so a value that cannot be stored is a malformed request
    etag: str | None
    metadata: dict[str, str]
    concurrency: str | None
    consistency: str | None

    def set_request(self, stored_key: str, url_metadata: Mapping[str, str]) -> SetRequest:
        """The store write; StoreError for option or TTL values a store would refuse."""
        check_consistency(self.consistency)
        return SetRequest(
            key=stored_key,
            value=self.value,
            etag=self.etag or None,
            concurrency=concurrency(self.concurrency),
            ttl=ttl_seconds({**self.metadata, **url_metadata}),
        )

    def delete_request(self, stored_key: str) -> DeleteRequest:
        check_consistency(self.consistency)
        return DeleteRequest(stored_key, self.etag or None, concurrency(self.concurrency))


def decode_item(raw: Any) -> ItemRequest:
    """An item from a decoded JSON value; Malformed for wrong types or a missing key."""
    if raw is not None and not isinstance(raw, Mapping):
        raise Malformed("json: cannot unmarshal value into Go value of type state.SetRequest")
    item = fields(raw or {}, _ITEM_FIELDS, "SetRequest")
    key = expect_string(item.get("key"), "SetRequest", "key")
    etag = expect_string(item.get("etag"), "SetRequest", "etag")
    metadata = expect_string_map(item.get("metadata"), "SetRequest", "metadata")
    options = fields(
        expect_object(item.get("options"), "SetRequest", "options"), _OPTION_FIELDS, "SetStateOption"
    )
    mode = expect_string(options.get("concurrency"), "SetStateOption", "concurrency")
    consistency = expect_string(options.get("consistency"), "SetStateOption", "consistency")
    if not key:
        raise Malformed('"key" is a required field')
    return ItemRequest(key, encode_value(item.get("value")), etag, metadata, mode, consistency)
