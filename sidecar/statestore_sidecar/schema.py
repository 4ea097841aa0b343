"""Per-store metadata schemas and Dapr's weak typing of metadata values.

One `StoreSchema` per store type is the single source of truth: the server resolves a Component's
metadata with it before connecting, and the operator validates Components with the very same call.
"""

from __future__ import annotations

import difflib
import enum
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import encryption
from .stores.base import Feature

# The longest metadata value accepted (certificates and JSON settings included); longer is refused.
MAX_VALUE_LENGTH = 64 * 1024
_MAX_MESSAGE = 300  # error messages quote values; a hostile value must not flood logs and statuses

TRUTHY = frozenset({"y", "yes", "true", "t", "on", "1"})
FALSY = frozenset({"n", "no", "false", "f", "off", "0", ""})


class Kind(enum.Enum):
    STRING = "string"
    BOOL = "bool"
    INT = "int"
    DURATION = "duration"  # Go duration ("5s", "1m30s") or an integer number of seconds
    JSON = "json"


class Persistence(enum.Enum):
    """Where a store keeps its data, which decides how a cluster may run its servers."""

    NETWORK = "network"  # a database server: any number of state API replicas share it
    LOCAL_FILES = "local-files"  # files beside the server: one writer, on a persistent volume
    MEMORY = "memory"  # the server's own memory: one replica, lost on every restart


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind = Kind.STRING
    required: bool = False
    default: Any = None
    aliases: tuple[str, ...] = ()
    minimum: float | None = None
    choices: tuple[str, ...] = ()
    # A regular expression a string value must match in full (identifiers such as table names).
    pattern: str | None = None
    # The store's own parser of a string value (a host list, a connection string): run at validation
    # so whatever the store would refuse is refused there; its ValueError names what is wrong.
    check: Callable[[str], object] | None = None


@dataclass(frozen=True, slots=True)
class StoreSchema:
    type: str
    fields: tuple[Field, ...]
    features: frozenset[Feature]
    versions: tuple[str, ...] = ("v1",)
    persistence: Persistence = Persistence.NETWORK
    # Keys Dapr documents for this store that we deliberately do not implement: refused, never ignored.
    unsupported: Mapping[str, str] = field(default_factory=dict)
    # Rules across fields, run on the resolved values (fields not given are their defaults, None for
    # values the caller cannot see); raises MetadataError naming a field.
    check: Callable[[Resolved], None] | None = None
    # Metadata this server does not interpret (a pluggable component's): every item is kept as given,
    # as a string, for the store to pass on.
    passthrough: bool = False

    @property
    def transactional_with_etags(self) -> bool:
        return {Feature.ETAG, Feature.TRANSACTIONAL} <= self.features


# Metadata every state store accepts, whatever its type (Dapr adds these to every schema).
COMMON_FIELDS: tuple[Field, ...] = (
    Field("keyPrefix", default="appid"),  # appid, name, namespace, none or a custom prefix
    Field("actorStateStore", Kind.BOOL, default=False),
    # daprd's state encryption (hex AES keys from secrets; see encryption.py).
    Field(encryption.PRIMARY, check=encryption.parse_key),
    Field(encryption.SECONDARY, check=encryption.parse_key),
)
# Keys Dapr accepts on every transactional store for its outbox; we accept and ignore them.
IGNORED_KEYS = frozenset(
    k.lower()
    for k in ("outboxPublishPubsub", "outboxPublishTopic", "outboxPubsub", "outboxDiscardWhenMissingState")
)

# The names of Dapr's built-in Azure AD (Microsoft Entra ID) authentication profile, refused (never
# ignored) by the stores that document it: they only take effect with it, and it is not implemented.
AZURE_AD_PROFILE: Mapping[str, str] = {
    name: "Microsoft Entra ID (Azure AD) authentication is not implemented"
    for name in (
        "azureClientId",
        "azureTenantId",
        "azureClientSecret",
        "azureCertificate",
        "azureCertificateFile",
        "azureCertificatePassword",
        "azureEnvironment",
    )
}


class MetadataError(ValueError):
    """A metadata value is missing or malformed; `field` names the metadata item."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"metadata {field_name!r}: {message}")
        self.field = field_name
        self.reason = message


@dataclass(frozen=True, slots=True)
class Resolved:
    """Metadata after typing and defaults, keyed by each field's canonical name."""

    values: Mapping[str, Any]
    unknown: tuple[str, ...] = ()
    # Fields given whose values the caller cannot see (the operator does not read Secrets): their
    # values here are defaults, so rules across fields leave them out.
    opaque: frozenset[str] = frozenset()

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def given(self, name: str) -> bool:
        """Whether the field has a non-empty value, or an opaque one."""
        return name in self.opaque or self.values[name] not in (None, "")

    def known(self, name: str) -> bool:
        return name not in self.opaque


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in TRUTHY:
        return True
    if lowered in FALSY:
        return False
    raise ValueError(f"{text!r} is not a boolean (use true or false)")


def is_truthy(text: str | None) -> bool:
    """Dapr's IsTruthy: anything but the truthy words counts as false."""
    return text is not None and text.strip().lower() in TRUTHY


# Go's time.Duration (int64 nanoseconds) ends about 292 years out; longer durations are errors there.
_MAX_DURATION = (2**63 - 1) / 1e9


