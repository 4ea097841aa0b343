"""Benchmark the state API beside daprd and direct backend access, on loopback, in one run.

    .venv/bin/python -m bench.run                  # the full run (about 32 minutes), report on stdout
    .venv/bin/python -m bench.run --smoke          # a few seconds: CI checks that real numbers come out
    make bench BENCH_ARGS="--json out.json"

For each backend (Redis, PostgreSQL, SQLite) and operation (GET and SAVE of a 1 KB JSON value, a
BULK get of 100 keys, a TRANSACTION of an upsert and a delete), and for each path (direct, for GET and
SAVE: the Python driver running the store's own statements; api and grpc: statestore-sidecar as a
real process with a Component for that backend; daprd-http and daprd-grpc: a real daprd, the same
way, after it):

* maximum throughput: `wrk` over HTTP and the official Go SDK over gRPC (hack/sdk/go-client's
  `-load` mode; or, without them and for the direct path, a closed-loop Python client) with 16
  connections for --duration seconds;
* latency p50/p90/p99 at a fixed --rate (1,000 requests/s; a tenth of it for BULK, which reads 100
  keys a request), open loop and measured from each request's scheduled time (corrected for
  coordinated omission);
* CPU seconds per 1,000 requests and RSS of the serving process, from /proc: the sidecar for the API
  path, the database server for the direct path (for SQLite, which has no server, the bench process).

The sidecar runs alone on core 0 (`taskset -c 0`); this process, wrk and the database servers run
on core 1. The database servers are the test suite's (`backends.py`); the report: `report.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from . import targets as t
from .backends import Backend, start_backend
from .load import closed_loop, go_load, have_go_load, have_wrk, open_loop, pinned, run_wrk, wrk_script
from .proc import Usage, core_busy
from .reference import measure_daprd
from .report import report
from .sidecar import CLIENT_CORES, SERVER_CORE, SIDECAR, Sidecar, request

ROOT = Path(__file__).resolve().parent.parent

BACKENDS = ("redis", "postgresql", "sqlite")
# Each operation's share of --rate in the fixed-rate phase: a bulk request reads 100 keys.
RATE_SHARE = {"bulk": 0.1}


@dataclass
class Settings:
    backends: tuple[str, ...] = BACKENDS
    duration: float = 10.0  # seconds of each maximum-throughput phase
    latency_seconds: float = 20.0  # seconds of each fixed-rate phase
    rate: float = 1000.0
    warmup: float = 2.0
    connections: int = 16
    workers: int = 1
    use_wrk: bool = True
    smoke: bool = False
    daprd: bool = True  # daprd measured in the same run (bench/reference.py)
    ops: tuple[str, ...] = t.OPS


# -- measuring ---------------------------------------------------------------------------------------


def _usage(pids: list[int]) -> Usage:
    return Usage.sample(pids) if pids else Usage(0.0, 0, 0, 0, 0)


async def measure(
    target: t.Target,
    *,
    op: str,
    settings: Settings,
    server_pids: list[int],
    db_pids: list[int],
    wrk_url: str | None,
    value: bytes,
    grpc_address: str | None = None,
) -> dict[str, Any]:
    """The maximum (wrk for HTTP and the Go SDK for gRPC where given, else the Python closed loop),
    then the fixed rate's latency, CPU and memory."""
    call = t.call_of(target, op)
    out: dict[str, Any] = {}
    await closed_loop(call, settings.connections, settings.warmup)

    before, cores_before, started = _usage(server_pids), core_busy(), time.monotonic()
    if wrk_url is not None:
        script = wrk_script(*t.http_requests(op, value))
        peak, raw = await asyncio.to_thread(run_wrk, wrk_url, script, settings.connections, settings.duration)
        out["wrk_output"] = raw
    elif grpc_address is not None:
        peak = await asyncio.to_thread(
            go_load, grpc_address, t.STORE, op, settings.connections, settings.duration
        )
    else:
        peak = await closed_loop(call, settings.connections, settings.duration)
    after, cores_after, elapsed = _usage(server_pids), core_busy(), time.monotonic() - started
    out["max"] = peak.summary()
    server_cpu = after.cpu - before.cpu
    out["max"]["server_cpu_s_per_1000"] = round(server_cpu / max(peak.requests, 1) * 1000, 4)
    # Requests per CPU-second of the server: its one-core capacity, whatever else shared the core.
    out["max"]["requests_per_server_cpu_s"] = round(peak.requests / server_cpu) if server_cpu > 0 else None
    out["max"]["server_core_share"] = round(server_cpu / elapsed, 3)
    # Other processes of the machine (other users' jobs) on each core while this phase ran.
    out["max"]["core_busy"] = {
        str(c): round((cores_after[c] - cores_before.get(c, 0.0)) / elapsed, 3) for c in cores_after
    }

    before, db_before, cores_before, started = (
        _usage(server_pids),
        _usage(db_pids),
        core_busy(),
        time.monotonic(),
    )
    rate = settings.rate * RATE_SHARE.get(op, 1.0)
    fixed = await open_loop(call, rate, settings.latency_seconds)
    after, db_after, cores_after = _usage(server_pids), _usage(db_pids), core_busy()
    elapsed = time.monotonic() - started
    out["fixed"] = fixed.summary()
    out["fixed"]["target_rate"] = rate
    # How busy each core was, all processes included: with the server's own share subtracted, what
    # other jobs on the machine took from the server's core while latency was being measured.
    out["fixed"]["core_busy"] = {
        str(c): round((cores_after[c] - cores_before.get(c, 0.0)) / elapsed, 3) for c in cores_after
    }
    out["fixed"]["server_core_share"] = round((after.cpu - before.cpu) / elapsed, 3)
    out["fixed"]["server_cpu_s_per_1000"] = round((after.cpu - before.cpu) / max(fixed.requests, 1) * 1000, 4)
    out["fixed"]["db_cpu_s_per_1000"] = round(
        (db_after.cpu - db_before.cpu) / max(fixed.requests, 1) * 1000, 4
    )
    out["server_rss_mb"] = round(after.rss / 2**20, 1)
    out["server_pss_mb"] = round(after.pss / 2**20, 1)
    out["server_rss_max_mb"] = round(after.rss_max / 2**20, 1)
    out["server_processes"] = after.processes
    return out


