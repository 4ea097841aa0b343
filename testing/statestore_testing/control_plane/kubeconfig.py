"""Self-contained kubeconfig files (credentials embedded, so they can be copied anywhere)."""

from __future__ import annotations

import base64
import json
from pathlib import Path


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_cert: Path,
    user: str,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    token: str | None = None,
    cluster_name: str = "statestore-local",
) -> Path:
    """A self-contained kubeconfig (credentials embedded, so it can be copied anywhere).

    JSON is valid YAML, so no YAML library is needed here.
    """
    creds: dict[str, str] = {}
    if client_cert and client_key:
        creds = {"client-certificate-data": _b64(client_cert), "client-key-data": _b64(client_key)}
    if token:
        creds["token"] = token
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster_name, "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)}}
        ],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": cluster_name,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)  # it holds a private key or token
    return path
