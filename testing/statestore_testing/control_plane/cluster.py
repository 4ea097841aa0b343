"""A real, local Kubernetes control plane for tests and local runs (no container engine, no mocks).

Runs etcd, kube-apiserver and kube-controller-manager (plus, optionally, kube-scheduler and kwok so Pods
become Running/Ready on a fake node) as plain processes on free loopback ports, with TLS everywhere and
client-certificate authentication. The binaries come from `hack/k8s/build.sh`.

    with ControlPlane(workdir) as cp:
        cp.kubectl("get", "ns")

One class, kept whole: starting, probing and stopping share its process list and paths.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from statestore_testing.control_plane.binaries import (
    APISERVER,
    CONTROLLER_MANAGER,
    ETCD,
    FAKE_NODE,
    KWOK,
    SCHEDULER,
    default_bin_dir,
    pinned_versions,
)
from statestore_testing.control_plane.kubeconfig import write_kubeconfig
from statestore_testing.control_plane.processes import (
    Proc,
    die_with_parent,
    is_zombie,
    pid_runs,
    tail,
    terminate,
)
from statestore_testing.pki import CertificateAuthority, key_pem, write_private
from statestore_testing.ports import free_port
from statestore_testing.processes import stop_process

# A readiness probe: (done, description of what it saw).
_Probe = Callable[[], tuple[bool, str]]


class ControlPlaneError(RuntimeError):
    """The control plane could not be started, or a command against it failed."""


class KubectlError(ControlPlaneError):
    """kubectl exited non-zero; the message carries its stderr."""

    def __init__(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        super().__init__(
            f"kubectl {' '.join(args)} failed with exit code {result.returncode}:\n"
            f"{result.stderr.strip() or result.stdout.strip()}"
        )


# --- the control plane ----------------------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager (+ kube-scheduler + kwok) on loopback.

    Everything lives under ``workdir``: ``kubeconfig`` (admin, group system:masters), ``pki/``, ``etcd/``,
    ``logs/<process>.log`` and ``state.json`` (pids and ports, so another process can stop it).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        bin_dir: Path | None = None,
        kwok: bool = True,
        die_with_parent: bool = True,
    ) -> None:
        self.workdir = workdir.resolve()
        self.bin_dir = (bin_dir or default_bin_dir()).resolve()
        self.kwok_enabled = kwok
        self.die_with_parent = die_with_parent
        self.version = pinned_versions()["K8S_VERSION"]
        self.pki_dir = self.workdir / "pki"
        self.logs_dir = self.workdir / "logs"
        self.etcd_dir = self.workdir / "etcd"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.state_file = self.workdir / "state.json"
        self.ca_cert = self.pki_dir / "ca.crt"
        self.ca_key = self.pki_dir / "ca.key"
        self.admin_cert = self.pki_dir / "admin.crt"
        self.admin_key = self.pki_dir / "admin.key"
        self.admin_user = "statestore-admin"
        self.admin_groups: tuple[str, ...] = ("system:masters",)
        self.api_port = 0
        self.etcd_port = 0
        self._procs: list[Proc] = []
        self._args: dict[str, list[str]] = {}  # each process's arguments, to start it again

    # -- public API --

    @property
    def server(self) -> str:
        """The API server URL, e.g. https://127.0.0.1:41234."""
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca(self) -> CertificateAuthority:
        """The cluster CA: it signed the API server's serving cert and verifies client certs."""
        return CertificateAuthority(self.ca_cert, self.ca_key)

    def binary(self, name: str) -> Path:
        return self.bin_dir / name

    def missing_binaries(self) -> list[str]:
        names = [ETCD, APISERVER, CONTROLLER_MANAGER, "kubectl"]
        if self.kwok_enabled:
            names += [SCHEDULER, KWOK]
        missing = [n for n in names if not os.access(self.binary(n), os.X_OK)]
        if self.kwok_enabled and not self.binary("kwok-stages.yaml").is_file():
            missing.append("kwok-stages.yaml")
        return missing

    def start(self, *, timeout: float = 120.0, wait_for_controllers: bool = True) -> ControlPlane:
        """Start everything; return once /readyz is ok (and, by default, controller-manager works)."""
        if missing := self.missing_binaries():
            raise ControlPlaneError(
                f"missing binaries in {self.bin_dir}: {', '.join(missing)}; run `bash hack/k8s/build.sh`"
            )
        if self._procs:
            raise ControlPlaneError("already started")
        try:
            self._start(timeout, wait_for_controllers)
        except BaseException:
            self.stop(remove_data=False)  # keep the logs the error message points at
            raise
        return self

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """os.environ with KUBECONFIG pointing at the admin kubeconfig (for subprocesses, kopf, helm)."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def stop(self, *, remove_data: bool = True) -> None:
        """Stop every process this control plane started (reverse order) and delete its data."""
        procs = self._procs or self._load_state()
        for proc in reversed(procs):
            if proc.popen is not None:
                stop_process(proc.popen)
            else:
                terminate(proc.pid, proc.binary)
        self._procs = []
        if remove_data:
            for path in (self.etcd_dir, self.pki_dir, self.logs_dir, self.workdir / "kubectl-cache"):
                shutil.rmtree(path, ignore_errors=True)
            for path in (self.kubeconfig, self.state_file, *self.workdir.glob("*.kubeconfig")):
                path.unlink(missing_ok=True)

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver alone (SIGTERM, SIGKILL after 15 s); etcd and its data stay, and the
        controllers, the scheduler and kwok keep running (they retry until it is back)."""
        (proc,) = [p for p in self._procs if p.name == APISERVER]
        assert proc.popen is not None, "only a control plane started by this object can stop its API server"
        stop_process(proc.popen)

    def start_apiserver(self, *, timeout: float = 60.0) -> None:
        """Start kube-apiserver again after stop_apiserver(): same arguments, same port, same etcd
        data, same certificates (so kubeconfigs and clients keep working); return once /readyz is ok."""
        index = next(i for i, p in enumerate(self._procs) if p.name == APISERVER)
        old = self._procs.pop(index)
        assert old.popen is not None and old.popen.poll() is not None, "the API server is still running"
        self._spawn(APISERVER, self._args[APISERVER])
        self._procs.insert(index, self._procs.pop())  # keep the stop order
        self._save_state()
        self._wait_until("kube-apiserver /readyz", lambda: self._probe_get("/readyz"), timeout)

    def restart_apiserver(self, *, down: float = 0.0, timeout: float = 60.0) -> None:
        """stop_apiserver(), `down` seconds without it, start_apiserver()."""
        self.stop_apiserver()
        time.sleep(down)
        self.start_apiserver(timeout=timeout)

    def is_ready(self) -> bool:
        try:
            return self._get("/readyz", timeout=2) == (200, "ok")
        except (OSError, ssl.SSLError):
            return False

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        kubeconfig: Path | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (admin unless ``kubeconfig`` is given).

        Raises KubectlError (with stderr) on a non-zero exit unless ``check=False``.
        """
        cmd = [str(self.binary("kubectl")), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        # Keep kubectl's discovery cache with the cluster instead of ~/.kube/cache.
        env["KUBECACHEDIR"] = str(self.workdir / "kubectl-cache")
        result = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(args, result)
        return result

    def kubectl_json(self, *args: str, kubeconfig: Path | None = None) -> dict[str, Any]:
        """``kubectl <args> -o json``, parsed."""
        out = self.kubectl(*args, "-o", "json", kubeconfig=kubeconfig).stdout
        data: dict[str, Any] = json.loads(out)
        return data

    def apply(self, manifest: str | Mapping[str, object], *, namespace: str | None = None) -> str:
        """``kubectl apply -f -`` with a YAML/JSON string or a dict; returns kubectl's stdout."""
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("apply", *ns, "-f", "-", input=text).stdout

    def user_kubeconfig(self, name: str, *, groups: Sequence[str] = (), token: str | None = None) -> Path:
        """A kubeconfig for another identity: a bearer ``token`` (e.g. from ``kubectl create token``),
        or else a client certificate for user ``name`` in ``groups`` signed by the cluster CA."""
        path = self.workdir / f"{name.replace(':', '_')}.kubeconfig"
        if token is not None:
            return write_kubeconfig(path, server=self.server, ca_cert=self.ca_cert, user=name, token=token)
        cert, key = self.ca.issue(
            self.pki_dir,
            f"user-{name.replace(':', '_')}",
            common_name=name,
            organizations=groups,
            client=True,
        )
        return write_kubeconfig(
            path, server=self.server, ca_cert=self.ca_cert, user=name, client_cert=cert, client_key=key
        )

    def ssl_context(self, *, client_cert: bool = True) -> ssl.SSLContext:
        """An SSL context trusting the cluster CA, presenting the admin cert unless told otherwise."""
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        if client_cert:
            ctx.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        return ctx

    def log_path(self, process: str) -> Path:
        return self.logs_dir / f"{process}.log"

    # -- internals --

    def _get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        req = urllib.request.Request(self.server + path)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")

    def _spawn(self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> Proc:
        binary = str(self.binary(name))
        log = self.log_path(name)
        self._args[name] = list(args)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [binary, *args],
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                # Own session: a Ctrl-C in the terminal that ran `up` must not kill the cluster.
                start_new_session=True,
                preexec_fn=die_with_parent if self.die_with_parent else None,  # noqa: PLW1509
            )
        proc = Proc(name, binary, popen.pid, log, popen)
        self._procs.append(proc)
        self._save_state()
        return proc

    def _wait_until(self, what: str, probe: _Probe, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.popen is not None and proc.popen.poll() is not None:
                    raise ControlPlaneError(
                        f"{proc.name} exited with code {proc.popen.returncode} while waiting for {what}; "
                        f"last lines of {proc.log}:\n{tail(proc.log)}"
                    )
            try:
                done, last = probe()
            except (OSError, ssl.SSLError, subprocess.SubprocessError) as err:
                done, last = False, repr(err)
            if done:
                return
            time.sleep(0.1)
        logs = "\n".join(f"--- {p.log}:\n{tail(p.log, 15)}" for p in self._procs)
        raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last})\n{logs}")

    def _start(self, timeout: float, wait_for_controllers: bool) -> None:
        for path in (self.etcd_dir, self.pki_dir, self.logs_dir):
            shutil.rmtree(path, ignore_errors=True)
        self.etcd_dir.mkdir(parents=True)
        self.logs_dir.mkdir(parents=True)
        self.etcd_dir.chmod(0o700)  # etcd 3.5 warns otherwise
        self._make_pki()
        self.etcd_port, etcd_peer, self.api_port = free_port(), free_port(), free_port()

        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        self._spawn(
            ETCD,
            [
                "--name=default",
                f"--data-dir={self.etcd_dir}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                # Throwaway data: skipping fsync makes every write (and so the API server) much faster.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

        def etcd_healthy() -> tuple[bool, str]:
            with urllib.request.urlopen(f"{etcd_url}/health", timeout=2) as resp:
                body = resp.read().decode()
            return '"health":"true"' in body, body

        self._wait_until("etcd /health", etcd_healthy, timeout)

        pki = self.pki_dir
        self._spawn(
            APISERVER,
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                # Without it the API server needs a default route to pick an address.
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={self.ca_cert}",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/16",  # room for thousands of Services (benchmarks)
                "--authorization-mode=RBAC",
                # No token controller mounts SA tokens into Pods here; envtest does the same.
                "--disable-admission-plugins=ServiceAccount",
                # Never publish a loopback endpoint for the `kubernetes` Service.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                f"--cert-dir={pki}",
            ],
        )
        self._write_kubeconfigs()
        self._wait_until("kube-apiserver /readyz", lambda: self._probe_get("/readyz"), timeout)

        self._spawn(
            CONTROLLER_MANAGER,
            [
                f"--kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
                "--leader-elect=false",
                "--secure-port=0",  # no serving endpoint needed; saves a port and a cert
                # One superuser identity instead of per-controller ServiceAccount tokens: fewer moving parts.
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={self.ca_cert}",  # kube-root-ca.crt ConfigMaps
                # Lets CertificateSigningRequests be approved and signed like in a real cluster.
                f"--cluster-signing-cert-file={self.ca_cert}",
                f"--cluster-signing-key-file={self.ca_key}",
            ],
        )
        if self.kwok_enabled:
            self._start_kwok()
        if wait_for_controllers:
            # The `default` ServiceAccount is created by a controller-manager controller: proof it works.
            self._wait_until(
                "kube-controller-manager (ServiceAccount default/default)",
                lambda: self._probe_get("/api/v1/namespaces/default/serviceaccounts/default"),
                timeout,
            )
            if self.kwok_enabled:
                self._wait_until("kwok node Ready", self._probe_node_ready, timeout)
        self._save_state()

    def _probe_get(self, path: str) -> tuple[bool, str]:
        code, body = self._get(path, timeout=2)
        return code == 200, f"{code} {body[:200]}"

    def _probe_node_ready(self) -> tuple[bool, str]:
        code, body = self._get(f"/api/v1/nodes/{FAKE_NODE}", timeout=2)
        if code != 200:
            return False, f"{code} {body[:200]}"
        conditions = json.loads(body).get("status", {}).get("conditions", [])
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        return ready, f"conditions={conditions}"

    def _start_kwok(self) -> None:
        self._spawn(
            SCHEDULER,
            [
                f"--kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
                "--leader-elect=false",
                "--secure-port=0",
            ],
        )
        self._spawn(
            KWOK,
            [
                f"--kubeconfig={self.workdir / 'kwok.kubeconfig'}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{free_port()}",
                # Stages (node initialize/heartbeat, pod ready/complete/delete) written by build.sh.
                f"--config={self.binary('kwok-stages.yaml')}",
            ],
        )
        # A fake node for Pods to land on; kwok keeps it Ready and moves its Pods to Running/Ready.
        # Its IPs are fake: nothing must ever dial them.
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": FAKE_NODE,
                    "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {
                        "kubernetes.io/hostname": FAKE_NODE,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                    },
                },
                # Room for many Pods: the operator benchmark runs up to 2,000 state API pods on this one
                # node, each requesting 50m CPU and 64Mi (32 CPUs held only 640 of them).
                "status": {
                    "allocatable": {"cpu": "256", "memory": "1Ti", "pods": "5000"},
                    "capacity": {"cpu": "256", "memory": "1Ti", "pods": "5000"},
                },
            }
        )

    def _make_pki(self) -> None:
        ca = CertificateAuthority.create(self.pki_dir, "ca")
        ca.issue(
            self.pki_dir,
            "apiserver",
            common_name="kube-apiserver",
            hosts=[
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "10.0.0.1",
            ],
            server=True,
        )
        ca.issue(
            self.pki_dir, "admin", common_name=self.admin_user, organizations=self.admin_groups, client=True
        )
        for component in (CONTROLLER_MANAGER, SCHEDULER, KWOK):
            # Own user names (audit/log clarity), in system:masters: see --use-service-account-credentials.
            ca.issue(
                self.pki_dir,
                component,
                common_name=f"system:{component}",
                organizations=["system:masters"],
                client=True,
            )
        sa_key = ec.generate_private_key(ec.SECP256R1())  # ES256 service account tokens
        write_private(self.pki_dir / "sa.key", key_pem(sa_key))
        (self.pki_dir / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def _write_kubeconfigs(self) -> None:
        write_kubeconfig(
            self.kubeconfig,
            server=self.server,
            ca_cert=self.ca_cert,
            user=self.admin_user,
            client_cert=self.admin_cert,
            client_key=self.admin_key,
        )
        for component in (CONTROLLER_MANAGER, SCHEDULER, KWOK):
            name = component.removeprefix("kube-")
            write_kubeconfig(
                self.workdir / f"{name}.kubeconfig",
                server=self.server,
                ca_cert=self.ca_cert,
                user=f"system:{component}",
                client_cert=self.pki_dir / f"{component}.crt",
                client_key=self.pki_dir / f"{component}.key",
            )

    def _save_state(self) -> None:
        state = {
            "server": self.server,
            "api_port": self.api_port,
            "etcd_port": self.etcd_port,
            "version": self.version,
            "bin_dir": str(self.bin_dir),
            "processes": [
                {"name": p.name, "binary": p.binary, "pid": p.pid, "log": str(p.log)} for p in self._procs
            ],
        }
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    def _load_state(self) -> list[Proc]:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return []
        self.api_port = int(state.get("api_port", 0))
        self.etcd_port = int(state.get("etcd_port", 0))
        return [
            Proc(p["name"], p["binary"], int(p["pid"]), Path(p["log"])) for p in state.get("processes", [])
        ]

    @classmethod
    def attach(cls, workdir: Path) -> ControlPlane:
        """A handle on a control plane started by another process (e.g. `python -m statestore_testing.control_plane up`)."""
        cp = cls(workdir, bin_dir=None)
        state = json.loads(cp.state_file.read_text())
        cp.bin_dir = Path(state["bin_dir"])
        cp._load_state()
        return cp

    def pids(self) -> dict[str, int]:
        """Process id of each of this control plane's processes, by name (for CPU and memory figures)."""
        return {p.name: p.pid for p in self._procs or self._load_state()}

    def running(self) -> list[str]:
        """Names of this control plane's processes that are alive."""
        procs = self._procs or self._load_state()
        return [p.name for p in procs if pid_runs(p.pid, p.binary) and not is_zombie(p.pid)]
