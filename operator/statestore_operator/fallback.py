"""Living beside Dapr's own CRD, which has no status subresource and no `status` field.

Where Dapr's `components.dapr.io` CRD is installed, the API server has no `/status` endpoint for
Components and prunes any `.status`. The operator finds that out from discovery (a
`components/status` resource is listed only with the subresource), says so, and keeps serving
Components; what it would have put in `.status` goes into annotations instead:

* `statestore.dapr.io/ready`: `True` or `False`, and `statestore.dapr.io/ready-reason`: the Ready reason;
* `statestore.dapr.io/conditions`: the conditions list as JSON (the same objects `.status` would hold).

Events are posted as usual. Once the CRD is upgraded (`docs/install.md`), the next resync sees the
subresource, writes `.status` and removes these annotations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from . import naming

READY_ANNOTATION = f"{naming.ANNOTATION_PREFIX}/ready"
READY_REASON_ANNOTATION = f"{naming.ANNOTATION_PREFIX}/ready-reason"
CONDITIONS_ANNOTATION = f"{naming.ANNOTATION_PREFIX}/conditions"
ANNOTATIONS = (READY_ANNOTATION, READY_REASON_ANNOTATION, CONDITIONS_ANNOTATION)

NO_STATUS_REASON = "StatusSubresourceMissing"
UPGRADE_COMMAND = "kubectl apply --server-side --force-conflicts -f crds/components.dapr.io.yaml"
NO_STATUS_MESSAGE = (
    "the components.dapr.io CRD installed has no status subresource (Dapr's own CRD): conditions "
    f"cannot be written to .status, so they are kept in the annotations {READY_ANNOTATION}, "
    f"{READY_REASON_ANNOTATION} and {CONDITIONS_ANNOTATION}, and in Events; upgrade the CRD with "
    f"'{UPGRADE_COMMAND}' (docs/install.md)"
)


def has_status_subresource(discovery: Mapping[str, Any] | None) -> bool:
    """Whether the APIResourceList of dapr.io/v1alpha1 lists `components/status`."""
    resources = (discovery or {}).get("resources") or []
    return any(r.get("name") == f"{naming.PLURAL}/status" for r in resources)


def status_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The status as the fallback annotations hold it ({} when there are none or they are unreadable)."""
    annotations = body.get("metadata", {}).get("annotations") or {}
    text = annotations.get(CONDITIONS_ANNOTATION)
    if not text:
        return {}
    try:
        conditions = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(conditions, list):
        return {}
    return {"conditions": conditions}


def annotations_for(status: Mapping[str, Any] | None) -> dict[str, str | None]:
    """The annotation patch that records `status` (None: remove the annotations)."""
    if status is None:
        return dict.fromkeys(ANNOTATIONS)
    conditions = list(status.get("conditions") or [])
    ready: Mapping[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
    return {
        READY_ANNOTATION: str(ready.get("status", "Unknown")),
        READY_REASON_ANNOTATION: str(ready.get("reason", "")),
        CONDITIONS_ANNOTATION: json.dumps(conditions, separators=(",", ":"), sort_keys=True),
    }


def has_annotations(body: Mapping[str, Any]) -> bool:
    annotations = body.get("metadata", {}).get("annotations") or {}
    return any(key in annotations for key in ANNOTATIONS)