def _bulk(backend: Backend, port: int) -> dict[str, Any]:
    """How many backend round trips one bulk get of 100 keys costs, against 100 single gets."""
    if backend.bulk_probe is None:
        return {
            "note": "embedded database: one SQL statement (key IN json_each(?)) on one thread, no network"
        }
    keys = [t.key(i) for i in range(100)]
    body = orjson.dumps({"keys": keys})
    statuses: list[int] = []

    def bulk() -> None:
        status, reply = request("127.0.0.1", port, "POST", f"/v1.0/state/{t.STORE}/bulk", body)
        statuses.append(status)
        assert status == 200 and len(orjson.loads(reply)) == 100, (status, reply[:200])

    def singles() -> None:
        for k in keys:
            statuses.append(request("127.0.0.1", port, "GET", f"/v1.0/state/{t.STORE}/{k}")[0])

    return {
        "bulk_get_100": backend.bulk_probe(bulk),
        "single_get_x100": backend.bulk_probe(singles),
        "statuses": sorted(set(statuses)),
    }


async def bench_backend(name: str, settings: Settings, workdir: Path) -> dict[str, Any]:
    value = t.value_1kb()
    result: dict[str, Any] = {"backend": name, "ops": {}}
    with start_backend(name, workdir) as backend:
        result["version"] = backend.version
        sidecar = Sidecar(backend, workdir, settings.workers)
        sidecar.start()
        try:
            assert sidecar.process is not None
            api_pids = [sidecar.process.pid]
            db_pids = [backend.pid] if backend.pid else []
            seed = await t.Api.open(sidecar.port, value, settings.connections)
            try:
                statuses = await asyncio.gather(*(seed.save(i) for i in range(t.KEYS)))
            finally:
                await seed.close()
            if set(statuses) != {204}:
                raise RuntimeError(f"seeding {name} failed: {sorted(set(statuses))}")
            result["bulk"] = await asyncio.to_thread(_bulk, backend, sidecar.port)
            wrk_url = f"http://127.0.0.1:{sidecar.port}" if settings.use_wrk and have_wrk() else None
            go_address = f"127.0.0.1:{sidecar.grpc_port}" if settings.use_wrk and have_go_load() else None
            for op in settings.ops:
                runs: dict[str, Any] = {}
                if op in t.DIRECT_OPS:
                    direct = await backend.direct(value, settings.connections)
                    try:
                        # Without a server process (SQLite), the direct path's "server" is this process.
                        runs["direct"] = await measure(
                            direct,
                            op=op,
                            settings=settings,
                            server_pids=db_pids or [os.getpid()],
                            db_pids=[],
                            wrk_url=None,
                            value=value,
                        )
                    finally:
                        await direct.close()
                api = await t.Api.open(sidecar.port, value, settings.connections)
                try:
                    runs["api"] = await measure(
                        api,
                        op=op,
                        settings=settings,
                        server_pids=api_pids,
                        db_pids=db_pids,
                        wrk_url=wrk_url,
                        value=value,
                    )
                finally:
                    await api.close()
                over_grpc = t.Grpc(sidecar.grpc_port, value, settings.connections)
                try:
                    runs["grpc"] = await measure(
                        over_grpc,
                        op=op,
                        settings=settings,
                        server_pids=api_pids,
                        db_pids=db_pids,
                        wrk_url=None,
                        value=value,
                        grpc_address=go_address,
                    )
                finally:
                    await over_grpc.close()
                result["ops"][op] = runs
                print(f"  {name} {op}: {_line(runs)}", file=sys.stderr, flush=True)
        finally:
            sidecar.stop()
        if settings.daprd:
            # After the sidecar has stopped: each has the core to itself.
            reference = await measure_daprd(
                backend.component_type,
                backend.metadata,
                workdir,
                ops=settings.ops,
                value=value,
                connections=settings.connections,
                core=SERVER_CORE,
                db_pids=db_pids,
                measure=functools.partial(measure, settings=settings, value=value),
                wrk=settings.use_wrk and have_wrk(),
            )
            for op, runs in reference.items():
                result["ops"][op].update(runs)
                d = runs["daprd-http"]
                print(
                    f"  {name} {op} daprd: max {d['max']['rate']:.0f} req/s (HTTP)",
                    file=sys.stderr,
                    flush=True,
                )
    return result


