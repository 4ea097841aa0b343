"""Secret rotation: a digest of the Secret values a Component's pods read, put on their pod template.

The operator may not list or watch Secrets (its role has `get` by name only), so it cannot be told
when one changes. Instead every reconciliation (a Component or Deployment event, or the periodic
resync) GETs the Secrets the pods reference, and this digest of the referenced keys' values goes into
the pod-template annotation `statestore.dapr.io/secrets-hash`. A changed value changes the annotation,
which rolls exactly the pods that read it; a changed key nobody references, another Secret, or a
re-apply with the same data leaves it as it is.

The value is salted with the Secret's uid, which only those who may read the Secret can see, so the
annotation (readable by anyone who may read Deployments) gives no way to test guesses of a password.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from . import naming

SECRETS_HASH_ANNOTATION = f"{naming.ANNOTATION_PREFIX}/secrets-hash"


def referenced_keys(env: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The (Secret, key) pairs a container's env reads through `valueFrom.secretKeyRef`, sorted."""
    pairs = set()
    for item in env:
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            pairs.add((str(ref["name"]), str(ref["key"])))
    return sorted(pairs)


def secrets_digest(env: Iterable[Mapping[str, Any]], secrets: Mapping[str, Mapping[str, Any] | None]) -> str:
    """A digest of the referenced keys' values ("" when the env references no Secret).

    `secrets` holds the Secrets as read from the API server, by name; a missing one (or key) counts
    as absent, so its later creation changes the digest too.
    """
    pairs = referenced_keys(env)
    if not pairs:
        return ""
    hashed = []
    for name, key in pairs:
        secret = secrets.get(name) or {}
        uid = str((secret.get("metadata") or {}).get("uid", ""))
        value = (secret.get("data") or {}).get(key)
        raw = b"" if value is None else base64.b64decode(value)
        salted = hashlib.sha256(uid.encode() + b"\0" + raw).hexdigest()
        hashed.append([name, key, value is not None, salted])
    return hashlib.sha256(json.dumps(hashed).encode()).hexdigest()[:16]
