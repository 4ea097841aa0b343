"""`make kind-deploy` ends with `kubectl apply -f examples/`: each example must then serve.

There is no kubelet here, so each example's pod is run the way the kubelet would run the container the
operator renders for it (render.py and scaling.py: the same args, the ConfigMap as files, the data
claim or an emptyDir as a directory), and must become ready (`/v1.0/healthz` 204, what its
readinessProbe asks) and serve state; on a claim, what it saved is still there after a restart.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from chart_testing import CHART, example_components

from fixtures.sidecar import sidecar


def _without(args: list[str], *flags: str) -> list[str]:
    out: list[str] = []
    skip = False
    for item in args:
        if skip:
            skip = False
        elif item in flags:
            skip = True
        else:
            out.append(item)
    return out


@pytest.mark.parametrize(
    "example",
    [c["metadata"]["name"] for c in example_components()],
)
def test_example_serves_in_its_rendered_pod(example: str, tmp_path: Path) -> None:
    from statestore_operator import render, scaling
    from statestore_sidecar import components

    (body,) = [copy.deepcopy(c) for c in example_components() if c["metadata"]["name"] == example]
    body["metadata"].update(namespace="default", uid="00000000-0000-0000-0000-000000000000")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    image = f"{values['stateApi']['image']['repository']}:{yaml.safe_load((CHART / 'Chart.yaml').read_text())['appVersion']}"
    parsed = components.parse(body)
    plan = scaling.plan(body, parsed)
    deployment = scaling.shape(render.deployment(body, parsed, render.PodSettings(image=image)), plan)
    config_map = render.config_map(body)
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1.0/healthz"

    # Volumes as the kubelet projects them: the ConfigMap as files, emptyDirs and a new claim's volume
    # as empty directories.
    mounts: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        local = tmp_path / mount["name"]
        local.mkdir()
        if "configMap" in volume:
            for key, text in config_map["data"].items():
                (local / key).write_text(text)
        mounts[mount["mountPath"]] = local
    args = [str(mounts.get(a, a)) for a in container["args"]]
    # A pod has its own network namespace; locally the helper picks free ports instead.
    args = _without(args, "--dapr-http-port", "--dapr-grpc-port", "--metrics-port")
    env = {"NAMESPACE": "default"}
    assert all(e["name"] == "NAMESPACE" for e in container["env"]), "examples must not need Secrets"
    # The image's WORKDIR is read-only in the pod; a pod that sets workingDir gets that volume.
    workdir = mounts[container["workingDir"]] if "workingDir" in container else tmp_path / "image-workdir"
    workdir.mkdir(exist_ok=True)
    log = tmp_path / "sidecar.log"
    try:
        with sidecar(args, env, cwd=workdir, log=log) as url:
            saved = httpx.post(f"{url}/v1.0/state/{example}", json=[{"key": "k", "value": {"n": 1}}])
            assert saved.status_code == 204, saved.text
            assert httpx.get(f"{url}/v1.0/state/{example}/k").json() == {"n": 1}
        if plan.claim:
            # A new pod (a rollout, a node drain) gets fresh emptyDirs but the same claim: the data stays.
            for volume in pod["volumes"]:
                if "emptyDir" in volume:
                    shutil.rmtree(tmp_path / volume["name"])
                    (tmp_path / volume["name"]).mkdir()
            with sidecar(args, env, cwd=workdir, log=log) as url:
                assert httpx.get(f"{url}/v1.0/state/{example}/k").json() == {"n": 1}
    except (TimeoutError, RuntimeError) as exc:
        pytest.fail(f"{example} does not serve in its pod: {exc}\n{log.read_text()[-3000:]}")
