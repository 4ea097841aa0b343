"""Hostile Component metadata: refused by `components.validate` (which the server and the operator
both run), and SQL identifiers that are never pasted into SQL unvalidated or unquoted."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from hostile import Api

from fixtures.stores import BACKENDS, SERVER_BACKENDS, ComponentUnderTest
from statestore_sidecar import components, stores
from statestore_sidecar.components import Component, ComponentError, MetadataItem, validate
from statestore_sidecar.schema import Kind, MetadataError, StoreSchema, stringify
from statestore_sidecar.stores import known_types, schema_for
from statestore_sidecar.stores.base import StoreError
from statestore_sidecar.stores.mysql import metadata as mysql_store
from statestore_sidecar.stores.postgresql import metadata as postgresql_store
from statestore_sidecar.stores.sqlite import metadata as sqlite_store

STORES = Path(stores.__file__).parent

REQUIRED = {
    "state.sqlite": {"connectionString": ":memory:"},
    "state.postgresql": {"connectionString": "host=localhost user=u password=p dbname=d"},
    "state.mysql": {"connectionString": "u:p@tcp(localhost:3306)/"},
    "state.redis": {"redisHost": "localhost:6379"},
    "state.in-memory": {},
}
IDENTIFIER_FIELDS = [
    ("state.sqlite", "tableName"),
    ("state.sqlite", "metadataTableName"),
    ("state.postgresql", "tableName"),
    ("state.postgresql", "metadataTableName"),
    ("state.mysql", "schemaName"),
    ("state.mysql", "tableName"),
    ("state.mysql", "metadataTableName"),
]
HOSTILE_NAMES = [
    "state; DROP TABLE x",
    "state;--",
    "x' OR '1'='1",
    'st"ate',
    'state"; DROP TABLE x; --',
    "st`ate",
    "state`; DROP TABLE x; -- ",
    "st[ate]",
    "st\u0430te",  # Cyrillic a
    "\uff53tate",  # fullwidth s
    "state\u200b",  # zero-width space
    "ştate",
    "١٢٣",  # Arabic-Indic digits (match \d, not [0-9])
    "state\n",
    "state\x00",
    "state\x00; DROP TABLE x",
    " state",
    "state ",
    "",
    "a" * 200,
    "a/b",
    "a-b",
    "$1",
    "?",
    "%s",
    "{0}",
    "a.b.c",
    ".state",
    "state.",
    "a..b",
]


VALUE_LENGTH_LIMIT = 64 * 1024  # docs/security.md: values longer than 64 KiB are refused


def check_refused(ctype: str, name: str, value: str) -> ComponentError:
    metadata = {**REQUIRED[ctype], name: value}
    with pytest.raises(ComponentError) as info:
        validate(Component(name="s", type=ctype), metadata)
    assert info.value.field.lower() == name.lower(), str(info.value)
    assert len(str(info.value)) < 1000  # never the whole hostile value
    return info.value


@pytest.mark.parametrize(("ctype", "name"), IDENTIFIER_FIELDS)
@pytest.mark.parametrize("value", HOSTILE_NAMES, ids=[repr(v)[:30] for v in HOSTILE_NAMES])
def test_injection_in_table_and_schema_names_is_refused(ctype: str, name: str, value: str) -> None:
    check_refused(ctype, name, value)


def test_sqlite_reserved_internal_names_are_refused() -> None:
    for value in ("sqlite_master", "SQLITE_x", "sqlite_sequence"):
        check_refused("state.sqlite", "tableName", value)


@pytest.mark.parametrize(
    ("quote", "valid"),
    [
        (sqlite_store.quote_ident, "state"),
        (postgresql_store.quote_table, "public.state"),
        (lambda n: mysql_store.quote_ident(n, "tableName"), "state"),
    ],
    ids=["sqlite", "postgresql", "mysql"],
)
def test_store_quoting_refuses_hostile_names_even_past_validation(quote: Any, valid: str) -> None:
    """Defence in depth: the functions that build identifiers validate again before quoting."""
    assert quote(valid)[0] in '"`'
    for value in HOSTILE_NAMES:
        try:
            quoted = quote(value)
        except (StoreError, MetadataError):
            continue
        raise AssertionError(f"{value!r} was quoted as {quoted!r} instead of refused")


def test_valid_names_are_quoted() -> None:
    assert sqlite_store.quote_ident("select") == '"select"'
    assert postgresql_store.quote_table("Public.Order") == '"public"."order"'
    assert mysql_store.quote_ident("where", "tableName") == "`where`"


# --- SQL building, read from the source ---------------------------------------------------

_SQL = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|FROM|INTO|TABLE|WHERE|INDEX|DATABASE|ORDER BY|LIMIT|"
    r"OFFSET|SET|ON CONFLICT|DUPLICATE)\b"
)
# Per module: the expressions SQL text may interpolate, each reviewed. Identifier holders (first
# group) must be assigned only from the module's quoting function (checked below); the rest are
# constants, placeholders from a parameter binder, integers, or SQL built by those same rules.
REVIEWED: dict[str, tuple[set[str], set[str], str]] = {
    "sqlite/store.py": (
        {"t", "m", "state", "meta"},
        {"quote_ident(table)", "columns", "live"},
        "quote_ident",
    ),
    "sqlite/dialect.py": (
        set(),
        {
            "quote_ident(table)",
            "' AND '.join(conditions)",
            "t.bind(query.limit if query.limit > 0 else -1)",
            "t.bind(query.offset)",
            "t.order_by(query.sort)",
        },
        "quote_ident",
    ),
    "postgresql/store.py": (
        {"t", "m", "table", "self.table", "self.metadata_table", "index"},
        {"_EXPIRY", "LIVE", "columns", "values", "update", "read", "self.expiry_column"},
        "quote_table",
    ),
    "postgresql/v2.py": (
        {"t", "self.table"},
        {"_EXPIRY", "LIVE", "insert", "read", "update", "values"},
        "quote_table",
    ),
    "postgresql/migrations.py": ({"table", "m", "metadata_table", "index"}, set(), "quote_table"),
    "postgresql/dialect.py": (
        {"table"},
        {"' AND '.join(where)", "int(query.limit)", "int(query.offset)", "t.order_by(query.sort)"},
        "quote_table",
    ),
    "mysql/store.py": (
        {"t", "table", "schema", "self.table", "self.metadata_table", "self._schema"},
        {"LIVE", "EXPIRY", "first", "insert", "read"},
        "quote_ident",
    ),
    "mysql/migrations.py": (
        {"table", "metadata_table", "new", "old", "quoted_schema"},
        {"key_collation"},
        "quote_ident",
    ),
    "mysql/dialect.py": (
        {"table"},
        {
            "conditions",
            "int(query.limit) if query.limit else 18446744073709551615",
            "int(query.offset)",
            "t.order_by(query.sort)",
        },
        "quote_ident",
    ),
}
# Raw configured names may appear in SQL text only between quote characters (after validation).
RAW_NAMES = {"self._table_name", "self.table_name", "self.schema_name"}


def sql_interpolations(tree: ast.AST) -> list[tuple[str, str, str, int]]:
    """(expression, text before, text after, line) of every {...} in f-strings that look like SQL."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.JoinedStr):
            continue
        literal = "".join(str(v.value) for v in node.values if isinstance(v, ast.Constant))
        if not _SQL.search(literal):
            continue
        for i, part in enumerate(node.values):
            if isinstance(part, ast.FormattedValue):
                before = node.values[i - 1] if i > 0 else None
                after = node.values[i + 1] if i + 1 < len(node.values) else None
                found.append(
                    (
                        ast.unparse(part.value),
                        str(before.value) if isinstance(before, ast.Constant) else "",
                        str(after.value) if isinstance(after, ast.Constant) else "",
                        node.lineno,
                    )
                )
    return found


