"""A/B runs of server variants on one Redis: server CPU per request at a fixed rate, alternating.

    .venv/bin/python -m bench.variants --variants uvicorn,granian --rounds 2 --seconds 5
    .venv/bin/python -m bench.variants --variants uvicorn,uvicorn@/work/other/sidecar,daprd

On a shared machine the robust figure is the serving process tree's CPU (utime+stime from /proc)
per request at a fixed open-loop rate; maxima (`--max-seconds`, wrk) are noisy. Every variant runs
`--rounds` times, in turn (A B A B), on SERVER_CORE; /proc/loadavg is recorded with each figure.

Variants:

* `uvicorn`: `statestore-sidecar` as shipped; `uvicorn@<path>` imports the sidecar from <path>.
* `granian`: the same application (`server:worker_app`) under granian's ASGI server, one worker
  (granian is not a dependency: `.venv/bin/pip install granian` first).
* `workers2`: `statestore-sidecar --workers 2` on both cores (for the scaling figure: `--cores 0,1`).
* `daprd`: a real daprd (`statestore_testing.daprd`) with the same kind of store, on its own rows.
* `bare-uvicorn`, `bare-granian`: a constant ASGI application (bench/bare_app.py), no state path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvloop

from statestore_testing.ports import free_port

from . import targets as t
from .backends import Backend, start_backend
from .load import have_wrk, open_loop, pinned, run_wrk, wrk_script
from .proc import Usage, tree
from .sidecar import CLIENT_CORES, SERVER_CORE, SIDECAR, Sidecar, request

BIN = Path(sys.executable).parent


def _loadavg() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def _switches(roots: list[int]) -> int:
    """Voluntary context switches of every thread of the process trees."""
    total = 0
    for pid in {p for root in roots for p in tree(root)}:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/status") as handle:
                    for line in handle:
                        if line.startswith("voluntary_ctxt_switches:"):
                            total += int(line.split()[1])
    return total


def _wait_http(port: int, proc: subprocess.Popen[bytes], log: Path, path: str = "/v1.0/healthz") -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError):
            if request("127.0.0.1", port, "GET", path)[0] in (200, 204):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"server not ready in 60 s:\n{log.read_text()}")
        time.sleep(0.1)


class Process:
    """A server started from a command line, pinned to `cores`, stopped with its process group."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path, cores: str) -> None:
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["taskset", "-c", cores, *command],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        self.log = log

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(5)


def _sidecar_args(sidecar: Sidecar, workers: int = 1) -> dict[str, Any]:
    """The sidecar's parsed arguments, as `server.worker_app` reads them from the environment."""
    from statestore_sidecar.cli import parser

    argv = [
        "--resources-path", str(sidecar.resources), "--app-id", t.APP_ID,
        "--dapr-http-port", str(sidecar.port), "--dapr-grpc-port", "0",
        "--dapr-listen-addresses", "127.0.0.1", "--metrics-port", str(free_port()),
        "--log-level", "warn", "--workers", str(workers),
    ]  # fmt: skip
    return vars(parser().parse_args(argv))


@contextlib.contextmanager
def serve(variant: str, backend: Backend, workdir: Path, cores: str) -> Iterator[tuple[int, list[int]]]:
    """Start a variant; yields its HTTP port and the pids whose process trees serve it."""
    name, _, path = variant.partition("@")
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path
    log = workdir / f"{name}.log"
    if name == "daprd":
        from statestore_testing.daprd import DaprComponent, Daprd

        from .reference import own_rows

        folder = workdir / f"daprd-{time.monotonic_ns()}"
        folder.mkdir()
        store = DaprComponent(
            t.STORE, backend.component_type, own_rows(backend.component_type, backend.metadata)
        )
        with Daprd([store], folder, app_id=t.APP_ID) as daprd:
            assert daprd._proc is not None
            subprocess.run(
                ["taskset", "-a", "-cp", cores, str(daprd._proc.pid)], check=True, capture_output=True
            )
            yield daprd.http_port, [daprd._proc.pid]
        return
    sidecar = Sidecar(backend, workdir / f"{name}-{time.monotonic_ns()}", 1)
    port = sidecar.port
    health = "/v1.0/healthz"
    if name == "uvicorn":
        command = [str(SIDECAR), *_argv(_sidecar_args(sidecar))]
    elif name == "workers2":
        command = [str(SIDECAR), *_argv(_sidecar_args(sidecar, 2))]
    elif name == "granian":
        env["STATESTORE_SIDECAR_ARGS"] = json.dumps(_sidecar_args(sidecar))
        command = [
            str(BIN / "granian"), "--interface", "asgi", "--loop", "uvloop", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--runtime-threads", "1",
            "--log-level", "warning", "--no-ws", "statestore_sidecar.server:worker_app",
        ]  # fmt: skip
    elif name == "bare-uvicorn":
        command = [
            str(BIN / "uvicorn"), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "bench.bare_app:app",
        ]  # fmt: skip
        health = "/livez"
    elif name == "bare-granian":
        command = [
            str(BIN / "granian"), "--interface", "asgi", "--loop", "uvloop", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--runtime-threads", "1", "--log-level", "warning",
            "--no-ws", "bench.bare_app:app",
        ]  # fmt: skip
        health = "/livez"
    else:
        raise ValueError(f"unknown variant {variant!r}")
    server = Process(command, env, log, cores)
    try:
        _wait_http(port, server.proc, log, health)
        yield port, [server.proc.pid]
    finally:
        server.stop()


