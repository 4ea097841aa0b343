"""Component resources: parsing, loading from files, and resolving their metadata.

The same `Component` model serves the server (from YAML files) and the operator (from the API
server), and `validate` is the one check both run before a store is connected or rolled out.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import encryption, keys
from .schema import (
    COMMON_FIELDS,
    MetadataError,
    Resolved,
    StoreSchema,
    check_duplicates,
    parse_duration,
    resolve,
    stringify,
    unknown_warning,
)
from .stores import UnknownStoreType, canonical_type, schema_for

API_VERSION = "dapr.io/v1alpha1"
KIND = "Component"
_INITIAL_VERSIONS = frozenset({"", "v0", "v1"})
DEFAULT_INIT_TIMEOUT = 5.0  # daprd's default spec.initTimeout
# Dapr's annotation naming the container (JSON) that serves a pluggable Component on Kubernetes.
COMPONENT_CONTAINER_ANNOTATION = "dapr.io/component-container"
# daprd refuses these as envRef targets, so a Component cannot read the server's own secrets.
_REFUSED_ENV = re.compile(r"^(DAPR_.*|APP_API_TOKEN)$|\s")


class ComponentError(ValueError):
    """A Component that cannot be loaded; the message names the file, component and field."""

    def __init__(self, message: str, *, source: str = "", component: str = "", field: str = "") -> None:
        where = ", ".join(p for p in (source, f"component {component!r}" if component else "") if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.component = component
        self.field = field
        self.reason = message


@dataclass(frozen=True, slots=True)
class SecretRef:
    name: str
    key: str


@dataclass(frozen=True, slots=True)
class MetadataItem:
    name: str
    value: str | None = None
    secret: SecretRef | None = None
    env: str | None = None


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    type: str
    version: str = ""
    namespace: str | None = None
    metadata: tuple[MetadataItem, ...] = ()
    scopes: tuple[str, ...] = ()
    ignore_errors: bool = False
    secret_store: str | None = None
    source: str = ""
    init_timeout: float = DEFAULT_INIT_TIMEOUT  # seconds one initialisation attempt may take
    # Declared pluggable (a component container is named): its socket may appear after the server starts.
    pluggable: bool = False

    @property
    def is_state_store(self) -> bool:
        return self.type.lower().startswith("state.")

    def error(self, message: str, field_name: str = "") -> ComponentError:
        return ComponentError(message, source=self.source, component=self.name, field=field_name)


def secret_env_var(secret_name: str, key: str) -> str:
    """The environment variable that carries a `secretKeyRef` value into the server.

    The operator injects each referenced Secret key under this name (`env.valueFrom.secretKeyRef`),
    and the server reads it back, so secret values never pass through a ConfigMap.
    """

    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9]", "_", text).upper()

    return f"STATESTORE_SECRET_{clean(secret_name)}__{clean(key)}"


def parse(doc: Mapping[str, Any], source: str = "") -> Component:
    """A Component from a decoded manifest; ComponentError names what is wrong."""
    meta = doc.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        raise ComponentError("metadata.name is required", source=source, field="metadata.name")
    if name in (".", "..") or "/" in name or "%" in name:
        raise ComponentError(
            "metadata.name must be a valid path segment (no '/', '%', '.' or '..')",
            source=source,
            component=name,
            field="metadata.name",
        )
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise ComponentError("spec is required", source=source, component=name, field="spec")
    ctype = spec.get("type")
    if not isinstance(ctype, str) or not ctype:
        raise ComponentError("spec.type is required", source=source, component=name, field="spec.type")
    version = spec.get("version") or ""
    if not isinstance(version, str):
        raise ComponentError(
            "spec.version must be a string", source=source, component=name, field="spec.version"
        )
    items: list[MetadataItem] = []
    raw_items = spec.get("metadata") or []
    if not isinstance(raw_items, list):
        raise ComponentError(
            "spec.metadata must be a list", source=source, component=name, field="spec.metadata"
        )
    for index, raw in enumerate(raw_items):
        where = f"spec.metadata[{index}]"
        if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise ComponentError(f"{where}.name is required", source=source, component=name, field=where)
        item_name: str = raw["name"]
        secret = None
        ref = raw.get("secretKeyRef")
        if ref:
            if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str) or not ref["name"]:
                raise ComponentError(
                    f"{where}.secretKeyRef.name is required", source=source, component=name, field=item_name
                )
            secret = SecretRef(ref["name"], str(ref.get("key") or ref["name"]))
        env = raw.get("envRef")
        if env is not None and not isinstance(env, str):
            raise ComponentError(
                f"{where}.envRef must be a string", source=source, component=name, field=item_name
            )
        value = raw.get("value")
        items.append(
            MetadataItem(item_name, None if value is None else stringify(value), secret, env or None)
        )
    try:
        check_duplicates(i.name for i in items)
    except MetadataError as exc:
        raise ComponentError(str(exc), source=source, component=name, field=exc.field) from None
    init_timeout = DEFAULT_INIT_TIMEOUT
    if spec.get("initTimeout") not in (None, ""):
        try:
            init_timeout = parse_duration(str(spec["initTimeout"]))
        except ValueError as exc:
            raise ComponentError(
                f"spec.initTimeout: {exc}", source=source, component=name, field="spec.initTimeout"
            ) from None
        if init_timeout <= 0:
            raise ComponentError(
                "spec.initTimeout must be positive", source=source, component=name, field="spec.initTimeout"
            )
    scopes = doc.get("scopes") or []
    auth = doc.get("auth") or {}
    namespace = meta.get("namespace")
    annotations = meta.get("annotations")
    container = annotations.get(COMPONENT_CONTAINER_ANNOTATION) if isinstance(annotations, Mapping) else None
    return Component(
        name=name,
        type=ctype,
        version=version,
        namespace=namespace if isinstance(namespace, str) else None,
        metadata=tuple(items),
        scopes=tuple(str(s) for s in scopes) if isinstance(scopes, list) else (),
        ignore_errors=bool(spec.get("ignoreErrors", False)),
        secret_store=auth.get("secretStore") if isinstance(auth, Mapping) else None,
        source=source,
        init_timeout=init_timeout,
        pluggable=isinstance(container, str) and bool(container.strip()),
    )


@dataclass(frozen=True, slots=True)
class Validated:
    """A state store Component that passed validation."""

    component: Component
    schema: StoreSchema
    metadata: Resolved
    warnings: tuple[str, ...] = field(default=())


def store_schema(component: Component) -> StoreSchema:
    """The schema for a Component's type and version, or ComponentError on `spec.type`/`spec.version`."""
    try:
        schema = schema_for(component.type, component.version, pluggable=component.pluggable)
    except UnknownStoreType as exc:
        raise component.error(str(exc), "spec.type") from None
    if component.version not in _INITIAL_VERSIONS and component.version not in schema.versions:
        supported = ", ".join(schema.versions)
        raise component.error(
            f"version {component.version!r} of "
            f"{canonical_type(component.type, pluggable=component.pluggable)} is not supported "
            f"(supported: {supported})",
            "spec.version",
        )
    return schema


