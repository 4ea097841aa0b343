"""The README's walkthrough, run as written against `make run`'s command line."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from fixtures.sidecar import sidecar

ROOT = Path(__file__).resolve().parents[2]


def console_blocks(text: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs from the ```console blocks."""
    pairs: list[tuple[str, str]] = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, output = chunk.partition("\n")
            pairs.append((command, output.rstrip("\n")))
    return pairs


def make_run_args() -> list[str]:
    """The sidecar arguments of the Makefile's `run` target, less the port, which the test picks."""
    makefile = (ROOT / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if "statestore-sidecar --resources-path" in x)
    args = line.split("statestore-sidecar", 1)[1].split()
    port = args.index("--dapr-http-port")
    del args[port : port + 2]
    return args


def test_readme_walkthrough(tmp_path: Path) -> None:
    steps = console_blocks((ROOT / "README.md").read_text())
    assert len(steps) >= 10
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    (tmp_path / ".data").mkdir()
    args = [a if a != "examples" else str(tmp_path / "examples") for a in make_run_args()]
    with sidecar(args, cwd=tmp_path) as url:
        port = url.rsplit(":", 1)[1]
        script = "set -u\n" + "".join(
            f"{command.replace('localhost:3500', f'localhost:{port}')}\necho '@@step {i}@@'\n"
            for i, (command, _) in enumerate(steps)
        )
        result = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
    outputs = re.split(r"@@step \d+@@\n?", result.stdout)
    for (command, expected), actual in zip(steps, outputs, strict=False):
        assert actual.rstrip("\n") == expected, f"{command}\n{result.stderr}"
    assert (tmp_path / ".data" / "state.db").exists()
