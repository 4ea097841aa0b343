"""Every bad setting of every store type is refused the same way by the server and the operator.

The walk covers each schema field of each store type with values its rules refuse (wrong types,
out-of-range numbers, refused choices and names, and what the store's own parsers refuse: host
lists, DSNs, connection strings, pragmas), plus the rules across fields. For each, `statestore-sidecar`
exits 1 with one line naming the component and field (no traceback), `components.validate` raises
the same message, and the operator's check reports `InvalidMetadata` on the same field.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from fixtures.sidecar import run_cli
from statestore_operator.validation import INVALID_METADATA, VALID_WITH_WARNINGS, check
from statestore_sidecar import components, encryption
from statestore_sidecar.schema import COMMON_FIELDS, Field, Kind
from statestore_sidecar.stores import StoreConfig, create_store, known_types, schema_for
from statestore_testing.ports import free_port

# Metadata every type accepts; each case changes one field of it.
GOOD: dict[str, dict[str, str]] = {
    "state.in-memory": {},
    "state.sqlite": {"connectionString": ":memory:"},
    "state.redis": {"redisHost": "localhost:6379"},
    "state.postgresql": {"connectionString": "host=localhost user=u password=p dbname=d"},
    "state.mysql": {"connectionString": "u:p@tcp(localhost:3306)/"},
}
# Values the stores' own parsers refuse (every field with a parser must be listed).
PARSED: dict[tuple[str, str], list[str]] = {
    ("state.redis", "redisHost"): ["localhost:notaport", "redis://localhost:6379", "a:6379,b:6379", ":6379"],
    ("state.sqlite", "connectionString"): [
        "file:x.db?_pragma=bad",
        "x.db?_pragma=journal_mode(WAL)",
        "file:x.db?_txlock=sometimes",
    ],
    ("state.postgresql", "connectionString"): [
        "host=localhost nosuchoption=1",
        "host=localhost port=notaport",
        "host=localhost sslmode=sometimes",
        "host=localhost sslkey=k.pem",
        "host='unterminated",
        "mysql://localhost/d",
        "postgres://localhost:5432/d#fragment",
    ],
    ("state.mysql", "connectionString"): [
        "not a dsn",
        "u:p@tcp(localhost:notaport)/",
        "u:p@tcp(localhost:3306)/somedb",
        "u:p@tcp(localhost:3306)/?tls=maybe",
        "u:p@tcp(localhost:3306)/?readTimeout=soon",
        "u:p@tcp(localhost:3306)/?nosuchparam=1",
        "u:p@udp(localhost:3306)/",
    ],
    ("state.mysql", "pemContents"): [
        "not a certificate",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
    ],
}
# Rules across fields: (type, metadata on top of GOOD, the field named).
ACROSS: list[tuple[str, dict[str, str], str]] = [
    ("state.redis", {"clientCert": "cert", "clientKey": "key"}, "clientCert"),
    ("state.redis", {"enableTLS": "true", "clientCert": "cert"}, "clientCert"),
    ("state.redis", {"queryIndexes": '{"name": "x"}'}, "queryIndexes"),
    ("state.mysql", {"connectionString": "u:p@tcp(localhost:3306)/?tls=custom"}, "connectionString"),
    ("state.sqlite", {"tableName": "t", "metadataTableName": "t"}, "metadataTableName"),
    ("state.redis", {"failover": "true"}, "sentinelMasterName"),
    ("state.redis", {"sentinelMasterName": "mymaster"}, "sentinelMasterName"),
    ("state.redis", {"sentinelUsername": "u"}, "sentinelUsername"),
    ("state.redis", {"sentinelPassword": "p"}, "sentinelPassword"),
]


def bad_values(ctype: str, f: Field) -> list[str]:
    values = list(PARSED.get((ctype, f.name), []))
    if f.check is not None:
        assert values, f"{ctype} {f.name} has a parser: list values it refuses in PARSED"
    values += {Kind.INT: ["many"], Kind.DURATION: ["soon"], Kind.BOOL: ["maybe"], Kind.JSON: ["{"]}.get(
        f.kind, []
    )
    if f.choices:
        values.append("none-of-these")
    if f.pattern:
        values.append("not a name!")
    if f.minimum is not None:
        values.append(str(int(f.minimum) - 1))
    if f.name == "keyPrefix":
        values.append("a||b")
    return values


# Free text a store passes on as it is (a password, a file path the pod mounts): nothing to refuse
# alone (clientCert and clientKey take part in the rules across fields).
FREE_TEXT = {
    ("state.mysql", "pemPath"),
    ("state.redis", "clientCert"),
    ("state.redis", "clientKey"),
    ("state.redis", "redisPassword"),
    ("state.redis", "redisUsername"),
    # Redis Sentinel's settings (in the rules across fields: they need failover: true).
    ("state.redis", "sentinelMasterName"),
    ("state.redis", "sentinelUsername"),
    ("state.redis", "sentinelPassword"),
}


# The encryption keys are secretKeyRefs only: tests/cli/test_encryption_refusals.py walks them.
WALKED_ELSEWHERE = frozenset(encryption.NAMES)


def walked_fields(ctype: str) -> list[Field]:
    return [f for f in (*COMMON_FIELDS, *schema_for(ctype).fields) if f.name not in WALKED_ELSEWHERE]


def test_the_walk_covers_every_field_with_rules() -> None:
    unwalked = {
        (ctype, f.name) for ctype in known_types() for f in walked_fields(ctype) if not bad_values(ctype, f)
    }
    assert unwalked == FREE_TEXT


def cases() -> list[tuple[str, dict[str, str], str]]:
    out = []
    for ctype in known_types():
        for f in walked_fields(ctype):
            out += [(ctype, {**GOOD[ctype], f.name: value}, f.name) for value in bad_values(ctype, f)]
    return out + [(ctype, {**GOOD[ctype], **extra}, field) for ctype, extra, field in ACROSS]


def manifest(ctype: str, metadata: dict[str, str]) -> dict[str, object]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "store"},
        "spec": {
            "type": ctype,
            "version": "v1",
            "metadata": [{"name": k, "value": v} for k, v in metadata.items()],
        },
    }


def validation_error(path: Path) -> components.ComponentError:
    (component,) = components.load([path]).stores
    with pytest.raises(components.ComponentError) as info:
        components.validate(component, components.metadata_values(component, os.environ))
    return info.value


@pytest.mark.parametrize(
    ("ctype", "metadata", "field"),
    cases(),
    ids=[f"{c}-{f}={m.get(f, '')}" for c, m, f in cases()],
)
def test_server_and_operator_refuse_the_same_values(
    tmp_path: Path, ctype: str, metadata: dict[str, str], field: str
) -> None:
    doc = manifest(ctype, metadata)
    path = tmp_path / "store.yaml"
    path.write_text(yaml.safe_dump(doc))

    error = validation_error(path)
    assert error.field == field
    assert error.component == "store"

    done = run_cli(
        ["--resources-path", str(path), "--dapr-http-port", str(free_port()), "--metrics-port", "0"]
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [f"statestore-sidecar: error: {error}"]
    assert "component 'store'" in done.stderr and repr(field) in done.stderr

    outcome = check(doc, None)
    assert (outcome.ok, outcome.reason, outcome.field) == (False, INVALID_METADATA, field)
    assert outcome.message in str(error)


@pytest.mark.parametrize("ctype", known_types())
def test_what_validation_accepts_the_store_is_built_from(ctype: str) -> None:
    """The stores parse their settings with the schema's own parsers: no refusal left for later."""
    component = components.parse(manifest(ctype, GOOD[ctype]))
    validated = components.validate(component, GOOD[ctype])
    store = create_store(ctype, StoreConfig("store", validated.metadata))
    assert store.features == schema_for(ctype).features


