"""The commands of docs/daprd.md, run as written in a copy of the project (warm: they only check)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.backends
def test_daprd_docs_commands(tmp_path: Path) -> None:
    block = re.search(r"```sh\n(.*?)```", (ROOT / "docs" / "daprd.md").read_text(), flags=re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["make daprd", "make go-client", "make pluggable"]
    shutil.copy2(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copytree(ROOT / "hack", tmp_path / "hack")
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", f"set -euo pipefail\n{command}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "cached: " in done.stderr or "built in " in done.stderr