@pytest.mark.parametrize("module", sorted(REVIEWED))
def test_sql_text_interpolates_only_reviewed_expressions(module: str) -> None:
    path = STORES / module
    holders, others, _ = REVIEWED[module]
    tree = ast.parse(path.read_text())
    for expr, before, after, line in sql_interpolations(tree):
        if expr in RAW_NAMES:
            quote = before[-1:] if before else ""
            assert (quote in ('"', "`") and after.startswith(quote)) or (
                before.endswith('"idx_') and after.startswith("_")
            ), f"{path.name}:{line}: raw name {expr} reaches SQL unquoted"
            continue
        assert expr in holders | others, (
            f"{path.name}:{line}: SQL interpolates {expr!r}, which nobody reviewed; if it can carry a "
            "configured name, quote it; then add it to REVIEWED in this test"
        )


@pytest.mark.parametrize("module", sorted(REVIEWED))
def test_identifier_holders_are_assigned_only_quoted_names(module: str) -> None:
    path = STORES / module
    holders, _, quote = REVIEWED[module]
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        for target in targets:
            names = [ast.unparse(t) for t in (target.elts if isinstance(target, ast.Tuple) else [target])]
            if not holders.intersection(names):
                continue
            value = ast.unparse(node.value)  # type: ignore[arg-type]
            # Either quoted here, or a copy of another holder (t = self.table), or a quoted literal.
            ok = (
                f"{quote}(" in value
                or value in holders
                or bool(re.fullmatch(r"'\"' \+ .* \+ '\"'", value))
                or (
                    isinstance(target, ast.Tuple)
                    and isinstance(node.value, ast.Tuple)
                    and all(
                        f"{quote}(" in ast.unparse(v) or ast.unparse(v) in holders for v in node.value.elts
                    )
                )
            )
            assert ok, f"{path.name}:{node.lineno}: {names} = {value} is not a quoted identifier"


