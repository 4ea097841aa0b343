"""Replicas, rollouts, claims, disruption budgets and autoscalers, as rendered (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from statestore_operator import admission, naming, render, scaling, validation
from statestore_sidecar.validation import Persistence, parse

SETTINGS = {
    "state.sqlite": [{"name": "connectionString", "value": "state.db"}],
    "state.in-memory": [],
    "state.redis": [{"name": "redisHost", "value": "redis:6379"}],
    "state.postgresql": [{"name": "connectionString", "value": "host=db user=u"}],
}


def body(ctype: str, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {
            "name": "store",
            "namespace": "ns",
            "uid": "u-1",
            "annotations": {f"statestore.dapr.io/{k.replace('_', '-')}": v for k, v in annotations.items()},
        },
        "spec": {"type": ctype, "version": "v1", "metadata": SETTINGS[ctype]},
    }


def planned(ctype: str, default_replicas: int = 1, **annotations: str) -> tuple[dict[str, Any], scaling.Plan]:
    b = body(ctype, **annotations)
    return b, scaling.plan(b, parse(b), default_replicas)


def rendered(ctype: str, default_replicas: int = 1, **annotations: str) -> dict[str, Any]:
    b, plan = planned(ctype, default_replicas, **annotations)
    return scaling.shape(render.deployment(b, parse(b), render.PodSettings(image="i")), plan)


OWNER = {"uid": "u-1", "kind": "Component"}


def test_sqlite_gets_a_kept_claim_one_replica_and_recreate() -> None:
    b, plan = planned("state.sqlite", default_replicas=4)
    assert plan.persistence is Persistence.LOCAL_FILES and plan.replicas == 1 and plan.claim
    dep = rendered("state.sqlite", default_replicas=4)
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    (data,) = [v for v in pod["volumes"] if v["name"] == "data"]
    assert data == {"name": "data", "persistentVolumeClaim": {"claimName": "statestore-store"}}
    assert {"name": "data", "mountPath": render.DATA_DIR} in pod["containers"][0]["volumeMounts"]
    assert "topologySpreadConstraints" not in pod
    pvc = scaling.claim(b, plan, OWNER)
    assert "ownerReferences" not in pvc["metadata"]  # kept by default
    assert pvc["metadata"]["annotations"] == {"statestore.dapr.io/component": "store"}
    assert pvc["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    assert scaling.disruption_budget(b, plan, OWNER) is None
    assert scaling.autoscaler(b, plan, OWNER) is None


def test_claim_size_class_and_deletion_come_from_annotations() -> None:
    b, plan = planned(
        "state.sqlite", storage_size="5Gi", storage_class="fast-ssd", storage_on_delete="Delete"
    )
    pvc = scaling.claim(b, plan, OWNER)
    assert pvc["metadata"]["ownerReferences"] == [OWNER]
    assert pvc["spec"]["resources"] == {"requests": {"storage": "5Gi"}}
    assert pvc["spec"]["storageClassName"] == "fast-ssd"


def test_in_memory_is_one_replica_recreated_without_a_claim_and_says_data_is_lost() -> None:
    b, plan = planned("state.in-memory", default_replicas=3)
    assert plan.persistence is Persistence.MEMORY and plan.replicas == 1 and not plan.claim
    dep = rendered("state.in-memory", default_replicas=3)
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    assert all("persistentVolumeClaim" not in v for v in dep["spec"]["template"]["spec"]["volumes"])
    outcome = validation.check(b, None)
    assert outcome.ok and "lost on every restart" in outcome.message


@pytest.mark.parametrize("ctype", ["state.redis", "state.postgresql"])
def test_networked_stores_roll_without_going_below_the_count_and_spread(ctype: str) -> None:
    dep = rendered(ctype, default_replicas=2)
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    (spread,) = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["maxSkew"] == 1
    assert spread["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    # No data volume for a networked store (the working directory is not written).
    assert all(v["name"] != "data" for v in dep["spec"]["template"]["spec"]["volumes"])


def test_replicas_annotation_overrides_the_default_and_a_budget_comes_with_more_than_one() -> None:
    b, one = planned("state.redis", default_replicas=3, replicas="1")
    assert one.replicas == 1 and scaling.disruption_budget(b, one, OWNER) is None
    b, three = planned("state.redis", replicas="3")
    pdb = scaling.disruption_budget(b, three, OWNER)
    assert pdb is not None and pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": naming.selector_labels("store")},
    }
    assert pdb["metadata"]["ownerReferences"] == [OWNER]


def test_autoscaler_from_annotations_and_the_deployment_leaves_replicas_to_it() -> None:
    b, plan = planned("state.redis", autoscale_max_replicas="6", autoscale_target_cpu="60", replicas="2")
    hpa = scaling.autoscaler(b, plan, OWNER)
    assert hpa is not None and hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "statestore-store",
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 6)
    assert spec["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    dep = rendered("state.redis", autoscale_max_replicas="6", autoscale_min_replicas="2")
    assert "replicas" not in dep["spec"]
    assert scaling.disruption_budget(b, plan, OWNER) is not None  # up to six may run
    _, default_cpu = planned("state.redis", autoscale_max_replicas="4")
    assert default_cpu.autoscale == scaling.Autoscale(1, 4, scaling.DEFAULT_TARGET_CPU)


def test_a_stopped_deployment_runs_no_pods_even_with_an_autoscaler() -> None:
    b, plan = planned("state.redis", autoscale_max_replicas="6")
    dep = scaling.shape(render.deployment(b, parse(b), render.PodSettings(image="i")), plan, stopped=True)
    assert dep["spec"]["replicas"] == 0


@pytest.mark.parametrize(
    ("ctype", "annotations", "field", "words"),
    [
        ("state.redis", {"replicas": "0"}, "replicas", "whole number from 1 to 100"),
        ("state.redis", {"replicas": "two"}, "replicas", "whole number"),
        ("state.redis", {"replicas": "101"}, "replicas", "from 1 to 100"),
        ("state.sqlite", {"replicas": "2"}, "replicas", "exactly one replica"),
        ("state.in-memory", {"replicas": "3"}, "replicas", "exactly one replica"),
        ("state.sqlite", {"autoscale_max_replicas": "3"}, "autoscale-max-replicas", "not possible"),
        ("state.sqlite", {"storage_size": "lots"}, "storage-size", "not a positive quantity"),
        ("state.sqlite", {"storage_size": "0"}, "storage-size", "not a positive quantity"),
        ("state.sqlite", {"storage_class": "Not_A_Name"}, "storage-class", "not a StorageClass name"),
        ("state.sqlite", {"storage_on_delete": "maybe"}, "storage-on-delete", "'keep' or 'delete'"),
        ("state.redis", {"autoscale_min_replicas": "2"}, "autoscale-min-replicas", "needs"),
        (
            "state.redis",
            {"autoscale_min_replicas": "5", "autoscale_max_replicas": "3"},
            "autoscale-min-replicas",
            "more than",
        ),
        (
            "state.redis",
            {"autoscale_target_cpu": "0", "autoscale_max_replicas": "3"},
            "autoscale-target-cpu",
            "",
        ),
    ],
)
def test_bad_annotations_are_refused_by_validation_and_admission(
    ctype: str, annotations: dict[str, str], field: str, words: str
) -> None:
    b = body(ctype, **annotations)
    outcome = validation.check(b, None)
    assert not outcome.ok
    assert outcome.reason == validation.INVALID_ANNOTATION
    assert outcome.field == f"statestore.dapr.io/{field}"
    assert f"statestore.dapr.io/{field}" in outcome.message and words in outcome.message
    verdict = admission.review(b, [])
    assert not verdict.allowed and verdict.message == outcome.message


def test_replica_counts_for_the_status() -> None:
    dep = {"spec": {"replicas": 3}, "status": {"readyReplicas": 2, "replicas": 3}}
    assert scaling.replica_counts(dep) == {"replicas": 3, "readyReplicas": 2}
    assert scaling.replica_counts({"spec": {"replicas": 1}, "status": {}}) == {
        "replicas": 1,
        "readyReplicas": 0,
    }


def test_default_replicas_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from statestore_operator import cli

    assert cli.parser().parse_args([]).default_replicas == 1
    assert cli.parser().parse_args(["--default-replicas", "3"]).default_replicas == 3
    for bad in ("0", "101", "two"):
        with pytest.raises(SystemExit) as exited:
            cli.parser().parse_args(["--default-replicas", bad])
        assert exited.value.code == 2
        assert "is not a whole number from 1 to 100" in capsys.readouterr().err