def _argv(args: dict[str, Any]) -> list[str]:
    out = []
    for key in ("resources_path", "app_id", "dapr_http_port", "dapr_grpc_port", "dapr_listen_addresses",
                "metrics_port", "log_level", "workers"):  # fmt: skip
        value = args[key]
        if isinstance(value, list):
            value = value[0]
        out += [f"--{key.replace('_', '-')}", str(value)]
    return out


async def measure(
    port: int,
    pids: list[int],
    op: str,
    *,
    db_pids: list[int],
    rate: float,
    seconds: float,
    max_seconds: float,
) -> dict[str, Any]:
    api = await t.Api.open(port, t.value_1kb(), 16)
    try:
        call = t.call_of(api, op)
        await open_loop(call, rate, 1.0)  # warm-up
        load = _loadavg()
        switches = _switches(pids)
        before, db_before, started = Usage.sample(pids), Usage.sample(db_pids), time.monotonic()
        phase = await open_loop(call, rate, seconds)
        after, db_after, elapsed = Usage.sample(pids), Usage.sample(db_pids), time.monotonic() - started
        switches = _switches(pids) - switches
        summary = phase.summary()
        out: dict[str, Any] = {
            "cpu_us": round((after.cpu - before.cpu) / max(phase.requests, 1) * 1e6, 1),
            "core_share": round((after.cpu - before.cpu) / elapsed, 3),
            # Redis' own CPU per request: what the store's commands cost the server.
            "redis_cpu_us": round((db_after.cpu - db_before.cpu) / max(phase.requests, 1) * 1e6, 1),
            # Times the server's threads went to sleep and were woken (voluntary context switches).
            "wakeups_per_request": round(switches / max(phase.requests, 1), 2),
            "p50_ms": summary["p50_ms"],
            "p99_ms": summary["p99_ms"],
            "ok": summary["ok_2xx"],
            "requests": phase.requests,
            "loadavg": load,
            "rss_max_mb": round(after.rss_max / 2**20, 1),
        }
        if max_seconds > 0 and have_wrk():
            script = wrk_script(*t.http_requests(op, t.value_1kb()))
            before, db_before, started = Usage.sample(pids), Usage.sample(db_pids), time.monotonic()
            peak, _ = await asyncio.to_thread(run_wrk, f"http://127.0.0.1:{port}", script, 16, max_seconds)
            cpu = Usage.sample(pids).cpu - before.cpu
            elapsed = time.monotonic() - started
            out["max_core_share"] = round(cpu / elapsed, 3)
            out["max_redis_core_share"] = round((Usage.sample(db_pids).cpu - db_before.cpu) / elapsed, 3)
            out["max_rps"] = round(peak.rate)
            out["max_req_per_cpu_s"] = round(peak.requests / cpu) if cpu > 0 else None
            out["max_loadavg"] = _loadavg()
        return out
    finally:
        await api.close()


async def seed(port: int) -> None:
    api = await t.Api.open(port, t.value_1kb(), 16)
    try:
        statuses = await asyncio.gather(*(api.save(i) for i in range(t.KEYS)))
    finally:
        await api.close()
    if set(statuses) != {204}:
        raise RuntimeError(f"seeding failed: {sorted(set(statuses))}")


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="statestore-variants-") as tmp:
        base = Path(tmp)
        os.chmod(base, 0o755)
        with start_backend("redis", base) as backend:
            for round_ in range(args.rounds):
                for variant in args.variants.split(","):
                    cores = args.cores or SERVER_CORE
                    with serve(variant, backend, base, cores) as (port, pids):
                        if not variant.startswith("bare"):
                            await seed(port)
                        for op in args.ops.split(","):
                            if variant.startswith("bare") and op == "save":
                                continue
                            row = {"variant": variant, "round": round_ + 1, "op": op}
                            row.update(
                                await measure(
                                    port,
                                    pids,
                                    op,
                                    db_pids=[backend.pid] if backend.pid else [],
                                    rate=args.rate,
                                    seconds=args.seconds,
                                    max_seconds=args.max_seconds,
                                )
                            )
                            print(json.dumps(row), flush=True)
                            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.variants", description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="uvicorn,daprd")
    p.add_argument("--ops", default="get,save")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=5.0, help="fixed-rate phase (default 5)")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=0.0,
        help="wrk maximum phase, when wrk is installed (default none)",
    )
    p.add_argument("--cores", default="", help=f"the servers' cores (default {SERVER_CORE})")
    p.add_argument("--client-cores", default="", help="the load generator's cores (default 1)")
    p.add_argument("--nice", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if "granian" in args.variants and not (BIN / "granian").exists():
        p.error("the granian variants need granian, which is not a dependency: .venv/bin/pip install granian")
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    clients = {int(c) for c in args.client_cores.split(",")} if args.client_cores else CLIENT_CORES
    with pinned(clients), asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        rows = runner.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
