"""hack/images/build.sh caches the bootstrapped base all or nothing: a failed or killed bootstrap
leaves no tarball a later run takes as good. podman and mmdebstrap are fakes here; tests/images
builds and runs the real images."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "images" / "build.sh"

# Answers what build.sh asks: no image exists yet, every other command succeeds.
PODMAN = """#!/bin/sh
echo "podman $*" >> "$FAKE_LOG"
case "$1 $2" in "image exists") exit 1 ;; esac
exit 0
"""


def fakes(folder: Path, mmdebstrap: str) -> dict[str, str]:
    folder.mkdir()
    for name, body in {"podman": PODMAN, "runc": "#!/bin/sh\n", "mmdebstrap": mmdebstrap}.items():
        (folder / name).write_text(body)
        (folder / name).chmod(0o755)
    return {
        "PATH": f"{folder}:{os.environ['PATH']}",
        "STATESTORE_CACHE": str(folder.parent / "cache"),
        "FAKE_LOG": str(folder.parent / "calls.log"),
    }


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


# mmdebstrap's arguments end with the suite, the output file and three sources.
WRITE_OUTPUT = 'out=$(eval echo "\\${$(($# - 3))}")\nhead -c 100000 /dev/zero > "$out"\n'


def test_a_failed_bootstrap_caches_nothing(tmp_path: Path) -> None:
    env = fakes(tmp_path / "bin", f"#!/bin/bash\n{WRITE_OUTPUT}exit 1\n")
    result = run(env)
    assert result.returncode != 0
    cache = Path(env["STATESTORE_CACHE"]) / "images"
    assert sorted(p.name for p in cache.iterdir()) == [], "nothing left behind"


def test_a_killed_bootstrap_is_swept_and_redone(tmp_path: Path) -> None:
    # SIGKILL of the script itself: no trap runs, its staging directory stays behind...
    env = fakes(tmp_path / "bin", f"#!/bin/bash\n{WRITE_OUTPUT}kill -9 $PPID\nsleep 5\n")
    assert run(env).returncode != 0
    cache = Path(env["STATESTORE_CACHE"]) / "images"
    assert [p.name for p in cache.iterdir() if p.name.startswith(".staging.")]
    assert not (cache / "debian-bookworm-python3.tar").exists()
    # ...and is neither taken as a base nor kept by the next run, which bootstraps again.
    (tmp_path / "bin" / "mmdebstrap").write_text(f"#!/bin/bash\n{WRITE_OUTPUT}exit 0\n")
    result = run(env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in cache.iterdir()) == [
        "debian-bookworm-python3.tar",
        "debian-bookworm-python3.tar.from",
    ]
    calls = Path(env["FAKE_LOG"]).read_text()
    assert "podman import" in calls and "--build-arg BASE=localhost/statestore-base:bookworm-" in calls
    # A third run uses the cached base: no bootstrap.
    (tmp_path / "bin" / "mmdebstrap").write_text("#!/bin/sh\nexit 1\n")
    assert run(env).returncode == 0
