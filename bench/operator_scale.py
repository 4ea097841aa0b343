"""Operator at scale: N state Components across M namespaces, applied at once to a real control plane.

    .venv/bin/python -m bench.operator_scale            # 500 Components in 10 namespaces
    .venv/bin/python -m bench.operator_scale --components 50 --namespaces 2   # a quick look

It starts the test control plane (statestore_testing.control_plane: etcd, kube-apiserver, controller-manager,
scheduler, and kwok, which makes the scheduled Pods Running and Ready without running anything), the
Component CRD and `statestore-operator --all-namespaces`; then applies every Component with one
`kubectl apply` per namespace and polls (every --poll seconds) until

* every Component is `Validated=True` and has its Deployment and Service ("validated and created"),
* every Component is `Ready=True` (its Deployment rolled out: kwok's Pods are Ready),

reporting both times, and the operator's CPU seconds and peak RSS over the whole run; with the
control plane's CPU seconds (per process) and kube-apiserver's request counts and latencies over the
same span (its /metrics), to tell the operator's costs from the control plane's.

    .venv/bin/python -m bench.operator_scale --components 2000 --poll 5 --timeout 1800 --py-spy op.txt
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from statestore_testing.control_plane import ControlPlane
from statestore_testing.ports import free_port

from . import prom
from .proc import Usage

ROOT = Path(__file__).resolve().parent.parent

CRD = ROOT / "crds" / "components.dapr.io.yaml"
OPERATOR = Path(sys.executable).parent / "statestore-operator"
IMAGE = "example.test/statestore-sidecar:bench"
MAX_SECONDS = 600.0


def component(name: str, namespace: str, index: int) -> dict[str, Any]:
    """Alternating Redis and PostgreSQL stores with valid metadata (nothing connects to them)."""
    if index % 2:
        spec = {
            "type": "state.redis",
            "version": "v1",
            "metadata": [{"name": "redisHost", "value": "redis.data.svc:6379"}],
        }
    else:
        spec = {
            "type": "state.postgresql",
            "version": "v1",
            "metadata": [{"name": "connectionString", "value": "host=pg.data.svc user=app database=app"}],
        }
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _census(cluster: ControlPlane) -> dict[str, int]:
    components = cluster.kubectl_json("get", "components.dapr.io", "-A")
    validated = ready = 0
    names: set[tuple[str, str]] = set()
    items: list[dict[str, Any]] = components.get("items") or []
    for item in items:
        meta = item["metadata"]
        names.add((meta["namespace"], meta["name"]))
        conditions = {c["type"]: c["status"] for c in (item.get("status") or {}).get("conditions") or []}
        validated += conditions.get("Validated") == "True"
        ready += conditions.get("Ready") == "True"
    owned: dict[str, int] = {}
    for kind in ("deployments", "services"):
        listed = cluster.kubectl(
            "get", kind, "-A", "-l", "app.kubernetes.io/managed-by=statestore-operator",
            "-o", "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {.status.availableReplicas}{'\\n'}{end}",
        ).stdout.splitlines()  # fmt: skip
        owned[kind] = len(listed)
        if kind == "deployments":
            # Available as the controller-manager sees it: what the operator's Ready must follow.
            owned["deployments_available"] = sum(line.split(" ")[-1] == "1" for line in listed)
    return {"components": len(names), "validated": validated, "ready": ready, **owned}


def _operator_metrics(metrics_port: int) -> list[prom.Sample]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        return prom.parse(r.read().decode())


def _api_requests(samples: list[prom.Sample]) -> dict[str, float]:
    """The operator's own requests to the API server, by method (its metrics endpoint)."""
    return prom.total(samples, "statestore_operator_api_requests_total", by="method")


def _operator_figures(after: list[prom.Sample], before: list[prom.Sample], total: int) -> dict[str, Any]:
    """Reconciliations (count and mean time, the latter mostly waiting for the API server)."""
    done = prom.delta(
        prom.total(after, "statestore_operator_reconcile_total", by="result"),
        prom.total(before, "statestore_operator_reconcile_total", by="result"),
    )
    spent = prom.delta(
        prom.total(after, "statestore_operator_reconcile_time_seconds_sum"),
        prom.total(before, "statestore_operator_reconcile_time_seconds_sum"),
    ).get("", 0.0)
    count = sum(done.values())
    return {
        "reconciliations": {k: int(v) for k, v in done.items()},
        "reconciliations_per_component": round(count / max(total, 1), 2),
        "reconcile_mean_s": round(spent / count, 3) if count else None,
    }


_NOT_WATCH = {"WATCH", "CONNECT", "WATCHLIST"}