def validate(component: Component, values: Mapping[str, str], *, opaque: Collection[str] = ()) -> Validated:
    """Check a state store Component whose metadata values (secrets included) are known.

    Runs every check the store would make of its settings (each store's parsers are part of its
    schema), so a Component that passes connects or is unavailable, never misconfigured. Raises
    ComponentError naming the field; unknown metadata names come back as warnings (with the close
    match when one looks misspelt).
    `opaque` names items whose values cannot be known by the caller (the operator does not read
    secret values): they count as given for `required`, their type is not checked, and defaults
    stand in for them in the result.
    """
    schema = store_schema(component)
    try:
        encryption.check_refs({i.name: i.secret.name if i.secret else None for i in component.metadata})
    except encryption.KeyRuleError as exc:
        raise component.error(str(exc), exc.item) from None
    hidden: frozenset[str] = frozenset()
    if opaque:
        schema, values, hidden = _without_opaque(schema, values, opaque)
    try:
        resolved = resolve(schema, values, opaque=hidden)
    except MetadataError as exc:
        raise component.error(str(exc), exc.field) from None
    try:
        keys.prefix_for(str(resolved["keyPrefix"]), app_id="", store_name=component.name, namespace=None)
    except keys.InvalidKeyPrefix as exc:
        raise component.error(f"metadata 'keyPrefix': {exc}", "keyPrefix") from None
    if resolved["actorStateStore"] and not schema.transactional_with_etags:
        raise component.error(
            f"metadata 'actorStateStore': needs a store with transactions and ETags; {schema.type} has neither",
            "actorStateStore",
        )
    warnings = tuple(unknown_warning(schema, name) for name in resolved.unknown)
    return Validated(component, schema, resolved, warnings)


def encryption_keys(validated: Validated) -> encryption.Keys | None:
    """The keys of a validated store with state encryption, else None."""
    secret_names = {i.name: i.secret.name for i in validated.component.metadata if i.secret is not None}
    return encryption.keys_of(secret_names, dict(validated.metadata.values))


