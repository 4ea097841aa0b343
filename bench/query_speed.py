"""Query speed of the SQL stores on a few thousand rows, through the Store API (no HTTP).

    .venv/bin/python -m bench.query_speed [--rows 3000] [--rounds 30]
    PYTHONPATH=<checkout>/sidecar .venv/bin/python -m bench.query_speed   # another version's stores

Starts PostgreSQL and MariaDB (statestore_testing.databases), writes `--rows` JSON documents, then
times each query `--rounds` times and prints the median and the 90th percentile in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
import uuid
from typing import Any

import orjson

from statestore_sidecar import query as q
from statestore_sidecar.schema import resolve
from statestore_sidecar.stores import StoreConfig, create_store, schema_for
from statestore_sidecar.stores.base import SetRequest
from statestore_testing.databases import MariaDBServer, PostgresServer

QUERIES: dict[str, dict[str, Any]] = {
    "eq": {"filter": {"EQ": {"state": "CA"}}},
    "in+sort+limit": {
        "filter": {"IN": {"state": ["CA", "WA"]}},
        "sort": [{"key": "person.age", "order": "DESC"}],
        "page": {"limit": 50},
    },
    "and-range": {"filter": {"AND": [{"EQ": {"person.org": "dev"}}, {"GT": {"person.age": 40}}]}},
    "all-sorted-page": {"sort": [{"key": "person.name"}], "page": {"limit": 100}},
}
STATES = ["CA", "WA", "OR", "NY", "TX", "NV"]


def document(i: int) -> bytes:
    return orjson.dumps(
        {
            "person": {"name": f"name-{i:05d}", "age": 18 + i % 60, "org": ["dev", "ops", "qa"][i % 3]},
            "state": STATES[i % len(STATES)],
            "note": "x" * (i % 50),
        }
    )


async def measure(store_type: str, metadata: dict[str, str], rows: int, rounds: int) -> dict[str, Any]:
    config = StoreConfig("bench", resolve(schema_for(store_type), metadata))
    store = create_store(store_type, config)
    await store.init()
    try:
        for start in range(0, rows, 500):
            await store.transact(
                [SetRequest(f"app||k{i}", document(i)) for i in range(start, min(start + 500, rows))]
            )
        results: dict[str, Any] = {}
        for name, body in QUERIES.items():
            parsed = q.parse(body)
            await store.query(parsed, "app||")  # warm up: plans and statement caches
            took = []
            for _ in range(rounds):
                started = time.perf_counter()
                page = await store.query(parsed, "app||")
                took.append((time.perf_counter() - started) * 1000)
            took.sort()
            results[name] = {
                "items": len(page.items),
                "median_ms": round(statistics.median(took), 2),
                "p90_ms": round(took[int(len(took) * 0.9) - 1], 2),
            }
        return results
    finally:
        await store.close()


def _nothing() -> contextlib.nullcontext[None]:
    return contextlib.nullcontext()


async def main(rows: int, rounds: int, stores: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pg = PostgresServer()
    with pg if "postgresql" in stores else _nothing():
        metadata = {"connectionString": pg.connection_string(), "tableName": f"q_{uuid.uuid4().hex[:8]}"}
        if "postgresql" in stores:
            out["postgresql"] = await measure("state.postgresql", metadata, rows, rounds)
    my = MariaDBServer()
    with my if "mysql" in stores else _nothing():
        metadata = {"connectionString": my.dsn(), "tableName": f"q_{uuid.uuid4().hex[:8]}"}
        if "mysql" in stores:
            out["mysql"] = await measure("state.mysql", metadata, rows, rounds)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--stores", default="postgresql,mysql")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rows, args.rounds, args.stores.split(","))), indent=2))
