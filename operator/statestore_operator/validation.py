"""Validation of a state store Component with the server's own schema (one definition of the rules).

Pure functions: the caller looks the referenced Secrets up and passes what it found, so the same
code serves the reconciler (Secrets known) and the admission webhook (Secrets not checked).
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

from statestore_sidecar.validation import (
    ENCRYPTION_KEYS,
    Component,
    ComponentError,
    Persistence,
    SecretRef,
    UnknownStoreType,
    Validated,
    parse,
    schema_for,
    validate,
)

from . import access, pluggable, scaling

# Reasons of the Validated condition (CamelCase, as metav1.Condition wants).
VALID = "Valid"
VALID_WITH_WARNINGS = "UnknownMetadata"
VALID_PLUGGABLE = "PluggableComponent"
INVALID_SPEC = "InvalidSpec"
INVALID_METADATA = "InvalidMetadata"
UNSUPPORTED_TYPE = "UnsupportedStoreType"
UNSUPPORTED_VERSION = "UnsupportedVersion"
UNSUPPORTED_SECRET_STORE = "UnsupportedSecretStore"
SECRET_NOT_FOUND = "SecretNotFound"
SECRET_KEY_NOT_FOUND = "SecretKeyNotFound"
INVALID_ANNOTATION = "InvalidAnnotation"

# The secret store a Component names when its secretKeyRefs are Kubernetes Secrets.
KUBERNETES_SECRET_STORE = "kubernetes"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The verdict on one Component: `ok`, or a reason and a message naming the field."""

    ok: bool
    reason: str
    message: str
    field: str = ""
    warnings: tuple[str, ...] = ()
    component: Component | None = None
    validated: Validated | None = None
    token: access.TokenSource | None = None


def is_state_store(body: Mapping[str, Any]) -> bool:
    spec = body.get("spec")
    ctype = spec.get("type") if isinstance(spec, Mapping) else None
    return isinstance(ctype, str) and ctype.lower().startswith("state.")


def secret_refs(component: Component) -> list[SecretRef]:
    return [item.secret for item in component.metadata if item.secret is not None]


def keys_to_read(component: Component) -> dict[str, SecretRef]:
    """The secretKeyRef items whose values validation checks: daprd's state encryption keys."""
    return {
        item.name: item.secret
        for item in component.metadata
        if item.secret is not None and item.name in ENCRYPTION_KEYS
    }


def _failure(exc: ComponentError) -> Outcome:
    where, why = exc.field, exc.reason
    message = why if why.startswith(where) else f"{where}: {why}"
    if where == "spec.type" and "required" not in why:
        return Outcome(False, UNSUPPORTED_TYPE, message, where)
    if where == "spec.version" and "must be" not in why:
        return Outcome(False, UNSUPPORTED_VERSION, message, where)
    if where.startswith("spec.metadata"):
        return Outcome(False, INVALID_METADATA, why, where)
    if where and not where.startswith(("spec", "metadata.")):
        # The field is a metadata item name; resolve()'s messages already read "metadata 'x': ...".
        message = why if why.startswith("metadata ") else f"metadata {where!r}: {why}"
        return Outcome(False, INVALID_METADATA, message, where)
    return Outcome(False, INVALID_SPEC, message if where else why, where)


