"""The "By hand" commands of docs/control-plane.md, run as written in a copy of the project."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.k8s
def test_control_plane_by_hand(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "control-plane.md").read_text()
    block = re.search(r"### By hand\n\n```sh\n(.*?)```", text, flags=re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    # A copy of what the commands use, so a developer's own `.cluster/` is never touched.
    work = tmp_path / "project"
    work.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, work / name)
    shutil.copytree(ROOT / "hack", work / "hack")
    # The project's virtualenv, seen as installed: `make` must not reinstall it from this copy.
    (work / ".venv").mkdir()
    for entry in (ROOT / ".venv").iterdir():
        if entry.name != ".installed":
            (work / ".venv" / entry.name).symlink_to(entry)
    (work / ".venv" / ".installed").touch()
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("KUBECONFIG", None)
    script = "set -euo pipefail\n" + "\n".join(
        f"{c}\necho '@@after {c.split()[0]} {c.split()[1] if len(c.split()) > 1 else ''}@@'"
        for c in commands
        if c
    )
    try:
        result = subprocess.run(
            ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        nodes = result.stdout.split("@@after kubectl get@@")[0].rsplit("@@", 1)[-1]
        assert "kwok-node-0" in nodes
        assert " Ready" in nodes
        assert not (work / ".cluster").exists()  # `make cluster-down` removed its data
        assert "pip install" not in result.stdout
    finally:
        if (work / ".cluster").exists():
            subprocess.run(
                ["bash", "-c", ".venv/bin/python -m statestore_testing.control_plane down"],
                cwd=work,
                timeout=120,
            )
