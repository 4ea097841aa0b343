"""Pure functions of the operator: no cluster needed."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from statestore_operator import actors, admission, conditions, naming, render
from statestore_operator.conditions import Condition
from statestore_operator.reconcile import decide
from statestore_operator.validation import check
from statestore_sidecar.components import ComponentError, parse, secret_env_var, validate

PODS = render.PodSettings(image="img:1")


def body(
    name: str = "store",
    ctype: str = "state.redis",
    metadata: list[dict[str, Any]] | None = None,
    *,
    created: str = "2026-01-01T00:00:00Z",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "generation": 1,
            "creationTimestamp": created,
            **extra.pop("meta", {}),
        },
        "spec": {"type": ctype, "version": "v1", "metadata": metadata or []},
        **extra,
    }


REDIS: list[dict[str, Any]] = [
    {"name": "redisHost", "value": "r:6379"},
    {"name": "redisPassword", "secretKeyRef": {"name": "auth", "key": "pw"}},
]


# --- naming -------------------------------------------------------------------------------------
def test_child_names_are_dns_labels_and_unique_when_shortened() -> None:
    assert naming.child_name("orders") == "statestore-orders"
    assert naming.child_name("my.store") == "statestore-my-store"
    long_a, long_b = "a" * 100 + "x", "a" * 100 + "y"
    assert len(naming.child_name(long_a)) <= 63
    assert naming.child_name(long_a) != naming.child_name(long_b)
    assert len(naming.label_value(long_a)) <= 63


# --- validation ---------------------------------------------------------------------------------
def test_secret_backed_required_value_counts_as_given_and_is_not_type_checked() -> None:
    secret_port = [*REDIS, {"name": "redisPort", "secretKeyRef": {"name": "auth", "key": "port"}}]
    outcome = check(body(metadata=secret_port), {"auth": {"pw", "port"}})
    assert outcome.ok and outcome.reason == "Valid"
    only_secret_host = [{"name": "redisHost", "secretKeyRef": {"name": "auth", "key": "host"}}]
    assert check(body(metadata=only_secret_host), {"auth": {"host"}}).ok


@pytest.mark.parametrize(
    ("metadata", "ctype", "secrets", "reason", "text"),
    [
        ([], "state.nope", {}, "UnsupportedStoreType", "spec.type"),
        ([], "state.redis", {}, "InvalidMetadata", "'redisHost'"),
        (
            [{"name": "redisHost", "value": "h"}, {"name": "redisDB", "value": "x"}],
            "state.redis",
            {},
            "InvalidMetadata",
            "'redisDB'",
        ),
        (REDIS, "state.redis", {}, "SecretNotFound", "Secret 'auth' not found in namespace ns"),
        (REDIS, "state.redis", {"auth": {"other"}}, "SecretKeyNotFound", "no key 'pw'"),
        (
            [{"name": "a", "value": "1"}, {"name": "A", "value": "2"}],
            "state.in-memory",
            {},
            "InvalidMetadata",
            "'A'",
        ),
        ([{"name": "keyPrefix", "value": "a||b"}], "state.in-memory", {}, "InvalidMetadata", "keyPrefix"),
    ],
)
def test_invalid_components_name_the_field(
    metadata: list[dict[str, Any]], ctype: str, secrets: dict[str, set[str] | None], reason: str, text: str
) -> None:
    outcome = check(body(ctype=ctype, metadata=metadata), {k: v for k, v in secrets.items()})
    assert (outcome.ok, outcome.reason) == (False, reason)
    assert text in outcome.message


def test_bad_version_and_missing_type() -> None:
    bad = body()
    bad["spec"]["version"] = "v7"
    assert check(bad, None).reason == "UnsupportedVersion"
    assert "spec.version" in check(bad, None).message
    no_type = body()
    del no_type["spec"]["type"]
    assert check(no_type, None).reason == "InvalidSpec"


def test_unknown_keys_are_warnings_even_when_secret_backed() -> None:
    md: list[dict[str, Any]] = [
        {"name": "colour", "value": "blue"},
        {"name": "shade", "secretKeyRef": {"name": "s"}},
    ]
    outcome = check(body(ctype="state.in-memory", metadata=md), None)
    assert outcome.ok and outcome.reason == "UnknownMetadata"
    assert "'colour'" in outcome.message and "'shade'" in outcome.message


def test_secrets_are_not_checked_at_admission_but_foreign_secret_stores_are_refused() -> None:
    assert check(body(metadata=REDIS), None).ok
    vault = body(metadata=REDIS, auth={"secretStore": "vault"})
    assert check(vault, None).reason == "UnsupportedSecretStore"
    assert check(body(metadata=REDIS, auth={"secretStore": "kubernetes"}), None).ok


def test_components_validate_opaque_is_additive() -> None:
    component = parse(body(metadata=REDIS))
    with pytest.raises(ComponentError, match=r"redisPassword|redisHost"):
        validate(component, {"redisHost": ""})
    assert validate(component, {"redisHost": "h"}, opaque=["redisPassword"]).warnings == ()


# --- actors -------------------------------------------------------------------------------------
ACTOR = [{"name": "ActorStateStore", "value": "yes"}]


@pytest.mark.parametrize("value", ["true", "Y", "on", "1", True])
def test_truthy_actor_flags(value: Any) -> None:
    assert actors.claims_actor_store(
        body(ctype="state.in-memory", metadata=[{"name": "actorStateStore", "value": value}])
    )


def test_non_claims() -> None:
    assert not actors.claims_actor_store(
        body(ctype="state.in-memory", metadata=[{"name": "actorStateStore", "value": "no"}])
    )
    assert not actors.claims_actor_store(body(ctype="pubsub.redis", metadata=ACTOR))
    assert not actors.claims_actor_store(body(ctype="state.nope", metadata=ACTOR))


def test_oldest_then_name_wins() -> None:
    a = actors.ActorStore("2026-01-02T00:00:00Z", "a")
    b = actors.ActorStore("2026-01-01T00:00:00Z", "b")
    c = actors.ActorStore("2026-01-01T00:00:00Z", "c")
    assert actors.winner([a, c, b]) == b
    assert actors.winner([]) is None


def test_admission_review() -> None:
    first = actors.ActorStore("2026-01-01T00:00:00Z", "first", "ns")
    second = body("second", "state.in-memory", ACTOR)
    verdict = admission.review(second, [first])
    assert not verdict.allowed and "'first'" in verdict.message
    assert admission.review(body("first", "state.in-memory", ACTOR), [first]).allowed  # updating itself
    assert admission.review(body("x", "pubsub.kafka", []), [first]).allowed
    assert not admission.review(body("x", "state.redis", []), []).allowed
    warned = admission.review(body("m", "state.in-memory", [{"name": "colour", "value": "x"}]), [])
    assert warned.allowed and "'colour'" in warned.warnings[0]


# --- conditions ---------------------------------------------------------------------------------
def deployment(replicas: int = 1, available: int = 0, updated: int = 1, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "statestore-store", "generation": 2},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 2,
            "updatedReplicas": updated,
            "availableReplicas": available,
            **status,
        },
    }


def test_availability_from_deployment_status() -> None:
    assert conditions.availability(None).reason == "NotDeployed"
    assert conditions.availability(deployment(replicas=0)).reason == "ScaledToZero"
    assert conditions.availability(deployment(available=0)).reason == "Progressing"
    assert conditions.availability(deployment(available=1)).status == "True"
    stale = deployment(available=1)
    stale["status"]["observedGeneration"] = 1
    assert conditions.availability(stale).reason == "Progressing"
    stuck = deployment(
        conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "m"}]
    )
    assert conditions.availability(stuck).reason == "Unavailable"


def test_readiness_names_the_first_obstacle() -> None:
    ok = Condition("Validated", "True", "Valid", "")
    up = Condition("Available", "True", "Available", "")
    down = Condition("Available", "False", "Progressing", "p")
    bad = Condition("Validated", "False", "SecretNotFound", "s")
    assert conditions.readiness(ok, up, None).status == "True"
    assert conditions.readiness(bad, up, None).reason == "SecretNotFound"
    assert conditions.readiness(ok, up, "c").reason == "ActorStateStoreConflict"
    assert conditions.readiness(ok, down, None).reason == "Progressing"


def test_last_transition_time_moves_only_on_status_change() -> None:
    first = conditions.merge([], [Condition("Ready", "False", "Progressing", "a")], 1, "T1")
    same = conditions.merge(first, [Condition("Ready", "False", "Unavailable", "b")], 2, "T2")
    assert same[0]["lastTransitionTime"] == "T1" and same[0]["observedGeneration"] == 2
    flipped = conditions.merge(same, [Condition("Ready", "True", "Available", "c")], 2, "T3")
    assert flipped[0]["lastTransitionTime"] == "T3"
    kept = conditions.merge([{"type": "Other", "status": "True"}], [], 1, "T")
    assert kept == [{"type": "Other", "status": "True"}]


def test_transitions_only_for_changes() -> None:
    cond = Condition("Ready", "False", "Progressing", "a")
    old = conditions.merge([], [cond], 1, "T")
    assert conditions.transitions(old, [cond]) == []
    assert conditions.transitions(old, [Condition("Ready", "True", "Available", "a")])
    assert (
        conditions.event_for(Condition("Validated", "True", "UnknownMetadata", "m"), warnings=True)[0]
        == "Warning"
    )


def test_decide_builds_status_and_is_stable() -> None:
    b = body(ctype="state.in-memory")
    outcome = check(b, {})
    d1 = decide(b, outcome, None, deployment(available=1), "T1")
    assert [c["type"] for c in d1.status["conditions"]] == ["Validated", "Available", "Ready"]
    assert d1.status["endpoint"] == "http://statestore-store.ns.svc:3500"
    assert d1.status["grpcEndpoint"] == "statestore-store.ns.svc:50001"
    assert len(d1.changed) == 3
    b["status"] = d1.status
    d2 = decide(b, outcome, None, deployment(available=1), "T2")
    assert d2.status == d1.status and d2.changed == []


# --- rendering ----------------------------------------------------------------------------------
def _container(dep: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return container


def test_deployment_wires_secrets_by_env_and_keeps_them_out_of_the_configmap() -> None:
    b = body(metadata=REDIS, scopes=["a", "b"])
    component = parse(b)
    dep = render.deployment(b, component, PODS)
    env = {e["name"]: e for e in _container(dep)["env"]}
    assert env[secret_env_var("auth", "pw")]["valueFrom"]["secretKeyRef"] == {"name": "auth", "key": "pw"}
    doc = yaml.safe_load(render.config_map(b)["data"]["component.yaml"])
    assert doc["spec"]["metadata"][1] == {
        "name": "redisPassword",
        "secretKeyRef": {"name": "auth", "key": "pw"},
    }
    assert "scopes" not in doc
    assert dep["metadata"]["ownerReferences"][0]["controller"] is True
    assert _container(dep)["args"][3] == "store"  # app id: no annotation, several scopes -> the name


def test_app_id_choice() -> None:
    assert render.app_id(body(scopes=["checkout"])) == "checkout"
    assert render.app_id(body(meta={"annotations": {naming.APP_ID_ANNOTATION: "x"}}, scopes=["y"])) == "x"


def test_sqlite_gets_a_writable_working_directory() -> None:
    b = body(ctype="state.sqlite", metadata=[{"name": "connectionString", "value": "data.db"}])
    dep = render.deployment(b, parse(b), PODS)
    container = _container(dep)
    assert container["workingDir"] == render.DATA_DIR
    assert any(m["mountPath"] == render.DATA_DIR for m in container["volumeMounts"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_config_hash_follows_the_spec_only() -> None:
    b = body(metadata=REDIS)
    h1 = render.deployment(b, parse(b), PODS)["spec"]["template"]["metadata"]["annotations"]
    b["status"] = {"observedGeneration": 5}
    assert render.deployment(b, parse(b), PODS)["spec"]["template"]["metadata"]["annotations"] == h1
    b["spec"]["metadata"] = [*REDIS, {"name": "redisDB", "value": "3"}]
    assert render.deployment(b, parse(b), PODS)["spec"]["template"]["metadata"]["annotations"] != h1


def test_loser_runs_no_pods() -> None:
    b = body(ctype="state.in-memory", metadata=ACTOR)
    assert render.deployment(b, parse(b), PODS, replicas=0)["spec"]["replicas"] == 0


def test_is_subset() -> None:
    assert render.is_subset({"a": [{"b": 1}]}, {"a": [{"b": 1, "c": 2}], "d": 3})
    assert not render.is_subset({"a": [{"b": 1}]}, {"a": [{"b": 1}, {"b": 2}]})
    assert not render.is_subset({"a": 1}, {})


def test_blocked_by_a_foreign_object() -> None:
    from statestore_operator.children import controlled_by

    b = body(ctype="state.in-memory")
    mine = {"metadata": {"ownerReferences": [render.owner_reference(b)]}}
    theirs = {"metadata": {"ownerReferences": [{**render.owner_reference(b), "uid": "other"}]}}
    assert controlled_by(mine, b) and not controlled_by(theirs, b) and not controlled_by({"metadata": {}}, b)
    d = decide(b, check(b, {}), None, None, "T", blocked="ConfigMap x already exists")
    ready = d.status["conditions"][2]
    assert (ready["status"], ready["reason"]) == ("False", "NameInUse")
    assert "endpoint" not in d.status and "grpcEndpoint" not in d.status


def test_pods_drain_before_they_stop() -> None:
    from statestore_operator import cli as operator_cli
    from statestore_sidecar import cli as sidecar_cli

    b = body(metadata=REDIS)
    args = operator_cli.parser().parse_args(["--pod-drain-seconds", "12"])
    pods = render.PodSettings(image="x", drain_seconds=args.pod_drain_seconds)
    spec = render.deployment(b, parse(b), pods)["spec"]["template"]["spec"]
    container = _container(render.deployment(b, parse(b), pods))
    # The server drains as told, and the kubelet waits for the drain and the stop before SIGKILL.
    assert sidecar_cli.parser().parse_args(container["args"]).drain_seconds == 12
    assert spec["terminationGracePeriodSeconds"] == 12 + render.STOP_SECONDS
    assert operator_cli.parser().parse_args([]).pod_drain_seconds == 5
    for bad in ("-1", "1.5", "3601"):
        with pytest.raises(SystemExit):
            operator_cli.parser().parse_args(["--pod-drain-seconds", bad])