# --- huge values, wrong types ---------------------------------------------------------------


def all_fields() -> list[tuple[str, str]]:
    out = []
    for ctype in known_types():
        schema: StoreSchema = schema_for(ctype)
        out += [(ctype, f.name) for f in schema.fields]
        out += [(ctype, "keyPrefix"), (ctype, "actorStateStore")]
    return out


@pytest.mark.parametrize(("ctype", "name"), all_fields())
def test_huge_values_are_refused_with_a_short_message(ctype: str, name: str) -> None:
    error = check_refused(ctype, name, "9" * (VALUE_LENGTH_LIMIT + 1))
    assert "is 65537 characters long; at most 65536 are allowed" in str(error)


def test_a_value_of_exactly_the_documented_length_is_accepted() -> None:
    password = "p" * VALUE_LENGTH_LIMIT
    validated = validate(
        Component(name="s", type="state.redis"), {**REQUIRED["state.redis"], "redisPassword": password}
    )
    assert validated.metadata["redisPassword"] == password


def typed_fields() -> list[tuple[str, str, Kind]]:
    out = []
    for ctype in known_types():
        for f in schema_for(ctype).fields:
            if f.kind is not Kind.STRING or f.pattern or f.choices:
                out.append((ctype, f.name, f.kind))
    return out


@pytest.mark.parametrize(("ctype", "name", "kind"), typed_fields())
def test_wrong_types_in_typed_fields_are_refused(ctype: str, name: str, kind: Kind) -> None:
    """YAML values of the wrong type (maps, lists, words for numbers) are refused, naming the field."""
    wrong: list[Any] = [{"a": 1}, [1, 2], "not-a-value", "9" * 5000, "-"]
    if kind is not Kind.STRING:
        wrong.append("1e309")
    if kind is Kind.JSON:
        wrong = ["{", "[" * 10_000, "{'a': 1}", "NaN-ish"]
    for value in wrong:
        text = stringify(value)
        check_refused(ctype, name, text)


