"""The images, built by `make images` and run with podman the way Kubernetes runs them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from fixtures.docs import documented

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_IMAGE = "localhost/statestore-operator:dev"
SIDECAR_IMAGE = "localhost/statestore-sidecar:dev"
# runc, cgroupfs and no default ulimits (hack/images/containers.conf says why).
ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "hack" / "images" / "containers.conf")}
UID = 65532
# What the pod specs require: the image's own non-root user (no --user here), a read-only root
# filesystem with an emptyDir on /tmp, no capabilities, no privilege escalation.
RESTRICTED = (
    "--read-only",
    "--tmpfs",
    "/tmp:rw,mode=1777",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--network=host",
)


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=ENV)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def build_images() -> None:
    """The images block of docs/install.md (`make images`), run as written: quick when nothing changed."""
    script = documented("install.md", "images")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


class Container:
    """One detached container; logs() for failure messages, removed on exit."""

    def __init__(self, name: str) -> None:
        self.name = name

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return (result.stdout + result.stderr)[-4000:]

    def running(self) -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return state.stdout.strip() == "true"

    def exec(self, *command: str) -> str:
        return podman("exec", self.name, *command).stdout


@contextlib.contextmanager
def run(image: str, options: Sequence[str], args: Sequence[str]) -> Iterator[Container]:
    name = f"statestore-test-{uuid.uuid4().hex[:10]}"
    podman("run", "--detach", "--name", name, *RESTRICTED, *options, image, *args)
    container = Container(name)
    try:
        yield container
    finally:
        # SIGTERM first, as the kubelet does; the stop timeout bounds the wait.
        podman("stop", "--time", "20", name, check=False)
        podman("rm", "--force", name, check=False)