def _line(runs: dict[str, Any]) -> str:
    """max, p50 and p99 of each path measured: direct (if any) vs api (grpc)."""

    def figures(key: tuple[str, str], unit: str, digits: int) -> str:
        d = runs.get("direct")
        a, g = runs["api"], runs["grpc"]
        direct = f"{d[key[0]][key[1]]:.{digits}f} vs " if d else ""
        return f"{direct}{a[key[0]][key[1]]:.{digits}f} (grpc {g[key[0]][key[1]]:.{digits}f}) {unit}"

    return "; ".join(
        (
            "max " + figures(("max", "rate"), "req/s", 0),
            "p50 " + figures(("fixed", "p50_ms"), "ms", 3),
            "p99 " + figures(("fixed", "p99_ms"), "ms", 3),
        )
    )


# -- the report ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    versions = {}
    for package in ("uvicorn", "uvloop", "httptools", "starlette", "orjson", "redis", "asyncpg"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[package] = version(package)
    wrk = ""
    if have_wrk():
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    return {
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "cpu": model,
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "wrk": wrk.strip(),
    }


def parse_args(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="a few seconds in all: checks the harness, not speed")
    p.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated subset of redis,postgresql,sqlite"
    )
    p.add_argument("--duration", type=float, help="seconds of each maximum-throughput phase (default 10)")
    p.add_argument("--latency-seconds", type=float, help="seconds of each fixed-rate phase (default 20)")
    p.add_argument("--rate", type=float, help="fixed request rate (default 1000)")
    p.add_argument(
        "--connections", type=int, default=16, help="client connections (default 16, as Dapr's tests)"
    )
    p.add_argument("--workers", type=int, default=1, help="sidecar worker processes (default 1)")
    p.add_argument(
        "--no-wrk", action="store_true", help="use the Python closed-loop client for the API maximum too"
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling niceness of this process and everything it starts, e.g. -10 (root) so other "
        "jobs on a shared machine do not set the latency tail (default 0)",
    )
    p.add_argument("--no-daprd", action="store_true", help="leave out daprd (bench/reference.py)")
    p.add_argument("--ops", default=",".join(t.OPS), help="comma-separated subset of " + ",".join(t.OPS))
    p.add_argument("--json", type=Path, help="also write every figure (and wrk's output) here")
    args = p.parse_args(argv)
    settings = Settings(connections=args.connections, workers=args.workers, use_wrk=not args.no_wrk)
    if args.smoke:
        settings = Settings(
            duration=0.5, latency_seconds=0.5, rate=200.0, warmup=0.2, connections=4,
            workers=args.workers, use_wrk=False, smoke=True,
        )  # fmt: skip
    settings.daprd = not args.no_daprd
    settings.ops = tuple(o.strip() for o in args.ops.split(",") if o.strip())
    for op in settings.ops:
        if op not in t.OPS:
            p.error(f"unknown operation {op!r}")
    settings.backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    for name in settings.backends:
        if name not in BACKENDS:
            p.error(f"unknown backend {name!r}")
    if args.duration is not None:
        settings.duration = args.duration
    if args.latency_seconds is not None:
        settings.latency_seconds = args.latency_seconds
    if args.rate is not None:
        settings.rate = args.rate
    return settings, args


async def run(settings: Settings) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "settings": settings.__dict__, "backends": []}
    results["niceness"] = os.getpriority(os.PRIO_PROCESS, 0)
    results["command"] = " ".join(["python", "-m", "bench.run", *sys.argv[1:]])
    with tempfile.TemporaryDirectory(prefix="statestore-bench-") as tmp:
        base = Path(tmp)
        os.chmod(base, 0o755)  # the database servers may run as another user
        for name in settings.backends:
            print(f"{name}...", file=sys.stderr, flush=True)
            workdir = base / name
            workdir.mkdir()
            os.chmod(workdir, 0o755)
            results["backends"].append(await bench_backend(name, settings, workdir))
    return results


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_args(argv)
    if not SIDECAR.exists():
        print(f"{SIDECAR} not found: install the project (make venv)", file=sys.stderr)
        return 2
    if settings.use_wrk and not have_wrk() and not settings.smoke:
        print("wrk not found (apt-get install wrk): the API maximum uses the Python client", file=sys.stderr)
    import uvloop

    if args.nice:
        # Inherited by the database servers, the sidecar and wrk, started after this: direct and API
        # paths get the same priority over the machine's other jobs.
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)

    # This process (the load generator), wrk and the database servers it starts share CLIENT_CORES.
    with pinned(CLIENT_CORES), asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results = runner.run(run(settings))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
