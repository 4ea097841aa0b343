"""daprd measured in the same run as statestore-sidecar: the same backend, core, payload and clients.

A real daprd (`statestore_testing.daprd`; `make daprd` builds it) serves a Component of the same
kind on its own rows (another key prefix, table or file), pinned to the sidecar's core once it is up. Its HTTP
API is driven by the same client as ours (wrk when present), its gRPC API by the same gRPC client.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from statestore_testing.daprd import DaprComponent, Daprd

from . import targets as t
from .load import have_go_load

PATHS = ("daprd-http", "daprd-grpc")
Measure = Callable[..., Awaitable[dict[str, Any]]]


def own_rows(component_type: str, metadata: dict[str, str]) -> dict[str, str]:
    """The same store, with rows of daprd's own: its stored format differs from ours."""
    out = {**metadata, "keyPrefix": "daprdbench"}
    if component_type == "state.postgresql":
        # Its own metadata table too: daprd keeps one migration level per metadata table, and at
        # the level ours left it would never create its table.
        out["tableName"] = "daprd_state"
        out["metadataTableName"] = "daprd_metadata"
    if component_type == "state.sqlite":
        out["connectionString"] = metadata["connectionString"].replace(".db", "-daprd.db")
    return out


async def measure_daprd(
    component_type: str,
    metadata: dict[str, str],
    workdir: Path,
    *,
    ops: tuple[str, ...],
    value: bytes,
    connections: int,
    core: str,
    db_pids: list[int],
    measure: Measure,
    wrk: bool,
) -> dict[str, dict[str, Any]]:
    """{op: {"daprd-http": figures, "daprd-grpc": figures}}."""
    folder = workdir / "daprd"
    folder.mkdir()
    store = DaprComponent(t.STORE, component_type, own_rows(component_type, metadata))
    out: dict[str, dict[str, Any]] = {op: {} for op in ops}
    with Daprd([store], folder, app_id=t.APP_ID) as daprd:
        proc = daprd._proc
        assert proc is not None
        # Every thread, and the threads they start later, on the sidecar's core.
        pin = ["taskset", "-a", "-cp", core, str(proc.pid)]
        await asyncio.to_thread(subprocess.run, pin, check=True, capture_output=True)
        seed = await t.Api.open(daprd.http_port, value, connections)
        try:
            statuses = await asyncio.gather(*(seed.save(i) for i in range(t.KEYS)))
        finally:
            await seed.close()
        if set(statuses) != {204}:
            raise RuntimeError(f"seeding daprd failed: {sorted(set(statuses))}:\n{daprd.log_tail()}")
        for op in ops:
            http = await t.Api.open(daprd.http_port, value, connections)
            try:
                out[op]["daprd-http"] = await measure(
                    http,
                    op=op,
                    server_pids=[proc.pid],
                    db_pids=db_pids,
                    wrk_url=daprd.http_url if wrk else None,
                )
            finally:
                await http.close()
            grpc = t.Grpc(daprd.grpc_port, value, connections)
            try:
                out[op]["daprd-grpc"] = await measure(
                    grpc,
                    op=op,
                    server_pids=[proc.pid],
                    db_pids=db_pids,
                    wrk_url=None,
                    grpc_address=f"127.0.0.1:{daprd.grpc_port}" if wrk and have_go_load() else None,
                )
            finally:
                await grpc.close()
    return out