def check(
    body: Mapping[str, Any],
    secrets: Mapping[str, Set[str] | None] | None,
    read: Mapping[str, str] | None = None,
) -> Outcome:
    """Validate a Component object as the API server holds it.

    `secrets` maps each referenced Secret name to its data keys, or to None when it does not exist;
    pass None to skip the Secret checks (admission time, where the Secret may come later).
    Secret- and env-backed values are not read: they satisfy `required` but are not type-checked,
    except those in `read` (metadata item name -> the value its Secret holds), which are checked
    like plain values (the encryption keys, whose length must be right; see `keys_to_read`).
    """
    try:
        component = parse(body)
    except ComponentError as exc:
        return _failure(exc)
    served_by = ""
    if component.pluggable:
        try:
            served_by = _component_container(body, component)
        except pluggable.ContainerError as exc:
            return Outcome(False, INVALID_ANNOTATION, str(exc), pluggable.ANNOTATION, component=component)
    # Secret-backed values replace literal ones (as in daprd), so neither they nor envRefs are judged,
    # except the values in `read`.
    read = read or {}
    opaque = [
        item.name
        for item in component.metadata
        if (item.value in (None, "") or item.secret is not None) and item.name not in read
    ]
    values = {item.name: read.get(item.name, item.value or "") for item in component.metadata}
    try:
        validated = validate(component, values, opaque=opaque)
    except ComponentError as exc:
        failed = _failure(exc)
        return Outcome(False, failed.reason, failed.message, failed.field, component=component)
    refs = secret_refs(component)
    if refs and (component.secret_store or KUBERNETES_SECRET_STORE) != KUBERNETES_SECRET_STORE:
        return Outcome(
            False,
            UNSUPPORTED_SECRET_STORE,
            f"auth.secretStore: {component.secret_store!r} is not supported; secretKeyRef values are "
            "read from Kubernetes Secrets (leave auth.secretStore unset or set it to 'kubernetes')",
            "auth.secretStore",
            component=component,
        )
    try:
        token = access.token_source(body)
        access.scopes(body)
    except access.AccessError as exc:
        return Outcome(False, INVALID_SPEC, str(exc), exc.field, component=component)
    try:
        plan = scaling.plan(body, component)
    except scaling.ScalingError as exc:
        return Outcome(False, INVALID_ANNOTATION, str(exc), exc.field, component=component)
    if secrets is not None:
        if token is not None and not token.generated:
            found = secrets.get(token.secret)
            where = f"annotation {access.API_TOKEN_SECRET_ANNOTATION!r}"
            if found is None:
                namespace = f" in namespace {component.namespace}" if component.namespace else ""
                return Outcome(
                    False,
                    SECRET_NOT_FOUND,
                    f"{where}: Secret {token.secret!r} not found{namespace}",
                    access.API_TOKEN_SECRET_ANNOTATION,
                    component=component,
                )
            if token.key not in found:
                return Outcome(
                    False,
                    SECRET_KEY_NOT_FOUND,
                    f"{where}: Secret {token.secret!r} has no key {token.key!r}",
                    access.API_TOKEN_SECRET_ANNOTATION,
                    component=component,
                )
        for item in component.metadata:
            ref = item.secret
            if ref is None:
                continue
            found = secrets.get(ref.name)
            if found is None:
                namespace = f" in namespace {component.namespace}" if component.namespace else ""
                return Outcome(
                    False,
                    SECRET_NOT_FOUND,
                    f"metadata {item.name!r}: Secret {ref.name!r} not found{namespace}",
                    item.name,
                    component=component,
                )
            if ref.key not in found and item.value in (None, "") and item.env is None:
                # With a literal value (or an envRef) to fall back on, a missing key is not an error.
                return Outcome(
                    False,
                    SECRET_KEY_NOT_FOUND,
                    f"metadata {item.name!r}: Secret {ref.name!r} has no key {ref.key!r}",
                    item.name,
                    component=component,
                )
    # An in-memory store is valid, but whoever reads the condition learns what that costs.
    note = [scaling.MEMORY_NOTE] if plan.persistence is Persistence.MEMORY else []
    warnings = validated.warnings
    if warnings:
        message = "; ".join([*warnings, *note])
        return Outcome(True, VALID_WITH_WARNINGS, message, "", warnings, component, validated, token)
    if served_by:
        message = "; ".join([f"the Component is valid: {served_by}", *note])
        return Outcome(True, VALID_PLUGGABLE, message, "", (), component, validated, token)
    message = "; ".join(["the Component is valid", *note])
    return Outcome(True, VALID, message, "", (), component, validated, token)


def _component_container(body: Mapping[str, Any], component: Component) -> str:
    """What the condition says of a pluggable Component, or ContainerError."""
    container = pluggable.container_of(body)
    try:
        builtin = not schema_for(component.type, pluggable=True).passthrough
    except UnknownStoreType:
        builtin = False  # not a state store type at all: validate() says so
    if builtin:
        raise pluggable.ContainerError(
            f"{component.type} is a built-in store type, served by the state API itself; a component "
            "container serves only a type of its own (state.<socket name>)"
        )
    return (
        f"{component.type} is a pluggable component served by container {container['name']!r} "
        f"(image {container['image']!r}); its metadata is passed to it as given (only keyPrefix, "
        "actorStateStore and the encryption keys are checked here)"
    )
