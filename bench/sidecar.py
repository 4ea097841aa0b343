"""The server under test, `statestore-sidecar`, as a real process, and where it and the load run."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from statestore_testing.ports import free_port

from . import targets as t
from .backends import Backend

# The server alone on core 0; the load generators and the database servers on core 1.
SERVER_CORE = "0"
CLIENT_CORES = {1}
SIDECAR = Path(sys.executable).parent / "statestore-sidecar"


class Sidecar:
    """`statestore-sidecar` as a real process on SERVER_CORE, serving one Component."""

    def __init__(self, backend: Backend, workdir: Path, workers: int) -> None:
        self.resources = workdir / "components"
        self.resources.mkdir(parents=True, exist_ok=True)
        component = {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": t.STORE},
            "spec": {
                "type": backend.component_type,
                "version": "v1",
                "metadata": [{"name": k, "value": v} for k, v in backend.metadata.items()],
            },
        }
        (self.resources / f"{backend.name}.yaml").write_text(yaml.safe_dump(component))
        self.port = free_port()
        self.grpc_port = free_port()
        self.log = workdir / f"sidecar-{backend.name}.log"
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            str(SIDECAR), "--resources-path", str(self.resources), "--app-id", t.APP_ID,
            "--dapr-http-port", str(self.port), "--dapr-grpc-port", str(self.grpc_port),
            "--dapr-listen-addresses", "127.0.0.1",
            "--metrics-port", str(free_port()), "--log-level", "warn",
        ]  # fmt: skip
        if self.workers != 1:
            command += ["--workers", str(self.workers)]
        if (os.cpu_count() or 1) > 1:
            command = ["taskset", "-c", SERVER_CORE, *command]
        env = dict(os.environ)
        if os.environ.get("BENCH_SIDECAR_PYTHONPATH"):
            # A/B runs: the sidecar imports another checkout's code (the bench itself is unchanged).
            env["PYTHONPATH"] = os.environ["BENCH_SIDECAR_PYTHONPATH"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"statestore-sidecar exited with {self.process.returncode}:\n{self.log.read_text()}"
                )
            with contextlib.suppress(OSError):
                if request("127.0.0.1", self.port, "GET", "/v1.0/healthz")[0] == 204:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"statestore-sidecar not ready in 60 s:\n{self.log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def request(host: str, port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
