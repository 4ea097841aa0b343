"""The command line and the in-cluster webhook clientConfig (no cluster needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fixtures.sidecar import free_port
from statestore_operator import cli
from statestore_operator.handlers import ServiceWebhookServer

BIN = Path(sys.executable).parent


def test_help_lists_the_flags() -> None:
    out = subprocess.run(
        [str(BIN / "statestore-operator"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in (
        "--namespace",
        "--all-namespaces",
        "--image",
        "--webhook-cert",
        "--liveness",
        "--metrics-port",
        "--app-id-label",
        "--pod-cpu-request",
        "--pod-memory-limit",
        "--webhook-cert-reload-seconds",
        "--default-replicas",
        "--inject-sidecar-kind",
    ):
        assert flag in out


def test_sidecar_kind_is_one_of_three() -> None:
    assert cli.parser().parse_args([]).inject_sidecar_kind == "auto"
    assert cli.parser().parse_args(["--inject-sidecar-kind", "ordinary"]).inject_sidecar_kind == "ordinary"
    refused = subprocess.run(
        [str(BIN / "statestore-operator"), "--inject-sidecar-kind", "sometimes"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert "--inject-sidecar-kind: invalid choice: 'sometimes'" in refused.stderr
    assert all(kind in refused.stderr.rsplit("choose from", 1)[1] for kind in ("auto", "native", "ordinary"))


def test_image_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATESTORE_IMAGE", "registry.example/state:9")
    assert cli.parser().parse_args([]).image == "registry.example/state:9"
    assert cli.parser().parse_args(["--image", "x:1"]).image == "x:1"


def test_namespaces_and_all_namespaces_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.parser().parse_args(["-n", "a", "-n", "b"]).namespace == ["a", "b"]
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["-n", "a", "-A"])
    capsys.readouterr()


def test_empty_webhook_config_name_means_serve_only() -> None:
    # The Helm chart installs its own ValidatingWebhookConfiguration and passes an empty name.
    assert cli.parser().parse_args(["--webhook-config-name="]).webhook_config_name == ""


@pytest.mark.parametrize(
    "args",
    [
        ["--webhook-cert", "c.pem"],
        ["--webhook-cert", "c.pem", "--webhook-key", "k.pem", "--webhook-config-name", "two.parts"],
    ],
)
def test_bad_webhook_flags_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(args) == 2
    capsys.readouterr()


async def test_service_client_config() -> None:
    server = ServiceWebhookServer(
        service="ops/statestore-operator:8443", addr="127.0.0.1", port=free_port(), insecure=True
    )

    async def fn(*_: Any, **__: Any) -> Any:
        return {}

    configs = server(fn)
    config = await configs.__anext__()
    await configs.aclose()
    assert config == {
        "service": {"namespace": "ops", "name": "statestore-operator", "port": 8443, "path": ""}
    }
