"""The pluggable store of tests/fixtures/pluggable.py is one that daprd accepts: the real daprd finds it
in its socket folder, and serves save, get, ETags and transactions through it, two components on one
socket kept apart."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from fixtures.pluggable import ContribPluggable
from statestore_testing.daprd import DaprComponent, Daprd

pytestmark = pytest.mark.backends


def test_daprd_serves_state_through_the_contrib_pluggable_store(tmp_path: Path) -> None:
    sockets = tmp_path / "plug"
    components = [DaprComponent("one", "state.memstore"), DaprComponent("two", "state.memstore")]
    env = {"DAPR_COMPONENTS_SOCKETS_FOLDER": str(sockets)}
    with ContribPluggable(sockets / "memstore.sock"), Daprd(components, tmp_path, env=env) as daprd:
        one, two = f"{daprd.http_url}/v1.0/state/one", f"{daprd.http_url}/v1.0/state/two"
        key = f"k-{uuid.uuid4().hex}"
        assert httpx.post(one, json=[{"key": key, "value": {"n": 1}}]).status_code == 204
        got = httpx.get(f"{one}/{key}")
        assert got.status_code == 200 and got.json() == {"n": 1}
        etag = got.headers["etag"]
        # Each component is its own store instance on the shared socket.
        assert httpx.get(f"{two}/{key}").status_code == 204

        assert httpx.post(one, json=[{"key": key, "value": {"n": 2}, "etag": etag}]).status_code == 204
        stale = httpx.post(one, json=[{"key": key, "value": {"n": 3}, "etag": etag}])
        assert stale.status_code == 409 and stale.json()["errorCode"] == "ERR_STATE_SAVE"
        assert "possible etag mismatch" in stale.json()["message"]
        refused = httpx.delete(f"{one}/{key}", headers={"If-Match": etag})
        assert refused.status_code == 409 and refused.json()["errorCode"] == "ERR_STATE_DELETE"
        assert httpx.get(f"{one}/{key}").json() == {"n": 2}

        other = f"k-{uuid.uuid4().hex}"
        tx = {
            "operations": [
                {"operation": "upsert", "request": {"key": other, "value": "x"}},
                {"operation": "delete", "request": {"key": key}},
            ]
        }
        assert httpx.post(f"{one}/transaction", json=tx).status_code == 204
        assert httpx.get(f"{one}/{other}").json() == "x"
        assert httpx.get(f"{one}/{key}").status_code == 204
        stale_tx = {
            "operations": [
                {"operation": "upsert", "request": {"key": other, "value": "y", "etag": etag}},
            ]
        }
        assert httpx.post(f"{one}/transaction", json=stale_tx).status_code >= 400
        assert httpx.get(f"{one}/{other}").json() == "x"

        metadata = httpx.get(f"{daprd.http_url}/v1.0/metadata").json()
        types = {c["name"]: c["type"] for c in metadata["components"]}
        assert types == {"one": "state.memstore", "two": "state.memstore"}
