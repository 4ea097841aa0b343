"""`spec.ignoreErrors`, `spec.initTimeout` and mixed metadata sources, through the sidecar CLI."""

from __future__ import annotations

import json
import socket
import sqlite3
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

from fixtures.sidecar import run_cli, sidecar


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def blackhole() -> socket.socket:
    """A listening socket that never accepts: a connect succeeds, the Redis handshake never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(0)
    return s


def redis(name: str, port: int, **spec: Any) -> str:
    doc = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {
            "type": "state.redis",
            "version": "v1",
            **spec,
            "metadata": [{"name": "redisHost", "value": f"127.0.0.1:{port}"}],
        },
    }
    return json.dumps(doc)


MEMORY = textwrap.dedent("""\
    apiVersion: dapr.io/v1alpha1
    kind: Component
    metadata:
      name: good
    spec:
      type: state.in-memory
      version: v1
      metadata: []
    """)


def test_ignore_errors_serves_the_other_stores(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(redis("bad", closed_port(), ignoreErrors=True, initTimeout="1s"))
    (tmp_path / "good.yaml").write_text(MEMORY)
    log = tmp_path / "log.txt"
    # Ready (healthz 204) although `bad` failed to initialise: it is left out, as daprd does.
    with sidecar(["--resources-path", str(tmp_path)], log=log) as url:
        assert httpx.post(f"{url}/v1.0/state/good", json=[{"key": "k", "value": 1}]).status_code == 204
        assert httpx.get(f"{url}/v1.0/state/good/k").json() == 1
        missing = httpx.get(f"{url}/v1.0/state/bad/k")
        assert missing.status_code == 400 and missing.json()["errorCode"] == "ERR_STATE_STORE_NOT_FOUND"
        names = [c["name"] for c in httpx.get(f"{url}/v1.0/metadata").json()["components"]]
        assert names == ["good"]
    assert "ignoreErrors is set, serving without it" in log.read_text()


def test_without_ignore_errors_the_server_stays_unready(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(redis("bad", closed_port(), initTimeout="1s"))
    (tmp_path / "good.yaml").write_text(MEMORY)
    with sidecar(["--resources-path", str(tmp_path)], wait_ready=False) as url:
        for _ in range(3):  # several init attempts
            assert httpx.get(f"{url}/v1.0/healthz").status_code == 500
            time.sleep(1)
        bad = httpx.get(f"{url}/v1.0/state/bad/k")
        assert bad.status_code == 500 and "not initialised" in bad.json()["message"]


def test_init_timeout_bounds_an_initialisation_that_hangs(tmp_path: Path) -> None:
    with blackhole() as hole:
        port = hole.getsockname()[1]
        (tmp_path / "slow.yaml").write_text(redis("slow", port, ignoreErrors=True, initTimeout="1500ms"))
        (tmp_path / "good.yaml").write_text(MEMORY)
        log = tmp_path / "log.txt"
        started = time.monotonic()
        with sidecar(["--resources-path", str(tmp_path)], log=log) as url:
            ready_after = time.monotonic() - started
            assert httpx.get(f"{url}/v1.0/state/slow/k").json()["errorCode"] == "ERR_STATE_STORE_NOT_FOUND"
        assert "init timeout exceeded after 1.5s" in log.read_text()
        assert ready_after > 1.5  # it waited for the timeout (an upper bound is the fixture's own deadline)


def test_invalid_init_timeout_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(redis("c", closed_port(), initTimeout="soon"))
    result = run_cli(["--resources-path", str(tmp_path)])
    assert result.returncode == 1 and "spec.initTimeout" in result.stderr and "'soon'" in result.stderr


def test_secret_beats_value_beats_env_ref(tmp_path: Path) -> None:
    """As daprd on Kubernetes: a secretKeyRef's value replaces a literal `value`; envRef is read only
    when there is no value; a mixed item whose Secret key is absent keeps its literal value."""
    metadata = (
        "[{name: connectionString, secretKeyRef: {name: s, key: url}},"
        " {name: keyPrefix, value: name, secretKeyRef: {name: s, key: prefix}},"
        " {name: tableName, value: from_value, envRef: TABLE_ENV},"
        " {name: metadataTableName, envRef: META_ENV},"
        " {name: busyTimeout, value: 3s, secretKeyRef: {name: s, key: absent}}]"
    )
    doc = textwrap.dedent(f"""\
        apiVersion: dapr.io/v1alpha1
        kind: Component
        metadata:
          name: db
        spec:
          type: state.sqlite
          version: v1
          metadata: {metadata}
        """)
    (tmp_path / "c.yaml").write_text(doc)
    db = tmp_path / "state.db"
    env = {
        "STATESTORE_SECRET_S__URL": str(db),
        "STATESTORE_SECRET_S__PREFIX": "none",
        "TABLE_ENV": "from_env",
        "META_ENV": "meta_from_env",
    }
    with sidecar(["--resources-path", str(tmp_path), "--app-id", "app"], env=env) as url:
        assert httpx.post(f"{url}/v1.0/state/db", json=[{"key": "k", "value": 1}]).status_code == 204
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        keys = [row[0] for row in conn.execute('SELECT key FROM "from_value"')]
    assert {"from_value", "meta_from_env"} <= tables and "from_env" not in tables
    assert keys == ["k"]  # keyPrefix "none" from the Secret, not the literal "name" ("db||k")