@pytest.mark.parametrize(
    "value", ["9" * 400 + "h", "1" + "0" * 400 + "s", "9" * 30 + "h", "2562048h", "10" + "0" * 10]
)
def test_durations_out_of_range_are_refused(value: str) -> None:
    check_refused("state.sqlite", "timeout", value)


@pytest.mark.parametrize(
    "doc",
    [
        {"metadata": {"name": ["x"]}, "spec": {"type": "state.in-memory"}},
        {"metadata": {"name": "../x"}, "spec": {"type": "state.in-memory"}},
        {"metadata": {"name": "x"}, "spec": "state.in-memory"},
        {"metadata": {"name": "x"}, "spec": {"type": 5}},
        {"metadata": {"name": "x"}, "spec": {"type": "state.in-memory", "version": 1}},
        {"metadata": {"name": "x"}, "spec": {"type": "state.in-memory", "metadata": {"a": "b"}}},
        {"metadata": {"name": "x"}, "spec": {"type": "state.in-memory", "metadata": [{"value": "v"}]}},
        {"metadata": {"name": "x"}, "spec": {"type": "state.in-memory", "metadata": [{"name": 5}]}},
        {"metadata": {"name": "x"}, "spec": {"type": "state.in-memory", "metadata": ["name"]}},
        {
            "metadata": {"name": "x"},
            "spec": {"type": "state.in-memory", "metadata": [{"name": "a", "secretKeyRef": "s"}]},
        },
        {
            "metadata": {"name": "x"},
            "spec": {"type": "state.in-memory", "metadata": [{"name": "a", "envRef": 1}]},
        },
    ],
)
def test_malformed_component_documents_are_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(ComponentError):
        components.parse(doc, "hostile.yaml")


@pytest.mark.parametrize("env", ["DAPR_API_TOKEN", "APP_API_TOKEN", "DAPR_anything", "A B"])
def test_env_refs_to_the_servers_own_secrets_are_refused(env: str) -> None:
    component = Component(name="s", type="state.in-memory", metadata=(MetadataItem("keyPrefix", env=env),))
    with pytest.raises(ComponentError, match="not allowed"):
        components.metadata_values(component, {env: "secret"})


# --- odd but valid names work, because they are quoted --------------------------------------

RESERVED = {
    "sqlite": {"tableName": "select", "metadataTableName": "order"},
    "postgresql": {"tableName": "public.select", "metadataTableName": "where"},
    "mysql": {"tableName": "select", "metadataTableName": "where"},
}


@pytest.mark.parametrize(
    "backend",
    [pytest.param(b, marks=[pytest.mark.backends] if b in SERVER_BACKENDS else []) for b in RESERVED],
)
def test_reserved_words_as_table_names_work(backend: str, request: pytest.FixtureRequest) -> None:
    """Unquoted, these names would be syntax errors; quoted, the store works normally."""
    metadata: dict[str, str] = request.getfixturevalue(f"{backend}_metadata")
    odd = ComponentUnderTest(backend, BACKENDS[backend], {**metadata, **RESERVED[backend]})
    api = Api({"store": odd})
    try:
        r = api.request("POST", "/v1.0/state/store", json=[{"key": "k", "value": {"a": 1}}])
        assert r.status_code == 204, r.text
        assert api.request("GET", "/v1.0/state/store/k").json() == {"a": 1}
        q = api.request("POST", "/v1.0-alpha1/state/store/query", json={"filter": {"EQ": {"a": 1}}})
        assert [x["key"] for x in q.json()["results"]] == ["k"]
        tx = {"operations": [{"operation": "delete", "request": {"key": "k"}}]}
        assert api.request("POST", "/v1.0/state/store/transaction", json=tx).status_code == 204
    finally:
        api.close()
