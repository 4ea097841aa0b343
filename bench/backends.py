"""The database servers a bench run starts (the test suite's), each with its Component metadata, a
direct client factory and a probe of the backend work a request causes."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from statestore_testing.databases import PostgresServer, RedisServer

from . import targets as t


@dataclass
class Backend:
    """A running backend: the Component metadata for it, its server's pid, a direct client factory."""

    name: str
    component_type: str
    metadata: dict[str, str]
    pid: int | None
    direct: Callable[[bytes, int], Awaitable[t.Target]]
    bulk_probe: Callable[[Callable[[], None]], dict[str, Any]] | None = None
    version: str = ""


class BenchPostgres(PostgresServer):
    """The test suite's PostgreSQL, plus pg_stat_statements to count the statements a request runs."""

    def _command(self) -> list[str]:
        return [*super()._command(), "-c", "shared_preload_libraries=pg_stat_statements"]


def _redis_info(server: RedisServer) -> dict[str, int]:
    reply = server.command("INFO", "stats", "commandstats").decode(errors="replace")
    out = {"reads": int(re.search(r"total_reads_processed:(\d+)", reply).group(1))}  # type: ignore[union-attr]
    for name, calls in re.findall(r"cmdstat_(\w+):calls=(\d+)", reply):
        out[name] = int(calls)
    return out


def _redis_probe(server: RedisServer) -> Callable[[Callable[[], None]], dict[str, Any]]:
    def probe(action: Callable[[], None]) -> dict[str, Any]:
        # Two INFOs back to back measure what INFO itself adds; subtract it.
        a, b = _redis_info(server), _redis_info(server)
        action()
        c = _redis_info(server)
        reads = (c["reads"] - b["reads"]) - (b["reads"] - a["reads"])
        commands = {k: c.get(k, 0) - b.get(k, 0) for k in c if k not in ("reads", "info")}
        return {"socket_reads_by_redis": reads, "commands": {k: v for k, v in commands.items() if v}}

    return probe


def _pg_probe(server: PostgresServer) -> Callable[[Callable[[], None]], dict[str, Any]]:
    import asyncpg

    async def counts() -> dict[str, int]:
        conn = await asyncpg.connect(server.connection_string("url"))
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            rows = await conn.fetch(
                "SELECT query, calls FROM pg_stat_statements "
                "WHERE query NOT ILIKE '%pg_stat_statements%' AND dbid = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        finally:
            await conn.close()
        return {r["query"]: r["calls"] for r in rows}

    def probe(action: Callable[[], None]) -> dict[str, Any]:
        before = asyncio.run(counts())
        action()
        time.sleep(0.6)  # statistics reach the shared view when a backend goes idle (at most 0.5 s later)
        after = asyncio.run(counts())
        delta = {q: n - before.get(q, 0) for q, n in after.items() if n - before.get(q, 0)}
        return {"statements": sum(delta.values()), "by_statement": delta}

    return probe


@contextlib.contextmanager
def start_backend(name: str, workdir: Path) -> Iterator[Backend]:
    if name == "redis":
        # appendfsync everysec: Redis' own default once AOF is on (the test fixture syncs every write).
        redis = RedisServer(workdir / "redis", appendfsync="everysec")
        redis.start()
        try:
            url = redis.url()

            async def redis_direct(value: bytes, conns: int) -> t.Target:
                return t.RedisDirect(url, value, conns)

            version = re.search(rb"redis_version:(\S+)", redis.command("INFO", "server"))
            yield Backend(
                name,
                "state.redis",
                {"redisHost": redis.address, "redisPassword": redis.password},
                redis.process.pid if redis.process else None,
                redis_direct,
                _redis_probe(redis),
                version.group(1).decode() if version else "",
            )
        finally:
            redis.destroy()
    elif name == "postgresql":
        pg = BenchPostgres(workdir / "postgres")
        pg.start()
        try:
            dsn = pg.connection_string("url")

            async def pg_direct(value: bytes, conns: int) -> t.Target:
                return await t.PostgresDirect.open(dsn, value, conns)

            yield Backend(
                name,
                "state.postgresql",
                {"connectionString": pg.connection_string(), "tableName": "state"},
                pg.process.pid if pg.process else None,
                pg_direct,
                _pg_probe(pg),
                Path(pg.postgres).parent.parent.name,
            )
        finally:
            pg.destroy()
    elif name == "sqlite":
        path = str(workdir / "state.db")

        async def sqlite_direct(value: bytes, conns: int) -> t.Target:
            return t.SqliteDirect(path, value)

        import sqlite3

        yield Backend(
            name,
            "state.sqlite",
            {"connectionString": path},
            None,
            sqlite_direct,
            None,
            sqlite3.sqlite_version,
        )
    else:
        raise ValueError(f"unknown backend {name!r}")
