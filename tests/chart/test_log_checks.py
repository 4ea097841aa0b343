"""The check for refused requests in the operator's log finds refusals, and only refusals."""

from __future__ import annotations

import pytest
from chart_testing import forbidden_lines

REFUSED = [
    "2026-12-01 11:16:48,120 WARNING statestore.operator: cannot read NetworkPolicy statestore-x: "
    'HTTP 403: {"kind":"Status","reason":"Forbidden","code":403}',
    '2026-12-01 11:16:48,120 ERROR kopf.objects: {"code": 403, "message": "deployments.apps is '
    'forbidden: User \\"system:serviceaccount:ops:op\\" cannot list resource"}',
    "2026-12-01 11:16:48,120 ERROR kopf._core: APIForbiddenError: ('components.dapr.io is forbidden: "
    "User cannot watch', {'code': 403})",
    "2026-12-01 11:16:48,120 WARNING kopf._core.reactor.observation: Not enough permissions to watch "
    "for resources: changes (creation/deletion/updates) will not be noticed",
    "2026-12-01 11:16:48,120 ERROR aiohttp: 403, message='Forbidden', url='https://127.0.0.1/api'",
]
ALLOWED = [
    "2026-12-01 11:16:48,403 INFO statestore.operator: deleting Service t-1/statestore-mem",
    "2026-12-01 11:16:48,040 INFO statestore.operator: reconciled 403 Components in 1.403s",
    "2026-12-01 11:16:48,999 INFO kopf.objects: Handler 'reconcile' succeeded (resourceVersion 14030)",
]


@pytest.mark.parametrize("line", REFUSED)
def test_a_refused_request_is_found(line: str) -> None:
    assert forbidden_lines(f"first line\n{line}\nlast line") == [line]


@pytest.mark.parametrize("line", ALLOWED)
def test_a_403_in_a_timestamp_or_a_count_is_not_a_refusal(line: str) -> None:
    assert forbidden_lines(line) == []
