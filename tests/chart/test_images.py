"""The Dockerfiles, checked by parsing them; tests/images builds and runs them."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from chart_testing import CHART, ROOT

IMAGES = {
    "operator": ROOT / "images" / "operator.Dockerfile",
    "sidecar": ROOT / "images" / "sidecar.Dockerfile",
}
# A version tag of the official slim Debian bookworm Python 3.11 image, e.g. python:3.11.14-slim-bookworm,
# optionally also pinned by digest.
PINNED_BASE = re.compile(r"^(docker\.io/(library/)?)?python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [value for key, value in self.instructions if key == keyword]


def global_args(path: Path) -> dict[str, str]:
    """The ARGs before the first FROM, with their defaults (what FROM lines may refer to)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        keyword, _, value = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            break
        if keyword.upper() == "ARG":
            name, _, default = value.strip().partition("=")
            out[name] = default
    return out


def parse(path: Path) -> list[Stage]:
    """Dockerfile instructions grouped by stage (comments dropped, `\\` continuations joined)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        value = value.strip()
        if keyword == "ARG" and not stages:
            continue  # global, read by global_args()
        if keyword == "FROM":
            parts = value.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        else:
            assert stages, f"{path}: {keyword} before FROM"
            stages[-1].instructions.append((keyword, value))
    return stages


def console_scripts() -> dict[str, str]:
    scripts: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return scripts


@pytest.mark.parametrize("image", IMAGES)
def test_one_base_chosen_by_a_build_argument(image: str) -> None:
    stages = parse(IMAGES[image])
    assert len(stages) >= 2, "multi-stage: build the wheel, then a runtime stage without the sources"
    # By default (published builds) a pinned slim Python from a registry; `make images` passes BASE.
    default = global_args(IMAGES[image])["BASE"]
    assert PINNED_BASE.match(default), f"{default} is not a pinned python:3.11.X-slim-bookworm"
    # Both stages use that base, so the virtualenv's interpreter path exists in the runtime stage.
    assert {s.base for s in stages} == {"${BASE}"}
    build_script = (ROOT / "hack" / "images" / "build.sh").read_text()
    assert '--build-arg "BASE=$base"' in build_script


@pytest.mark.parametrize("image", IMAGES)
def test_runs_as_numeric_non_root_user(image: str) -> None:
    final = parse(IMAGES[image])[-1]
    users = final.all("USER")
    assert users, "the runtime stage must set USER"
    user = users[-1]
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user} must be numeric (runAsNonRoot can verify it)"
    uid = int(user.split(":")[0])
    assert uid != 0
    # The chart's pod security context and the operator's state API pods use the same uid.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == uid
    from statestore_operator import render
    from statestore_sidecar import components

    body = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "s", "namespace": "n", "uid": "u"},
        "spec": {"type": "state.in-memory", "version": "v1", "metadata": []},
    }
    pod = render.deployment(body, components.parse(body), render.PodSettings(image="x"))
    assert pod["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid


@pytest.mark.parametrize("image", IMAGES)
def test_entrypoint_is_the_console_script(image: str) -> None:
    final = parse(IMAGES[image])[-1]
    (entrypoint,) = final.all("ENTRYPOINT")
    command = json.loads(entrypoint)  # exec form: signals reach the process, no shell in between
    script = f"statestore-{image}"
    assert command == [script]
    assert script in console_scripts()
    assert not final.all("CMD"), "arguments come from Kubernetes (the chart or the operator)"


@pytest.mark.parametrize("image", IMAGES)
def test_runtime_stage_holds_only_the_installed_wheel(image: str) -> None:
    stages = parse(IMAGES[image])
    build, final = stages[0], stages[-1]
    # The build stage makes the project's wheel and installs it (runtime dependencies only) in a venv.
    run = " ".join(build.all("RUN"))
    assert "pip wheel --no-deps" in run and "python3 -m venv --without-pip /opt/statestore" in run
    assert re.search(r"pip .*install .*/wheels/\*\.whl", run)
    assert "[test]" not in run and "-e " not in run, "no test extras, no editable install"
    # The runtime stage copies that virtualenv and nothing else: no sources, no compilers, no pip runs.
    copies = final.all("COPY")
    assert copies and all(c.startswith(f"--from={build.name}") for c in copies), copies
    assert not final.all("RUN") and not final.all("ADD")
    env = " ".join(final.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "nothing is written next to the code (read-only root)"
    assert re.search(r"PATH=/opt/statestore/bin", env)


def test_build_context_has_what_the_dockerfiles_copy() -> None:
    ignore = (ROOT / ".dockerignore").read_text().split()
    for path in IMAGES.values():
        for key, value in parse(path)[0].instructions:
            if key != "COPY" or value.startswith("--from"):
                continue
            for source in value.split()[:-1]:
                assert f"!{source.rstrip('/')}" in [i.rstrip("/") for i in ignore], f"{source} is ignored"
                assert (ROOT / source).exists()


def test_sidecar_image_serves_the_probed_ports() -> None:
    """The operator's Deployments probe /v1.0/healthz and /livez on 3500; the image exposes it."""
    from statestore_operator import naming

    exposed = parse(IMAGES["sidecar"])[-1].all("EXPOSE")[0].split()
    assert str(naming.HTTP_PORT) in exposed and str(naming.METRICS_PORT) in exposed
    text = IMAGES["sidecar"].read_text()
    assert "/v1.0/healthz" in text and "/livez" in text, "health checks are documented"


def test_operator_image_exposes_the_charts_ports() -> None:
    exposed = set(parse(IMAGES["operator"])[-1].all("EXPOSE")[0].split())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    wanted = {values["liveness"]["port"], values["metrics"]["port"], values["webhook"]["port"]}
    assert {str(p) for p in wanted} <= exposed
