"""`statestore-pluggable` serves our SQLite store as a Dapr pluggable state store: the real daprd loads
it from its socket folder and passes save, get, ETag, transaction and query checks through it (the
query API, which daprd's own SQLite store lacks)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from statestore_testing.daprd import DaprComponent, Daprd
from statestore_testing.waiting import wait_for

pytestmark = pytest.mark.backends

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
DOC_SOCKET = "/tmp/dapr-components-sockets/ours.sock"


def documented_command(socket: Path) -> list[str]:
    """docs/state-api.md's `statestore-pluggable` command, with the test's socket."""
    section = (ROOT / "docs" / "state-api.md").read_text().split("## Pluggable state stores", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.S)
    assert block is not None
    words = shlex.split(block.group(1))
    assert words[0] == "statestore-pluggable" and DOC_SOCKET in words
    return [str(BIN / words[0]), *(str(socket) if w == DOC_SOCKET else w for w in words[1:])]


def test_daprd_uses_our_sqlite_store_through_the_socket(tmp_path: Path) -> None:
    sockets = tmp_path / "plug"
    socket = sockets / "ours.sock"
    log = open(tmp_path / "pluggable.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        documented_command(socket),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for("statestore-pluggable's socket", lambda: socket.is_socket() or proc.poll() is not None)
        assert proc.poll() is None, (tmp_path / "pluggable.log").read_text()
        components = [DaprComponent("store", "state.ours", {"connectionString": str(tmp_path / "s.db")})]
        env = {"DAPR_COMPONENTS_SOCKETS_FOLDER": str(sockets)}
        with Daprd(components, tmp_path, env=env) as daprd:
            state = f"{daprd.http_url}/v1.0/state/store"
            key = f"k-{uuid.uuid4().hex}"
            assert httpx.post(state, json=[{"key": key, "value": {"n": 1, "c": "red"}}]).status_code == 204
            got = httpx.get(f"{state}/{key}")
            assert got.status_code == 200 and got.json() == {"n": 1, "c": "red"}
            etag = got.headers["etag"]
            assert (
                httpx.post(
                    state, json=[{"key": key, "value": {"n": 2, "c": "red"}, "etag": etag}]
                ).status_code
                == 204
            )
            stale = httpx.post(state, json=[{"key": key, "value": {"n": 3}, "etag": etag}])
            assert stale.status_code == 409 and stale.json()["errorCode"] == "ERR_STATE_SAVE"
            assert "possible etag mismatch" in stale.json()["message"]
            refused = httpx.delete(f"{state}/{key}", headers={"If-Match": etag})
            assert refused.status_code == 409 and refused.json()["errorCode"] == "ERR_STATE_DELETE"
            assert httpx.get(f"{state}/{key}").json() == {"n": 2, "c": "red"}

            other = f"k-{uuid.uuid4().hex}"
            tx = {
                "operations": [
                    {"operation": "upsert", "request": {"key": other, "value": {"n": 5, "c": "blue"}}},
                    {"operation": "upsert", "request": {"key": key, "value": {"n": 9}, "etag": etag}},
                ]
            }
            assert httpx.post(f"{state}/transaction", json=tx).status_code >= 400
            assert httpx.get(f"{state}/{other}").status_code == 204  # all or nothing
            tx["operations"].pop()
            assert httpx.post(f"{state}/transaction", json=tx).status_code == 204
            assert httpx.get(f"{state}/{other}").json() == {"n": 5, "c": "blue"}

            query = {"filter": {"EQ": {"c": "red"}}, "sort": [{"key": "n"}]}
            found = httpx.post(f"{daprd.http_url}/v1.0-alpha1/state/store/query", json=query)
            assert found.status_code == 200, found.text
            assert [(r["key"], r["data"]) for r in found.json()["results"]] == [(key, {"n": 2, "c": "red"})]

            meta = httpx.get(f"{daprd.http_url}/v1.0/metadata").json()
            (component,) = meta["components"]
            assert component["type"] == "state.ours"
            assert {"ETAG", "TRANSACTIONAL", "QUERY_API"} <= set(component["capabilities"])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    assert not os.path.exists(socket)
