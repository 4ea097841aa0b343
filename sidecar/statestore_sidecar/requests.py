"""Decoding of request bodies and parameters the way daprd decodes them.

Field names match case-insensitively (Go's encoding/json), type mismatches are malformed requests,
and `metadata.*` query parameters merge into per-item metadata with the URL winning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from .json_codec import MAX_VALUE_DEPTH, Malformed, decode_json, encode_value
from .state_api import ItemRequest

__all__ = ["MAX_VALUE_DEPTH", "Malformed", "decode_json", "encode_value"]

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class BadEscape(ValueError):
    pass


def unescape_segment(segment: str) -> str:
    """A path segment decoded as daprd decodes it: percent escapes, and `+` as a space."""
    bad = _BAD_ESCAPE.search(segment)
    if bad:
        raise BadEscape(f'invalid URL escape "{segment[bad.start() : bad.start() + 3]}"')
    return unquote_plus(segment)


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


_ITEM_FIELDS = frozenset({"key", "value", "etag", "metadata", "options", "contenttype"})
_OPTION_FIELDS = frozenset({"concurrency", "consistency"})


def decode_item(raw: Any) -> ItemRequest:
    """An item from a decoded JSON value; Malformed for wrong types (keys are checked by the core)."""
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
    return ItemRequest(key or "", encode_value(item.get("value")), etag, metadata, mode, consistency)
