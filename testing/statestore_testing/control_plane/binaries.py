"""Where the control plane's binaries are and which versions they are (hack/k8s/versions.env,
shared with hack/k8s/build.sh, which builds them)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
VERSIONS_FILE = REPO_ROOT / "hack" / "k8s" / "versions.env"

# Processes in start order; stop() goes in reverse.
ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER, KWOK = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
)
FAKE_NODE = "kwok-node-0"


def pinned_versions() -> dict[str, str]:
    """versions.env, overridden by environment variables of the same name (as build.sh does)."""
    versions: dict[str, str] = {}
    for raw in VERSIONS_FILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        versions[key] = os.environ.get(key) or value
    return versions


def default_bin_dir() -> Path:
    """Where build.sh puts the binaries; K8S_BIN_DIR / STATESTORE_CACHE_DIR override like in build.sh."""
    if env := os.environ.get("K8S_BIN_DIR"):
        return Path(env)
    cache = Path(os.environ.get("STATESTORE_CACHE_DIR") or Path.home() / ".cache" / "statestore-operator")
    return cache / "k8s" / f"v{pinned_versions()['K8S_VERSION']}"
