"""Events on a Component, as `kubectl describe component` shows them."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from . import naming
from .kube import Client

log = logging.getLogger("statestore.operator")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def post_event(client: Client, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    meta = body["metadata"]
    stamp = now()
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": naming.API_VERSION,
            "kind": naming.KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": naming.MANAGER},
        "reportingComponent": naming.MANAGER,
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await client.create(event)
    except Exception as exc:  # an Event is a courtesy: never fail a reconciliation for it
        log.warning("could not post an Event for %s/%s: %s", meta["namespace"], meta["name"], exc)
