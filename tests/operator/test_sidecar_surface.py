"""The operator uses a small, named part of the sidecar package, and loads no database driver."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import statestore_operator
from statestore_sidecar import validation

OPERATOR = Path(statestore_operator.__file__).parent
DRIVERS = ("asyncpg", "aiomysql", "pymysql", "redis", "aiosqlite", "hiredis")
# Settings each store's parsers accept, so validation runs them all.
SETTINGS = {
    "state.in-memory": {},
    "state.sqlite": {"connectionString": "file:x.db?_pragma=synchronous(normal)"},
    "state.redis": {"redisHost": "localhost:6379", "enableTLS": "true", "clientCert": "c", "clientKey": "k"},
    "state.postgresql": {"connectionString": "postgres://u:p@localhost:5432/d?sslmode=require"},
    "state.mysql": {"connectionString": "u:p@tcp(localhost:3306)/?tls=custom", "pemPath": "/etc/ca.pem"},
}


def sidecar_imports() -> set[tuple[str, str]]:
    """(module, name) of every import of the sidecar package in the operator's sources."""
    found: set[tuple[str, str]] = set()
    for path in OPERATOR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("statestore_sidecar"):
                found |= {(node.module or "", alias.name) for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {(a.name, "") for a in node.names if a.name.startswith("statestore_sidecar")}
    return found


def test_the_operator_imports_exactly_the_sidecars_validation_surface() -> None:
    imports = sidecar_imports()
    assert {module for module, _ in imports} == {"statestore_sidecar.validation"}
    assert {name for _, name in imports} == set(validation.__all__)


def test_the_operator_and_every_store_schema_load_no_database_driver() -> None:
    """Importing the operator and validating a Component of every type leaves the drivers unloaded."""
    script = f"""
import json, pkgutil, importlib, sys
import statestore_operator
for info in pkgutil.walk_packages(statestore_operator.__path__, "statestore_operator."):
    importlib.import_module(info.name)
from statestore_sidecar.stores import known_types, metadata_module
from statestore_sidecar.validation import parse, validate
settings = {SETTINGS!r}
assert sorted(settings) == known_types()
for ctype, values in settings.items():
    importlib.import_module(metadata_module(ctype))
    doc = {{"apiVersion": "dapr.io/v1alpha1", "kind": "Component", "metadata": {{"name": "s"}},
           "spec": {{"type": ctype, "metadata": [{{"name": k, "value": v}} for k, v in values.items()]}}}}
    assert not validate(parse(doc), values).warnings
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {DRIVERS!r})))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout) == []


def test_every_store_says_where_it_keeps_its_data() -> None:
    """The operator runs stores by their schema's persistence, never by their type names."""
    from statestore_sidecar.stores import known_types

    found = {ctype: validation.schema_for(ctype).persistence for ctype in known_types()}
    assert found == {
        "state.in-memory": validation.Persistence.MEMORY,
        "state.sqlite": validation.Persistence.LOCAL_FILES,
        "state.redis": validation.Persistence.NETWORK,
        "state.postgresql": validation.Persistence.NETWORK,
        "state.mysql": validation.Persistence.NETWORK,
    }
    sources = "\n".join(path.read_text() for path in OPERATOR.rglob("*.py"))
    assert "state.sqlite" not in sources and "state.in-memory" not in sources