def test_a_misspelt_required_name_is_named_with_its_close_match(tmp_path: Path) -> None:
    doc = manifest("state.postgresql", {"conectionString": GOOD["state.postgresql"]["connectionString"]})
    path = tmp_path / "store.yaml"
    path.write_text(yaml.safe_dump(doc))
    error = validation_error(path)
    assert error.field == "connectionString"
    assert "'conectionString' is not a setting of state.postgresql: did you mean 'connectionString'?" in str(
        error
    )
    done = run_cli(["--resources-path", str(path), "--metrics-port", "0"])
    assert (done.returncode, done.stderr.splitlines()) == (1, [f"statestore-sidecar: error: {error}"])
    outcome = check(doc, None)
    assert (outcome.ok, outcome.reason, outcome.field) == (False, INVALID_METADATA, "connectionString")
    assert "did you mean 'connectionString'?" in outcome.message


def test_a_misspelt_optional_name_is_ignored_with_a_suggestion() -> None:
    """As in Dapr, an unknown name is ignored; the warning names it and its close match."""
    doc = manifest("state.sqlite", {**GOOD["state.sqlite"], "tabelName": "orders"})
    validated = components.validate(components.parse(doc), {**GOOD["state.sqlite"], "tabelName": "orders"})
    assert validated.metadata["tableName"] == "state"
    assert validated.warnings == (
        "metadata 'tabelName' is not a setting of state.sqlite and is ignored: did you mean 'tableName'?",
    )
    outcome = check(doc, None)
    assert (outcome.ok, outcome.reason, outcome.warnings) == (True, VALID_WITH_WARNINGS, validated.warnings)
    unrelated = components.validate(components.parse(doc), {**GOOD["state.sqlite"], "colour": "blue"})
    assert unrelated.warnings == ("metadata 'colour' is not a setting of state.sqlite and is ignored",)


@pytest.mark.parametrize(
    ("ctype", "plain", "secret"),
    [
        ("state.redis", {"redisHost": "h:6379", "enableTLS": "true"}, ["clientCert", "clientKey"]),
        ("state.sqlite", {"connectionString": ":memory:", "metadataTableName": "state"}, ["tableName"]),
        ("state.mysql", {}, ["connectionString"]),
        ("state.postgresql", {}, ["connectionString"]),
    ],
)
def test_values_the_operator_cannot_see_pass_the_rules_across_fields(
    ctype: str, plain: dict[str, str], secret: list[str]
) -> None:
    """Secret values are never read by the operator: the server checks them when it starts."""
    doc = manifest(ctype, plain)
    doc["spec"]["metadata"] += [{"name": n, "secretKeyRef": {"name": "s", "key": n}} for n in secret]  # type: ignore[index]
    outcome = check(doc, None)
    assert (outcome.ok, outcome.warnings) == (True, ()), outcome.message