def _without_opaque(
    schema: StoreSchema, values: Mapping[str, str], opaque: Collection[str]
) -> tuple[StoreSchema, dict[str, str], frozenset[str]]:
    """The schema with opaque fields optional, the values without the opaque known fields, and the
    canonical names of those fields.

    Opaque names that are no setting at all stay in (with an empty value) so they are still reported
    as unknown.
    """
    hidden = {name.lower() for name in opaque}
    canonical = frozenset(
        f.name for f in (*COMMON_FIELDS, *schema.fields) if {n.lower() for n in (f.name, *f.aliases)} & hidden
    )
    known = {n.lower() for f in (*COMMON_FIELDS, *schema.fields) for n in (f.name, *f.aliases)}
    fields = tuple(
        dataclasses.replace(f, required=False) if {n.lower() for n in (f.name, *f.aliases)} & hidden else f
        for f in schema.fields
    )
    kept = {
        name: ("" if name.lower() in hidden else text)
        for name, text in values.items()
        if name.lower() not in hidden or name.lower() not in known
    }
    return dataclasses.replace(schema, fields=fields), kept, canonical


def metadata_values(component: Component, environ: Mapping[str, str]) -> dict[str, str]:
    """Metadata as strings: plain values, `envRef` variables, and secrets from the environment.

    The order is daprd's on Kubernetes: a secretKeyRef's value replaces a literal `value` (a missing key
    keeps the literal), and `envRef` is read only when there is no value at all.
    """
    values: dict[str, str] = {}
    for item in component.metadata:
        var = None if item.secret is None else secret_env_var(item.secret.name, item.secret.key)
        if var is not None and var in environ:
            values[item.name] = environ[var]
        elif item.value not in (None, ""):
            values[item.name] = item.value or ""
        elif item.secret is not None and var is not None and item.env is None:
            if var not in environ:
                raise component.error(
                    f"metadata {item.name!r}: secret {item.secret.name!r} key {item.secret.key!r} "
                    f"is not available (expected in environment variable {var})",
                    item.name,
                )
            values[item.name] = environ[var]
        elif item.env is not None:  # no value, and no secret value either
            if _REFUSED_ENV.search(item.env):
                raise component.error(
                    f"metadata {item.name!r}: envRef {item.env!r} is not allowed", item.name
                )
            values[item.name] = environ.get(item.env, "")
        else:
            values[item.name] = ""
    return values


def _documents(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ComponentError(f"cannot read file: {exc}", source=str(path)) from None
    try:
        for doc in yaml.safe_load_all(text):
            yield str(path), doc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ComponentError(f"invalid YAML{where}: {problem}", source=str(path)) from None


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        elif path.is_file():
            yield path
        else:
            raise ComponentError("no such file or folder", source=str(path))


@dataclass(frozen=True, slots=True)
class Loaded:
    stores: list[Component]
    skipped: list[tuple[str, str]]  # (description, why)


def load(paths: Iterable[Path], *, app_id: str = "", namespace: str | None = None) -> Loaded:
    """Every state store Component in the files and folders given, as daprd selects them.

    Other kinds and types are skipped (with the reason), as are Components scoped to other apps or,
    when `namespace` is set, Components of another namespace. Duplicate names are an error.
    """
    stores: list[Component] = []
    skipped: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for path in _files(paths):
        for source, doc in _documents(path):
            if doc is None:
                continue
            if not isinstance(doc, Mapping):
                raise ComponentError("a YAML document is not a mapping", source=source)
            if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
                skipped.append((f"{source}: {doc.get('kind')} {doc.get('apiVersion')}", "not a Component"))
                continue
            component = parse(doc, source)
            label = f"{source}: component {component.name!r} ({component.type})"
            if not component.is_state_store:
                skipped.append((label, "not a state store"))
                continue
            if component.scopes and app_id and app_id not in component.scopes:
                skipped.append((label, f"scoped to {', '.join(component.scopes)}"))
                continue
            if namespace and component.namespace and component.namespace != namespace:
                skipped.append((label, f"in namespace {component.namespace}"))
                continue
            if component.name in seen:
                raise component.error(
                    f"a state store named {component.name!r} is already defined in {seen[component.name]}",
                    "metadata.name",
                )
            seen[component.name] = source
            stores.append(component)
    return Loaded(stores, skipped)


def single_actor_store(stores: Iterable[Validated]) -> None:
    """Refuse a second `actorStateStore`, with daprd's message."""
    first: Validated | None = None
    for item in stores:
        if not item.metadata["actorStateStore"]:
            continue
        if first is not None:
            raise item.component.error(
                f"detected duplicate actor state store: {first.component.name} and {item.component.name}",
                "actorStateStore",
            )
        first = item
