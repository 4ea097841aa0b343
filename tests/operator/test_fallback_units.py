"""The fallback beside Dapr's CRD (pure): discovery, and conditions kept in annotations."""

from __future__ import annotations

from statestore_operator import fallback


def test_status_subresource_is_read_from_discovery() -> None:
    ours = {"resources": [{"name": "components"}, {"name": "components/status"}]}
    assert fallback.has_status_subresource(ours)
    assert not fallback.has_status_subresource({"resources": [{"name": "components"}]})
    assert not fallback.has_status_subresource(None)


def test_annotations_round_trip_the_conditions() -> None:
    conditions = [
        {"type": "Validated", "status": "True", "reason": "Valid", "observedGeneration": 2},
        {"type": "Ready", "status": "False", "reason": "Progressing", "observedGeneration": 2},
    ]
    patch = fallback.annotations_for({"observedGeneration": 2, "conditions": conditions})
    assert patch[fallback.READY_ANNOTATION] == "False"
    assert patch[fallback.READY_REASON_ANNOTATION] == "Progressing"
    body = {"metadata": {"annotations": patch}}
    assert fallback.status_of(body) == {"conditions": conditions}
    assert fallback.has_annotations(body)
    assert fallback.annotations_for(None) == dict.fromkeys(fallback.ANNOTATIONS)


def test_unreadable_annotation_counts_as_no_status() -> None:
    assert fallback.status_of({"metadata": {"annotations": {fallback.CONDITIONS_ANNOTATION: "{nope"}}}) == {}
    assert fallback.status_of({"metadata": {}}) == {}


def test_the_message_names_the_documented_command() -> None:
    assert fallback.UPGRADE_COMMAND in fallback.NO_STATUS_MESSAGE
