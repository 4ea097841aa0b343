"""The committed messages of the pluggable protocol are what hack/pluggable/protos.sh generates from the
pinned dapr module's .proto files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "sidecar" / "statestore_sidecar" / "stores" / "pluggable" / "proto"

pytestmark = pytest.mark.backends  # the Go module cache, as the daprd build uses


def test_generated_messages_are_up_to_date(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "hack" / "pluggable" / "protos.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    names = ["common_pb2.py", "common_pb2.pyi", "state_pb2.py", "state_pb2.pyi"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    for name in names:
        assert (tmp_path / name).read_text() == (COMMITTED / name).read_text(), name
