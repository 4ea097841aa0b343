"""The Deployment the operator renders really serves state: its command, args, env and ConfigMap,
run as a local process the way the kubelet would run the container, against a real Redis, to an HTTP
client and to the official Python SDK over gRPC (configured as an app would be, from the status)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from operator_testing import Kube, Operator, container_env, without

from fixtures.backends import RedisServer
from fixtures.sdk import sdk_client
from fixtures.sidecar import sidecar_process

pytestmark = [pytest.mark.k8s, pytest.mark.backends]


def test_rendered_deployment_serves_state_from_redis(
    kube: Kube, operator: Operator, redis_server: RedisServer, tmp_path: Path
) -> None:
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "redis-auth"},
            "stringData": {"password": redis_server.password},
        }
    )
    kube.apply(
        {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": "orders"},
            "spec": {
                "type": "state.redis",
                "version": "v1",
                "metadata": [
                    {"name": "redisHost", "value": f"{redis_server.host}:{redis_server.port}"},
                    {"name": "redisPassword", "secretKeyRef": {"name": "redis-auth", "key": "password"}},
                ],
            },
        }
    )
    kube.wait_condition("orders", "Validated", "True", "Valid")
    deploy = kube.must_get("deployment", "statestore-orders")
    cm = kube.must_get("configmap", "statestore-orders")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The ConfigMap volume, as the kubelet would project it.
    (volume,) = [v for v in pod["volumes"] if v["name"] == "components"]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "components"]
    folder = tmp_path / "components"
    folder.mkdir()
    for key, text in cm["data"].items():
        (folder / key).write_text(text)
    assert redis_server.password not in json.dumps(cm)  # the secret travels by env only
    assert container["command"] == ["statestore-sidecar"]
    args = [folder.as_posix() if a == mount["mountPath"] else a for a in container["args"]]
    # The gRPC port the Service routes to is the one the server is told to listen on.
    service = kube.must_get("service", "statestore-orders")
    (grpc_port,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc_port["appProtocol"] == "grpc"
    (container_port,) = [p for p in container["ports"] if p["name"] == grpc_port["targetPort"]]
    assert args[args.index("--dapr-grpc-port") + 1] == str(container_port["containerPort"])
    kube.wait_condition("orders", "Available", "False", "Progressing")  # status written with the Deployment
    status = kube.must_get("components.dapr.io", "orders")["status"]
    assert status["grpcEndpoint"] == f"statestore-orders.{kube.ns}.svc:{grpc_port['port']}"
    # A pod has its own network namespace; locally the helper picks free ports instead.
    args = without(args, "--dapr-http-port", "--dapr-grpc-port", "--metrics-port")
    env = container_env(kube, container["env"])
    with sidecar_process(args, env) as server:
        url = server.url
        saved = httpx.post(f"{url}/v1.0/state/orders", json=[{"key": "o-1", "value": {"qty": 3}}])
        assert saved.status_code == 204, saved.text
        got = httpx.get(f"{url}/v1.0/state/orders/o-1")
        assert got.status_code == 200 and got.json() == {"qty": 3}
        assert got.headers.get("etag")
        health = httpx.get(f"{url}/v1.0/healthz")
        assert health.status_code == 204
        with sdk_client(server) as client:
            assert json.loads(client.get_state("orders", "o-1").data) == {"qty": 3}
            client.save_state("orders", "o-2", json.dumps({"qty": 5}))
            etag = client.get_state("orders", "o-2").etag
            assert etag
            assert [c.name for c in client.get_metadata().registered_components] == ["orders"]
        assert httpx.get(f"{url}/v1.0/state/orders/o-2").json() == {"qty": 5}
    # It is in the real Redis, under the app id the operator chose (the Component's name).
    assert redis_server.command("EXISTS", "orders||o-1") == b":1\r\n"
    assert redis_server.command("EXISTS", "orders||o-2") == b":1\r\n"
