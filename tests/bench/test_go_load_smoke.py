"""The benchmark's gRPC load generator (the Go SDK in a closed loop) against the real server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml
from bench.load import go_load

from fixtures.sidecar import sidecar_process

pytestmark = pytest.mark.backends  # go-client is built with the backends' set-up (`make go-client`)


def test_go_sdk_load_saves_and_gets(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "bench"},
        "spec": {"type": "state.in-memory", "version": "v1", "metadata": []},
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(doc))
    with sidecar_process(["--resources-path", str(tmp_path)]) as server:
        for op in ("save", "get"):
            phase = go_load(server.grpc_address, "bench", op, 4, 1)
            assert phase.tool == "go-sdk" and phase.errors == 0
            assert phase.requests > 10 and phase.statuses == {200: phase.requests}
            assert phase.seconds >= 1
        stored = httpx.get(f"{server.url}/v1.0/state/bench/load-key").json()
    assert stored == {"v": "x" * 1000}
