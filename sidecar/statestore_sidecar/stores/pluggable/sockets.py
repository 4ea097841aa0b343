"""Where pluggable component sockets are, as daprd finds them (standard library only: the operator
imports this through the store registry)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

SOCKET_FOLDER_ENV = "DAPR_COMPONENTS_SOCKETS_FOLDER"
DEFAULT_SOCKET_FOLDER = "/tmp/dapr-components-sockets"


def socket_folder() -> Path:
    return Path(os.environ.get(SOCKET_FOLDER_ENV) or DEFAULT_SOCKET_FOLDER)


def socket_name(store_type: str) -> str:
    """`state.<name>` -> `<name>`: the socket's file name less its extension."""
    return store_type.split(".", 1)[1] if "." in store_type else store_type


def socket_for(store_type: str) -> Path | None:
    """The socket serving a `state.<name>` type now (`<name>` with any extension), or None."""
    if not store_type.lower().startswith("state."):
        return None
    name = socket_name(store_type)
    try:
        entries = list(os.scandir(socket_folder()))
    except OSError:
        return None
    for entry in sorted(entries, key=lambda e: e.name):
        stem = entry.name.rsplit(".", 1)[0] if "." in entry.name else entry.name
        if stem != name:
            continue
        try:
            if stat.S_ISSOCK(entry.stat().st_mode):
                return Path(entry.path)
        except OSError:
            continue
    return None
