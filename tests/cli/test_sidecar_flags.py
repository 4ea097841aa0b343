"""Documented behaviours of `statestore-sidecar`'s flags and token (docs/security.md), each observed
from outside the process: what it listens on, what it answers, and what it writes to its log."""

from __future__ import annotations

import secrets
import socket
import textwrap
from pathlib import Path

import httpx

from fixtures.sidecar import free_port, run_cli, sidecar

COMPONENT = textwrap.dedent("""\
    apiVersion: dapr.io/v1alpha1
    kind: Component
    metadata:
      name: mem
    spec:
      type: state.in-memory
      version: v1
      metadata: []
    """)


def resources(tmp_path: Path) -> str:
    (tmp_path / "c.yaml").write_text(COMPONENT)
    return str(tmp_path)


def listening_addresses(port: int) -> list[str]:
    """The IPv4 addresses with a listening TCP socket on `port`, from the kernel's socket table."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.append(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_the_api_listens_on_every_address_by_default(tmp_path: Path) -> None:
    with sidecar(["--resources-path", resources(tmp_path)], listen=None) as url:
        port = int(url.rsplit(":", 1)[1])
        assert listening_addresses(port) == ["0.0.0.0"]
        assert httpx.get(f"{url}/v1.0/healthz").status_code == 204
    with sidecar(["--resources-path", resources(tmp_path)], listen="127.0.0.1") as url:
        assert listening_addresses(int(url.rsplit(":", 1)[1])) == ["127.0.0.1"]


def test_enable_metrics_false_serves_no_metrics(tmp_path: Path) -> None:
    port = free_port()
    args = ["--resources-path", resources(tmp_path), "--metrics-port", str(port)]
    with sidecar(args) as url:
        assert "statestore_http_requests_total" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    with sidecar([*args, "--enable-metrics", "false"]) as url:
        assert httpx.post(f"{url}/v1.0/state/mem", json=[{"key": "k", "value": 1}]).status_code == 204
        assert listening_addresses(port) == []
        try:
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        except httpx.ConnectError:
            pass
        else:
            raise AssertionError(f"something answers on the metrics port {port}")


def test_livez_and_healthz_need_no_token_and_everything_else_does(tmp_path: Path) -> None:
    token = secrets.token_hex(16)
    with sidecar(["--resources-path", resources(tmp_path)], env={"DAPR_API_TOKEN": token}) as url:
        assert httpx.get(f"{url}/livez").status_code == 204
        assert httpx.get(f"{url}/v1.0/healthz").status_code == 204
        for path in ("/v1.0/metadata", "/v1.0/state/mem/k"):
            refused = httpx.get(f"{url}{path}")
            assert (refused.status_code, refused.text) == (401, "invalid api token\n")
        assert httpx.get(f"{url}/v1.0/metadata", headers={"dapr-api-token": token}).status_code == 200


def test_the_token_is_never_logged_nor_shown(tmp_path: Path) -> None:
    token = secrets.token_hex(16)
    log = tmp_path / "log.txt"
    args = ["--resources-path", resources(tmp_path), "--log-level", "debug"]
    with sidecar(args, env={"DAPR_API_TOKEN": token}, log=log) as url:
        good, bad = {"dapr-api-token": token}, {"dapr-api-token": token[:-1]}
        shown = [
            httpx.get(f"{url}/v1.0/metadata", headers=good).text,
            httpx.get(f"{url}/v1.0/metadata", headers=bad).text,
            httpx.post(f"{url}/v1.0/state/mem", json=[{"key": "k", "value": 1}], headers=good).text,
            httpx.post(f"{url}/v1.0/state/mem", content=b"[oops", headers=good).text,
            httpx.get(f"{url}/v1.0/state/mem/k", headers=good).text,
        ]
    text = log.read_text()
    assert "API token required" in text, text[:500]  # the log was written, and speaks of the token
    assert token not in text and token[:-1] not in text
    assert not any(token in body for body in shown)


def test_a_metrics_port_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for workers in ("1", "2"):
            args = ["--resources-path", resources(tmp_path), "--dapr-listen-addresses", "127.0.0.1"]
            args += ["--dapr-http-port", str(free_port()), "--dapr-grpc-port", str(free_port())]
            done = run_cli([*args, "--metrics-port", str(port), "--workers", workers])
            assert done.returncode == 1, done.stderr
            assert "Traceback" not in done.stderr
            lines = done.stderr.strip().splitlines()
            expected = (
                f"statestore-sidecar: error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
            )
            assert lines[-1] == expected
