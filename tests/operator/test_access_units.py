"""API tokens and scopes (NetworkPolicy) as pure functions: no cluster needed."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from statestore_operator import access, admission, cli, render
from statestore_operator.reconcile import decide
from statestore_operator.validation import check

PODS = render.PodSettings(image="img:1")


def body(
    name: str = "store",
    annotations: dict[str, str] | None = None,
    scopes: Any = None,
    metadata: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "generation": 1,
            "annotations": annotations or {},
        },
        "spec": {"type": "state.in-memory", "version": "v1", "metadata": metadata or []},
    }
    if scopes is not None:
        doc["scopes"] = scopes
    return doc


GENERATE = {access.API_TOKEN_ANNOTATION: "generate"}


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def template_hash(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["metadata"]["annotations"]["statestore.dapr.io/config-hash"])


# --- the API token -----------------------------------------------------------------------------------


def test_no_annotation_no_token() -> None:
    outcome = check(body(), {})
    assert outcome.ok and outcome.token is None
    assert outcome.component is not None
    assert access.TOKEN_ENV not in env_of(render.deployment(body(), outcome.component, PODS))


def test_generated_token_source() -> None:
    outcome = check(body(annotations=GENERATE), {})
    assert outcome.ok
    assert outcome.token == access.TokenSource("statestore-store-api-token", "token", generated=True)
    # Case and spaces do not matter, as with other annotation values people type.
    assert access.token_source(body(annotations={access.API_TOKEN_ANNOTATION: " Generate "})) == outcome.token


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("my-token", access.TokenSource("my-token", "token")),
        ("my-token/api", access.TokenSource("my-token", "api")),
        ("shared.tokens/app_1.key", access.TokenSource("shared.tokens", "app_1.key")),
    ],
)
def test_named_token_source(value: str, expected: access.TokenSource) -> None:
    assert access.token_source(body(annotations={access.API_TOKEN_SECRET_ANNOTATION: value})) == expected


@pytest.mark.parametrize(
    "annotations",
    [
        {access.API_TOKEN_ANNOTATION: "true"},
        {access.API_TOKEN_ANNOTATION: ""},
        {access.API_TOKEN_SECRET_ANNOTATION: ""},
        {access.API_TOKEN_SECRET_ANNOTATION: "Upper"},
        {access.API_TOKEN_SECRET_ANNOTATION: "name/"},
        {access.API_TOKEN_SECRET_ANNOTATION: "a/b/c"},
        {access.API_TOKEN_SECRET_ANNOTATION: "a b"},
        {access.API_TOKEN_ANNOTATION: "generate", access.API_TOKEN_SECRET_ANNOTATION: "mine"},
    ],
)
def test_bad_token_annotations_are_invalid_spec_and_refused_at_admission(annotations: dict[str, str]) -> None:
    outcome = check(body(annotations=annotations), {})
    assert not outcome.ok and outcome.reason == "InvalidSpec"
    assert "statestore.dapr.io/api-token" in outcome.message
    verdict = admission.review(body(annotations=annotations), [])
    assert not verdict.allowed and verdict.message == outcome.message


def test_named_token_secret_is_checked_like_other_secret_refs() -> None:
    named = body(annotations={access.API_TOKEN_SECRET_ANNOTATION: "tok/api"})
    missing = check(named, {})
    assert (missing.ok, missing.reason) == (False, "SecretNotFound")
    assert "'tok'" in missing.message and "api-token-secret" in missing.message
    no_key = check(named, {"tok": {"token"}})
    assert (no_key.ok, no_key.reason) == (False, "SecretKeyNotFound")
    assert "'api'" in no_key.message
    assert check(named, {"tok": {"api"}}).ok
    # At admission the Secret is not looked up (it may be applied after the Component).
    assert admission.review(named, []).allowed


def test_token_reaches_the_pods_by_secret_ref_only() -> None:
    for marks, ref in [
        (GENERATE, {"name": "statestore-store-api-token", "key": "token"}),
        ({access.API_TOKEN_SECRET_ANNOTATION: "tok/api"}, {"name": "tok", "key": "api"}),
    ]:
        doc = body(annotations=marks)
        outcome = check(doc, {"tok": {"api"}})
        assert outcome.component is not None
        deployment = render.deployment(doc, outcome.component, PODS, token=outcome.token)
        assert env_of(deployment)[access.TOKEN_ENV] == {
            "name": access.TOKEN_ENV,
            "valueFrom": {"secretKeyRef": ref},
        }
        assert "DAPR_API_TOKEN" not in str(render.config_map(doc))


def test_pod_template_hash_follows_the_token_source() -> None:
    doc = body()
    outcome = check(doc, {})
    assert outcome.component is not None
    component = outcome.component
    hashes = {
        template_hash(render.deployment(doc, component, PODS)),
        template_hash(
            render.deployment(
                doc, component, PODS, token=access.TokenSource("a", "token"), token_secret_uid=""
            )
        ),
        template_hash(render.deployment(doc, component, PODS, token=access.TokenSource("a", "other"))),
        template_hash(render.deployment(doc, component, PODS, token=access.TokenSource("b", "token"))),
        template_hash(
            render.deployment(
                doc, component, PODS, token=access.TokenSource("a", generated=True), token_secret_uid="u1"
            )
        ),
        # A re-created generated Secret (a rotation) has a new uid: the pods roll onto the new token.
        template_hash(
            render.deployment(
                doc, component, PODS, token=access.TokenSource("a", generated=True), token_secret_uid="u2"
            )
        ),
    }
    assert len(hashes) == 6
    # Without a token the hash is the one the operator rendered before tokens existed (a literal,
    # computed by that version for this Component): upgrading the operator rolls no pods.
    assert template_hash(render.deployment(doc, component, PODS)) == "f9abe1a57e4d3c27"


def test_generated_secret() -> None:
    first, second = access.new_token(), access.new_token()
    assert first != second and len(first) == 43  # 32 bytes, URL-safe base64 without padding
    assert set(first) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    secret = render.token_secret(body(), first)
    assert secret["metadata"]["name"] == "statestore-store-api-token"
    assert secret["metadata"]["namespace"] == "ns"
    assert secret["type"] == "Opaque"
    assert base64.b64decode(secret["data"]["token"]).decode() == first
    (owner,) = secret["metadata"]["ownerReferences"]
    assert owner["uid"] == "uid-store" and owner["controller"] is True


def test_blocked_reason_is_reported() -> None:
    doc = body()
    decision = decide(
        doc, check(doc, {}), None, None, "2026-01-01T00:00:00Z", blocked="no key", blocked_reason="X"
    )
    available = next(c for c in decision.status["conditions"] if c["type"] == "Available")
    assert (available["status"], available["reason"], available["message"]) == ("False", "X", "no key")


# --- scopes: the NetworkPolicy ---------------------------------------------------------------------


def test_no_scopes_no_policy() -> None:
    assert render.network_policy(body()) is None
    assert render.network_policy(body(scopes=[])) is None


def test_scopes_become_a_policy_on_the_api_port() -> None:
    policy = render.network_policy(body(scopes=["orders", "checkout", "orders"]))
    assert policy is not None
    assert policy["apiVersion"] == "networking.k8s.io/v1" and policy["kind"] == "NetworkPolicy"
    assert policy["metadata"]["name"] == "statestore-store"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-store"
    spec = policy["spec"]
    assert spec["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "statestore", "app.kubernetes.io/instance": "store"}
    }
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    # No namespaceSelector: same namespace only. Sorted and without duplicates: a stable object.
    assert rule["from"] == [
        {
            "podSelector": {
                "matchExpressions": [
                    {"key": "dapr.io/app-id", "operator": "In", "values": ["checkout", "orders"]}
                ]
            }
        }
    ]
    # Only the API port: the metrics port is not admitted.
    assert rule["ports"] == [{"protocol": "TCP", "port": 3500}, {"protocol": "TCP", "port": 50001}]


def test_app_id_label_is_configurable() -> None:
    policy = render.network_policy(body(scopes=["a"]), "example.com/app")
    assert policy is not None
    expression = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]
    assert expression["key"] == "example.com/app"


@pytest.mark.parametrize("scopes", [["ok", "not ok"], ["x" * 64], ["-dash"], [7], "orders"])
def test_scopes_that_no_pod_label_can_hold_are_invalid(scopes: Any) -> None:
    outcome = check(body(scopes=scopes), {})
    assert not outcome.ok and outcome.reason == "InvalidSpec"
    assert outcome.message.startswith("scopes")
    assert not admission.review(body(scopes=scopes), []).allowed


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("dapr.io/app-id", True),
        ("app", True),
        ("example.com/app.id_1", True),
        ("", False),
        ("/app", False),
        ("Example.com/app", False),
        ("dapr.io/", False),
        ("a/b/c", False),
        ("x" * 64, False),
    ],
)
def test_label_keys(key: str, ok: bool) -> None:
    assert access.is_label_key(key) is ok


def test_app_id_label_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.parser().parse_args([]).app_id_label == "dapr.io/app-id"
    assert cli.parser().parse_args(["--app-id-label", "app"]).app_id_label == "app"
    assert cli.main(["--app-id-label", "not a label"]) == 2
    assert "--app-id-label" in capsys.readouterr().err


# --- pod resources -----------------------------------------------------------------------------------


def test_resources_flags() -> None:
    args = cli.parser().parse_args([])
    assert cli.resources(args) == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"memory": "256Mi"},
    }
    assert cli.resources(args) == render.PodSettings(image="x").resources
    args = cli.parser().parse_args(
        [
            "--pod-cpu-request",
            "",
            "--pod-memory-request",
            "1Gi",
            "--pod-cpu-limit",
            "2",
            "--pod-memory-limit",
            "",
        ]
    )
    assert cli.resources(args) == {"requests": {"memory": "1Gi"}, "limits": {"cpu": "2"}}


@pytest.mark.parametrize(
    "argv",
    [
        ["--pod-cpu-request", "lots"],
        ["--pod-memory-limit", "64MB"],
        ["--pod-cpu-request", "2", "--pod-cpu-limit", "1500m"],
        ["--pod-memory-request", "1Gi", "--pod-memory-limit", "512Mi"],
    ],
)
def test_bad_resources_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    if argv[1] in ("lots", "64MB"):
        with pytest.raises(SystemExit):  # argparse refuses the value itself
            cli.main(argv)
    else:
        assert cli.main(argv) == 2
    assert "--pod-" in capsys.readouterr().err


def test_resources_compare_by_value() -> None:
    from statestore_operator import quantities

    assert quantities.value("64Mi") == 64 * 1024**2
    assert quantities.value("1e3") == quantities.value("1k") == quantities.value("1000") == 1000
    assert quantities.value("2Ei") == 2 * 1024.0**6
    assert quantities.same("1000", "1k") and quantities.same("0.5", "500m")
    assert not quantities.same("1", "1k")
    container = {"resources": {"requests": {"cpu": "1000", "memory": "64Mi"}}}
    server = {"resources": {"requests": {"cpu": "1k", "memory": "64Mi"}}, "other": 1}
    assert render.is_subset(container, server)
    # A dropped limit is a difference (the server's map has a key we no longer want).
    assert not render.is_subset(
        {"resources": {"limits": {"memory": "1Gi"}}},
        {"resources": {"limits": {"memory": "1Gi", "cpu": "1"}}},
    )
    # Elsewhere, text is text.
    assert not render.is_subset({"args": ["1000"]}, {"args": ["1k"]})
