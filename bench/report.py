"""The printed report of a bench run: every figure, the API against direct access, ours against
daprd, and the performance targets, from the results a run returns (or its JSON)."""

from __future__ import annotations

import json
import math
from typing import Any

from .reference import PATHS


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def _memory(path: str, run: dict[str, Any]) -> float:
    # The API: RSS of the largest process (one worker). A database: PSS of its processes, since
    # summing RSS would count PostgreSQL's shared buffers once per backend.
    return float(run["server_rss_max_mb"] if path != "direct" else run["server_pss_mb"])


def report(results: dict[str, Any]) -> str:
    s = results["settings"]
    lines = [
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
        f"{results['machine']['memory']}, Linux {results['machine']['kernel']}, "
        f"Python {results['machine']['python']}; sidecar workers: {s['workers']}.",
        f"Fixed rate {s['rate']:.0f} req/s for {s['latency_seconds']:g} s; maximum over {s['duration']:g} s with "
        f"{s['connections']} connections; 1,024-byte JSON value.",
        "",
        "| Backend | Op | Path | Max req/s | p50 ms | p90 ms | p99 ms | CPU s / 1k req | mCPU @ rate | Memory MB | 2xx |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratio = [
        "",
        "| Backend | Op | Max req/s API / direct | Added p50 ms | Added p90 ms | Added p99 ms | API mCPU @ rate | API RSS MB per worker |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for backend in results["backends"]:
        for op, runs in backend["ops"].items():
            for path in (p for p in ("direct", "api", "grpc", *PATHS) if p in runs):
                r = runs[path]
                f, m = r["fixed"], r["max"]
                total = f["requests"] + m["requests"]
                ok = f["ok_2xx"] + m["ok_2xx"]
                cpu = f["server_cpu_s_per_1000"]
                lines.append(
                    f"| {backend['backend']} | {op.upper()} | {path} | {m['rate']:,.0f} ({m['tool']}) | "
                    f"{_fmt(f['p50_ms'], 3)} | {_fmt(f['p90_ms'], 3)} | {_fmt(f['p99_ms'], 3)} | "
                    f"{cpu:.3f} | {cpu * f['target_rate']:.0f} | {_memory(path, r):.1f} | {100 * ok / max(total, 1):.1f}% |"
                )
            if "direct" not in runs:
                continue
            d = runs["direct"]
            for path in ("api", "grpc"):
                a = runs[path]
                ratio.append(
                    f"| {backend['backend']} | {op.upper()}{' (gRPC)' if path == 'grpc' else ''} | "
                    f"{a['max']['rate'] / max(d['max']['rate'], 1):.2f} | "
                    f"{a['fixed']['p50_ms'] - d['fixed']['p50_ms']:+.3f} | {a['fixed']['p90_ms'] - d['fixed']['p90_ms']:+.3f} | "
                    f"{a['fixed']['p99_ms'] - d['fixed']['p99_ms']:+.3f} | "
                    f"{a['fixed']['server_cpu_s_per_1000'] * a['fixed']['target_rate']:.0f} | {a['server_rss_max_mb']:.1f} |"
                )
    lines += ratio
    lines += daprd_ratios(results)
    lines += ["", "Bulk get of 100 keys through the API (backend work per request):", ""]
    for backend in results["backends"]:
        lines.append(f"- {backend['backend']}: `{json.dumps(backend.get('bulk'))}`")
    lines += ["", "Targets:", ""] + [f"- {line}" for line in targets(results)]
    return "\n".join(lines) + "\n"


def daprd_ratios(results: dict[str, Any]) -> list[str]:
    """Ours against daprd, per transport: throughput, CPU per request and memory (ratios ours / daprd)."""
    rows = [
        "",
        "| Backend | Op | Transport | Max req/s ours / daprd | CPU per request ours / daprd | RSS MB ours / daprd |",
        "|---|---|---|---|---|---|",
    ]
    found = False
    for backend in results["backends"]:
        for op, runs in backend["ops"].items():
            for ours_path, their_path, transport in (
                ("api", "daprd-http", "HTTP"),
                ("grpc", "daprd-grpc", "gRPC"),
            ):
                if their_path not in runs:
                    continue
                found = True
                a, d = runs[ours_path], runs[their_path]
                cpu_a, cpu_d = a["fixed"]["server_cpu_s_per_1000"], d["fixed"]["server_cpu_s_per_1000"]
                rows.append(
                    f"| {backend['backend']} | {op.upper()} | {transport} | "
                    f"{a['max']['rate']:,.0f} / {d['max']['rate']:,.0f} = {a['max']['rate'] / max(d['max']['rate'], 1):.2f} | "
                    f"{cpu_a * 1000:.0f} / {cpu_d * 1000:.0f} µs = {cpu_a / cpu_d if cpu_d else math.nan:.2f} | "
                    f"{a['server_rss_max_mb']:.1f} / {d['server_rss_max_mb']:.1f} |"
                )
    return rows if found else []


def targets(results: dict[str, Any]) -> list[str]:
    """The performance targets on Redis, each against daprd in the same run where it has one."""
    out: list[str] = []
    mark = {True: "met", False: "NOT met"}
    for backend in results["backends"]:
        if backend["backend"] != "redis":
            continue
        ops = backend["ops"]
        for op in ("get", "save"):
            runs = ops.get(op, {})
            for ours, theirs, transport in (("api", "daprd-http", "HTTP"), ("grpc", "daprd-grpc", "gRPC")):
                if ours not in runs or theirs not in runs:
                    continue
                a, d = runs[ours], runs[theirs]
                ratio = a["max"]["rate"] / max(d["max"]["rate"], 1)
                out.append(
                    f"Redis {op.upper()} {transport} max req/s ours / daprd {ratio:.2f} (≥ 1.0): {mark[ratio >= 1]}"
                )
                cpu = a["fixed"]["server_cpu_s_per_1000"] / max(d["fixed"]["server_cpu_s_per_1000"], 1e-9)
                out.append(
                    f"Redis {op.upper()} {transport} CPU per request at {a['fixed']['target_rate']:.0f}/s "
                    f"ours / daprd {cpu:.2f} (≤ 1.0): {mark[cpu <= 1]}"
                )
        get = ops.get("get", {})
        if "direct" in get and "api" in get:
            d, a = get["direct"], get["api"]
            added50 = a["fixed"]["p50_ms"] - d["fixed"]["p50_ms"]
            added99 = a["fixed"]["p99_ms"] - d["fixed"]["p99_ms"]
            out += [
                f"Redis GET HTTP added latency at {a['fixed']['target_rate']:.0f}/s: p50 {added50:+.3f} ms "
                f"(≤ +0.3): {mark[added50 <= 0.3]}; p99 {added99:+.3f} ms (≤ +1): {mark[added99 <= 1.0]}",
            ]
        rss = max(
            (
                r["server_rss_max_mb"]
                for runs in ops.values()
                for p, r in runs.items()
                if p in ("api", "grpc")
            ),
            default=None,
        )
        if rss is not None:
            out.append(f"Redis RSS per worker {rss:.1f} MB at most (≤ 60): {mark[rss <= 60]}")
        bulk = backend.get("bulk", {}).get("bulk_get_100", {})
        reads = bulk.get("socket_reads_by_redis")
        if reads is not None:
            out.append(
                f"Redis bulk get of 100 keys: {reads} socket read(s) by Redis, commands {bulk.get('commands')}"
            )
    return out
