"""The README's walkthrough, run as written against `make run`'s command line."""

from __future__ import annotations

import shutil
from pathlib import Path

from fixtures.sidecar import sidecar
from fixtures.walkthrough import ROOT, check_walkthrough, make_run_args


def test_readme_walkthrough(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    (tmp_path / ".data").mkdir()
    args = [a if a != "examples" else str(tmp_path / "examples") for a in make_run_args()]
    with sidecar(args, cwd=tmp_path) as url:
        check_walkthrough(int(url.rsplit(":", 1)[1]), tmp_path)
    assert (tmp_path / ".data" / "state.db").exists()