def parse_duration(text: str) -> float:
    """Seconds from a Go duration string, or from a bare integer meaning seconds."""
    s = text.strip()
    if re.fullmatch(r"-?\d+", s):
        seconds = float(int(s))
        if abs(seconds) > _MAX_DURATION:
            raise ValueError(f"{text!r} is out of range")
        return seconds
    sign = -1.0 if s.startswith("-") else 1.0
    body = s.lstrip("+-")
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise ValueError(f"{text!r} is not a duration (for example 30s, 5m or 1h)")
    if not math.isfinite(total) or total > _MAX_DURATION:
        raise ValueError(f"{text!r} is out of range")
    return sign * total


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def _convert(f: Field, raw: str) -> Any:
    match f.kind:
        case Kind.STRING:
            value: Any = raw
        case Kind.BOOL:
            value = parse_bool(raw)
        case Kind.INT:
            value = parse_int(raw)
        case Kind.DURATION:
            value = parse_duration(raw)
        case Kind.JSON:
            try:
                value = json.loads(raw)
            except ValueError as exc:
                raise ValueError(f"not valid JSON: {exc}") from None
            except RecursionError:
                raise ValueError("not valid JSON: nested too deeply") from None
    if f.choices and str(value) not in f.choices:
        raise ValueError(f"{raw!r} is not one of {', '.join(f.choices)}")
    if f.minimum is not None and isinstance(value, int | float) and value < f.minimum:
        raise ValueError(f"{raw!r} is below the minimum of {f.minimum:g}")
    if f.pattern is not None and not re.fullmatch(f.pattern, raw):
        raise ValueError(f"{raw!r} is not allowed here (it must match {f.pattern})")
    if f.check is not None:
        try:
            f.check(raw)
        except MetadataError as exc:  # a parser shared with the store names the field itself
            raise ValueError(exc.reason) from None
    return value


def stringify(value: Any) -> str:
    """A metadata value as Dapr sees it: JSON strings unquoted, other JSON values in JSON form."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"))


def check_duplicates(names: Iterable[str]) -> None:
    seen: dict[str, str] = {}
    for name in names:
        lowered = name.lower()
        if lowered in seen:
            raise MetadataError(name, f"appears twice (also as {seen[lowered]!r}); names ignore case")
        seen[lowered] = name


def names(schema: StoreSchema) -> list[str]:
    """Every metadata name the schema knows (aliases included), as documented."""
    return [n for f in (*COMMON_FIELDS, *schema.fields) for n in (f.name, *f.aliases)]


def close_match(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate `name` is most likely a misspelling of, if any (names ignore case)."""
    by_lower = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.8)
    return by_lower[found[0]] if found else None


def unknown_warning(schema: StoreSchema, name: str) -> str:
    """What to say about a metadata name the schema does not know (Dapr ignores such names)."""
    text = f"metadata {name!r} is not a setting of {schema.type} and is ignored"
    match = close_match(name, names(schema))
    return f"{text}: did you mean {match!r}?" if match else text


def resolve(schema: StoreSchema, raw: Mapping[str, str], *, opaque: Iterable[str] = ()) -> Resolved:
    """Type and default the metadata of one Component, or raise MetadataError naming the item.

    `raw` maps metadata names (any case, as written) to string values, secrets already substituted.
    Unknown names are returned in `Resolved.unknown` rather than refused, as Dapr ignores them.
    `opaque` names (canonically) the fields given with values the caller cannot see.
    """
    check_duplicates(raw)
    by_name: dict[str, Field] = {}
    for f in (*COMMON_FIELDS, *schema.fields):
        for name in (f.name, *f.aliases):
            by_name[name.lower()] = f
    unsupported = {k.lower(): why for k, why in schema.unsupported.items()}
    values: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    unknown: list[str] = []
    for name, text in raw.items():
        lowered = name.lower()
        if lowered in unsupported:
            raise MetadataError(name, f"is not supported by this server: {unsupported[lowered]}")
        known = by_name.get(lowered)
        if known is None and schema.passthrough:
            values[name] = text
            continue
        if known is None:
            if lowered not in IGNORED_KEYS:
                unknown.append(name)
            continue
        if known.name in given_as:
            raise MetadataError(name, f"is the same setting as {given_as[known.name]!r}; give only one")
        given_as[known.name] = name
        if known.required and not text.strip():
            raise MetadataError(name, "is required and must not be empty")
        if len(text) > MAX_VALUE_LENGTH:
            raise MetadataError(
                name, f"is {len(text)} characters long; at most {MAX_VALUE_LENGTH} are allowed"
            )
        try:
            values[known.name] = _convert(known, text)
        except ValueError as exc:
            message = str(exc)
            if len(message) > _MAX_MESSAGE:
                message = message[:_MAX_MESSAGE] + "…"
            raise MetadataError(name, message) from None
    for f in (*COMMON_FIELDS, *schema.fields):
        if f.name in values:
            continue
        if f.required:
            misspelt = [u for u in unknown if close_match(u, (f.name, *f.aliases))]
            hint = "".join(
                f"; {name!r} is not a setting of {schema.type}: did you mean {f.name!r}?"
                for name in misspelt[:1]
            )
            raise MetadataError(f.name, f"is required{hint}")
        values[f.name] = f.default
    resolved = Resolved(values=values, unknown=tuple(unknown), opaque=frozenset(opaque))
    if schema.check is not None:
        schema.check(resolved)
    return resolved