def _apiserver_metrics(cluster: ControlPlane) -> list[prom.Sample]:
    return prom.parse(cluster.kubectl("get", "--raw", "/metrics").stdout)


def _apiserver_figures(after: list[prom.Sample], before: list[prom.Sample]) -> dict[str, Any]:
    """kube-apiserver over the run, every client together (operator, census, controllers, kwok)."""

    def short(labels: prom.Labels) -> bool:
        return labels.get("verb", "") not in _NOT_WATCH

    def figures(name: str, by: str) -> dict[str, float]:
        return prom.delta(prom.total(after, name, by, short), prom.total(before, name, by, short))

    def resource(labels: prom.Labels) -> str:
        sub = labels.get("subresource")
        return f"{labels.get('verb')} {labels.get('resource')}" + (f"/{sub}" if sub else "")

    def by_resource(name: str) -> dict[str, float]:
        return prom.delta(
            prom.total_by(after, name, resource, short), prom.total_by(before, name, resource, short)
        )

    resource_n = by_resource("apiserver_request_duration_seconds_count")
    resource_s = by_resource("apiserver_request_duration_seconds_sum")
    count = figures("apiserver_request_duration_seconds_count", "verb")
    spent = figures("apiserver_request_duration_seconds_sum", "verb")
    buckets = figures("apiserver_request_duration_seconds_bucket", "le")
    wait_n = figures("apiserver_flowcontrol_request_wait_duration_seconds_count", "")
    wait_s = figures("apiserver_flowcontrol_request_wait_duration_seconds_sum", "")
    etcd_n = prom.delta(
        prom.total(after, "etcd_request_duration_seconds_count", "operation"),
        prom.total(before, "etcd_request_duration_seconds_count", "operation"),
    )
    etcd_s = prom.delta(
        prom.total(after, "etcd_request_duration_seconds_sum", "operation"),
        prom.total(before, "etcd_request_duration_seconds_sum", "operation"),
    )
    return {
        "requests": {verb: int(n) for verb, n in sorted(count.items())},
        "mean_ms": {verb: round(1000 * spent.get(verb, 0.0) / n, 1) for verb, n in sorted(count.items())},
        "by_resource": {
            key: {"requests": int(n), "mean_ms": round(1000 * resource_s.get(key, 0.0) / n, 1)}
            for key, n in sorted(resource_n.items(), key=lambda kv: -kv[1])
            if n >= 1
        },
        "p50_ms_at_most": _ms(prom.quantile(buckets, 0.5)),
        "p99_ms_at_most": _ms(prom.quantile(buckets, 0.99)),
        "flowcontrol_wait_mean_ms": round(1000 * wait_s.get("", 0.0) / wait_n[""], 2)
        if wait_n.get("")
        else None,
        "etcd_mean_ms": {op: round(1000 * etcd_s.get(op, 0.0) / n, 2) for op, n in sorted(etcd_n.items())},
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


def _control_plane_cpu(cluster: ControlPlane) -> dict[str, float]:
    return {name: Usage.sample([pid]).cpu for name, pid in cluster.pids().items()}


def _queue_depth(metrics_port: int) -> int | None:
    try:
        depth = prom.total(_operator_metrics(metrics_port), "statestore_operator_workqueue_depth")
    except OSError:
        return None
    return int(depth.get("", 0))


def run(
    components: int,
    namespaces: int,
    poll: float,
    workdir: Path,
    extra: list[str],
    *,
    timeout: float = MAX_SECONDS,
    profile: Path | None = None,
) -> dict[str, Any]:
    cluster = ControlPlane(workdir / "k8s", kwok=True)
    began = time.monotonic()
    cluster.start()
    result: dict[str, Any] = {"control_plane_start_s": round(time.monotonic() - began, 1)}
    operator: subprocess.Popen[bytes] | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        cluster.kubectl("apply", "-f", str(CRD))
        cluster.kubectl("wait", "--for=condition=Established", "crd/components.dapr.io", "--timeout=60s")
        names = [f"bench-{i:02d}" for i in range(namespaces)]
        for ns in names:
            cluster.kubectl("create", "namespace", ns)
        liveness, metrics_port = free_port(), free_port()
        log = (workdir / "operator.log").open("wb")
        operator = subprocess.Popen(
            [
                str(OPERATOR),
                "--all-namespaces",
                "--image",
                IMAGE,
                "--metrics-port",
                str(metrics_port),
                "--metrics-address",
                "127.0.0.1",
                "--liveness",
                f"http://127.0.0.1:{liveness}/healthz",
                *extra,
            ],
            env=cluster.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            if operator.poll() is not None:
                raise RuntimeError(
                    f"statestore-operator exited: {(workdir / 'operator.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the operator's liveness endpoint did not answer in 60 s")
            time.sleep(0.2)
        idle = Usage.sample([operator.pid])
        result["operator_idle_rss_mb"] = round(idle.rss / 2**20, 1)
        operator_before = _operator_metrics(metrics_port)
        apiserver_before = _apiserver_metrics(cluster)
        control_before = _control_plane_cpu(cluster)
        result["load_average_before"] = os.getloadavg()
        if profile is not None:
            spy = _start_profile(operator.pid, profile)

        per_ns = components // namespaces
        started = time.monotonic()
        for n, ns in enumerate(names):
            items = [component(f"store-{i:03d}", ns, n * per_ns + i) for i in range(per_ns)]
            listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
            cluster.kubectl("apply", "-f", "-", input=listed, timeout=timeout)
        result["apply_s"] = round(time.monotonic() - started, 1)
        total = per_ns * namespaces
        timeline: list[dict[str, Any]] = []
        created_at = ready_at = None
        while time.monotonic() - started < timeout:
            census = _census(cluster)
            elapsed = round(time.monotonic() - started, 1)
            loadavg = Path("/proc/loadavg").read_text().split()[0]
            timeline.append({"t": elapsed, **census, "queue": _queue_depth(metrics_port), "load": loadavg})
            print(f"  {elapsed:6.1f}s {census}", file=sys.stderr, flush=True)
            if (
                created_at is None
                and census["validated"] >= total
                and min(census["deployments"], census["services"]) >= total
            ):
                created_at = elapsed
            if census["ready"] >= total:
                ready_at = elapsed
                break
            if operator.poll() is not None:
                raise RuntimeError("statestore-operator exited during the run")
            time.sleep(poll)
        busy = Usage.sample([operator.pid])
        operator_after = _operator_metrics(metrics_port)
        control_after = _control_plane_cpu(cluster)
        apiserver_after = _apiserver_metrics(cluster)
        requests = _api_requests(operator_after)
        spent = {m: int(n - _api_requests(operator_before).get(m, 0)) for m, n in requests.items()}
        result.update(
            operator_args=extra,
            load_average_after=os.getloadavg(),
            operator_api_requests=spent,
            operator_api_requests_per_component=round(sum(spent.values()) / max(total, 1), 1),
            components=total,
            namespaces=namespaces,
            validated_and_created_s=created_at,
            ready_s=ready_at,
            operator_cpu_s=round(busy.cpu - idle.cpu, 2),
            operator_rss_mb=round(busy.rss / 2**20, 1),
            operator_peak_rss_mb=round(_peak_rss(operator.pid) / 2**20, 1),
            **_operator_figures(operator_after, operator_before, total),
            control_plane_cpu_s={
                name: round(cpu - control_before.get(name, 0.0), 1) for name, cpu in control_after.items()
            },
            apiserver=_apiserver_figures(apiserver_after, apiserver_before),
            timeline=timeline,
        )
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its profile on Ctrl-C (SIGTERM loses it)
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(20)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()
        cluster.stop()
    return result


def _start_profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (not a project dependency: `pip install py-spy`) sampling the operator, 20 Hz, raw stacks."""
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if spy is None:
        raise RuntimeError("--py-spy needs py-spy: .venv/bin/pip install py-spy")
    command = [spy, "record", "--pid", str(pid), "--rate", "20", "--nonblocking", "--format", "raw"]
    return subprocess.Popen([*command, "--output", str(out.resolve())], stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.operator_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--components", type=int, default=500)
    p.add_argument("--namespaces", type=int, default=10)
    p.add_argument("--poll", type=float, default=2.0, help="seconds between two census of the cluster")
    p.add_argument("--json", type=Path, help="also write the figures (and the timeline) here")
    p.add_argument("--timeout", type=float, default=MAX_SECONDS, help="give up this long after the apply")
    p.add_argument("--py-spy", type=Path, help="profile the operator with py-spy into this file (raw stacks)")
    p.add_argument(
        "operator_args", nargs="*", help="extra statestore-operator flags (after --), e.g. -- --workers 16"
    )
    args = p.parse_args(argv)
    if not OPERATOR.exists():
        print(f"{OPERATOR} not found: install the project (make venv)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="statestore-operator-scale-") as tmp:
        os.chmod(tmp, 0o755)
        result = run(
            args.components,
            args.namespaces,
            args.poll,
            Path(tmp),
            args.operator_args,
            timeout=args.timeout,
            profile=args.py_spy,
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    summary = {k: v for k, v in result.items() if k != "timeline"}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
