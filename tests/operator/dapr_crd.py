"""Dapr's own Component CRD, read from the `github.com/dapr/dapr` module in the Go module cache.

`go mod download` fetches the module through the Go module proxy once; Go keeps it in its module
cache (atomically, read-only), so later runs read it from there. Nothing of Dapr's is committed here.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

DAPR_MODULE = "github.com/dapr/dapr"
# The Dapr release the project follows (the only one the Go module proxy serves).
DAPR_VERSION = "v1.14.0"
CRD_IN_MODULE = "charts/dapr/crds/components.yaml"


@functools.cache
def dapr_crd_path() -> Path:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    with tempfile.TemporaryDirectory() as empty:  # outside any go.mod
        result = subprocess.run(
            [go, "mod", "download", "-json", f"{DAPR_MODULE}@{DAPR_VERSION}"],
            cwd=empty,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    info = json.loads(result.stdout or "{}")
    assert result.returncode == 0 and info.get("Dir"), f"go mod download failed: {result.stderr}{info}"
    path = Path(info["Dir"]) / CRD_IN_MODULE
    assert path.is_file(), f"{path} is missing from {DAPR_MODULE}@{DAPR_VERSION}"
    return path


def dapr_crd() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(dapr_crd_path().read_text()) if d]
    (crd,) = docs
    return dict(crd)


def regrouped(crd: dict[str, Any], group: str) -> dict[str, Any]:
    """The CRD under another API group, so two schemas can be installed side by side."""
    out = copy.deepcopy(crd)
    out["spec"]["group"] = group
    out["metadata"] = {"name": f"{out['spec']['names']['plural']}.{group}"}
    return out
