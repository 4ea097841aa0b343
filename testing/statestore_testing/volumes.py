"""Files written the way the kubelet updates a ConfigMap or Secret volume."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path


def project(folder: Path, files: Mapping[str, str]) -> None:
    """Make `folder` hold exactly `files`: a new `..<version>` directory, one atomic rename of the
    `..data` symlink, and top-level symlinks into it (added for new names, removed for gone ones), so a
    reader never sees a mix of old and new contents."""
    folder.mkdir(parents=True, exist_ok=True)
    version = folder / f"..{uuid.uuid4().hex[:8]}"
    version.mkdir()
    for name, text in files.items():
        (version / name).write_text(text)
    tmp = folder / "..data_tmp"
    tmp.symlink_to(version.name)
    os.replace(tmp, folder / "..data")
    for link in folder.iterdir():
        if not link.name.startswith("..") and link.name not in files:
            link.unlink()
    for name in files:
        if not (folder / name).is_symlink():
            (folder / name).symlink_to(f"..data/{name}")
