"""The `statestore-sidecar` command: loading Components, refusing bad ones, flags and environment."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import httpx
import pytest

from fixtures.sidecar import run_cli, sidecar


def component(name: str, ctype: str, metadata: str = "[]", extra: str = "") -> str:
    return textwrap.dedent(f"""\
        apiVersion: dapr.io/v1alpha1
        kind: Component
        metadata:
          name: {name}
        spec:
          type: {ctype}
          version: v1
          metadata: {metadata}
        {extra}""")


def write(path: Path, *docs: str) -> Path:
    path.write_text("---\n".join(docs))
    return path


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            component("cache", "state.nosuchdb"),
            ["component 'cache'", "unknown state store type 'state.nosuchdb'"],
        ),
        (component("db", "state.sqlite"), ["component 'db'", "metadata 'connectionString'", "is required"]),
        (
            component(
                "db", "state.sqlite", "[{name: connectionString, value: x.db}, {name: timeout, value: soon}]"
            ),
            ["component 'db'", "metadata 'timeout'", "is not a duration"],
        ),
        (
            component("mem", "state.in-memory", "[{name: actorStateStore, value: maybe}]"),
            ["component 'mem'", "metadata 'actorStateStore'", "not a boolean"],
        ),
        (
            component("mem", "state.in-memory", '[{name: keyPrefix, value: "a||b"}]'),
            ["component 'mem'", "keyPrefix", "can't contain '||'"],
        ),
        (
            component("mem", "state.in-memory", "[]").replace("version: v1", "version: v7"),
            ["component 'mem'", "version 'v7'", "not supported"],
        ),
        (
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: x}\nspec: [unclosed\n",
            ["invalid YAML", "line"],
        ),
    ],
)
def test_invalid_component_stops_start_up_with_one_clear_line(
    tmp_path: Path, doc: str, expected: list[str]
) -> None:
    path = write(tmp_path / "bad.yaml", doc)
    result = run_cli(["--resources-path", str(tmp_path)])
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0]
    for fragment in expected:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_duplicate_store_names_across_files(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", component("same", "state.in-memory"))
    write(tmp_path / "b.yml", component("same", "state.in-memory"))
    result = run_cli(["--resources-path", str(tmp_path)])
    assert result.returncode == 1
    assert "a state store named 'same' is already defined in" in result.stderr
    assert "b.yml" in result.stderr


def test_two_actor_state_stores_are_refused(tmp_path: Path) -> None:
    actor = '[{name: actorStateStore, value: "true"}]'
    write(
        tmp_path / "a.yaml",
        component("one", "state.in-memory", actor),
        component("two", "state.in-memory", actor),
    )
    result = run_cli(["--resources-path", str(tmp_path)])
    assert result.returncode == 1
    assert "detected duplicate actor state store: one and two" in result.stderr


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    result = run_cli(["--resources-path", str(tmp_path / "nope")])
    assert result.returncode == 1
    assert "no such file or folder" in result.stderr


def test_serves_every_state_store_and_skips_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "resources"
    folder.mkdir()
    write(
        folder / "stores.yaml",
        component("mem", "state.in-memory"),
        component("pubsub", "pubsub.redis"),
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: cfg}\nspec: {}\n",
    )
    single = write(
        tmp_path / "db.yaml",
        component("db", "state.sqlite", f"[{{name: connectionString, value: '{tmp_path}/s.db'}}]"),
    )
    log = tmp_path / "log.txt"
    with sidecar(
        ["--resources-path", str(folder), "--resources-path", str(single), "--app-id", "app"], log=log
    ) as url:
        meta = httpx.get(f"{url}/v1.0/metadata").json()
        assert sorted(c["name"] for c in meta["components"]) == ["db", "mem"]
        for store in ("mem", "db"):
            assert (
                httpx.post(f"{url}/v1.0/state/{store}", json=[{"key": "k", "value": store}]).status_code
                == 204
            )
            assert httpx.get(f"{url}/v1.0/state/{store}/k").json() == store
    text = log.read_text()
    assert "skipping" in text and "'pubsub' (pubsub.redis): not a state store" in text
    assert "Configuration" in text


def test_secrets_and_env_refs_come_from_the_environment(tmp_path: Path) -> None:
    metadata = (
        "[{name: connectionString, secretKeyRef: {name: db-secret, key: url}},"
        " {name: tableName, envRef: TABLE_FOR_STATE}]"
    )
    write(tmp_path / "c.yaml", component("db", "state.sqlite", metadata))
    missing = run_cli(["--resources-path", str(tmp_path)])
    assert missing.returncode == 1
    assert "STATESTORE_SECRET_DB_SECRET__URL" in missing.stderr
    env = {"STATESTORE_SECRET_DB_SECRET__URL": str(tmp_path / "secret.db"), "TABLE_FOR_STATE": "from_env"}
    with sidecar(["--resources-path", str(tmp_path)], env=env) as url:
        assert httpx.post(f"{url}/v1.0/state/db", json=[{"key": "k", "value": 1}]).status_code == 204
        meta = httpx.get(f"{url}/v1.0/metadata").text
        assert str(tmp_path / "secret.db") not in meta
    import sqlite3

    with sqlite3.connect(tmp_path / "secret.db") as conn:
        assert conn.execute('SELECT count(*) FROM "from_env"').fetchone() == (1,)


def test_token_body_limit_and_json_logs(tmp_path: Path) -> None:
    write(tmp_path / "c.yaml", component("mem", "state.in-memory", '[{name: notASetting, value: "1"}]'))
    log = tmp_path / "log.txt"
    args = [
        "--resources-path",
        str(tmp_path),
        "--max-body-size",
        "1Ki",
        "--log-as-json",
        "--log-level",
        "debug",
    ]
    with sidecar(args, env={"DAPR_API_TOKEN": "tok"}, log=log) as url:
        assert httpx.get(f"{url}/v1.0/metadata").status_code == 401
        headers = {"dapr-api-token": "tok"}
        big = httpx.post(f"{url}/v1.0/state/mem", json=[{"key": "k", "value": "x" * 2048}], headers=headers)
        assert big.status_code == 400 and big.json()["errorCode"] == "ERR_MALFORMED_REQUEST"
        assert httpx.post(f"{url}/v1.0/state/mem", json=[{"key": "k"}], headers=headers).status_code == 204
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert entries and all({"time", "level", "msg"} <= set(e) for e in entries)
    assert any("notASetting" in e["msg"] and e["level"] == "warning" for e in entries)


def test_namespace_and_scopes_select_components(tmp_path: Path) -> None:
    write(
        tmp_path / "c.yaml",
        component("mine", "state.in-memory").replace("  name: mine", "  name: mine\n  namespace: team-a"),
        component("theirs", "state.in-memory").replace(
            "  name: theirs", "  name: theirs\n  namespace: team-b"
        ),
        component("scoped", "state.in-memory", extra="scopes: [other-app]"),
    )
    with sidecar(["--resources-path", str(tmp_path), "--app-id", "app"], env={"NAMESPACE": "team-a"}) as url:
        names = [c["name"] for c in httpx.get(f"{url}/v1.0/metadata").json()["components"]]
    assert names == ["mine"]


def test_metrics_count_requests_by_operation(tmp_path: Path) -> None:
    from fixtures.sidecar import free_port

    write(tmp_path / "c.yaml", component("mem", "state.in-memory"))
    port = free_port()
    with sidecar(["--resources-path", str(tmp_path), "--metrics-port", str(port)]) as url:
        httpx.post(f"{url}/v1.0/state/mem", json=[{"key": "k", "value": 1}])
        httpx.get(f"{url}/v1.0/state/mem/k")
        httpx.get(f"{url}/v1.0/state/mem/missing")
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'statestore_http_requests_total{operation="save",status="204"} 1.0' in text
    assert 'statestore_http_requests_total{operation="get",status="200"} 1.0' in text
    assert 'statestore_http_requests_total{operation="get",status="204"} 1.0' in text
    assert 'statestore_http_request_duration_seconds_count{operation="get"} 2.0' in text
