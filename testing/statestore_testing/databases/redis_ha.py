"""Redis with failover: a primary, a replica and three Sentinels; and a three-primary Redis Cluster.

`RedisSentinelSet`: `primary` and `replica` (RedisServer, one password for both), `sentinels` (three
SentinelServer, quorum 2, with a password of their own, `sentinel_password`, unless that is turned
off), `master_name`, `sentinel_hosts` ("h:p,h:p,h:p"), `current_primary()` (the address the
Sentinels give now) and `server_at(address)`.
A primary is judged down after `down_after_ms` (1 s here; Sentinel's default is 30 s).

`RedisClusterSet`: `nodes` (three RedisServer with `cluster-enabled`, one password), `seed_hosts`,
created with `redis-cli --cluster create` (16384 slots split in three, no replicas).

Both are `ServerGroup`s: they start with `start()` and stop and remove everything with `destroy()` (or
as context managers).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from statestore_testing.databases.redis import RedisServer
from statestore_testing.databases.server import START_TIMEOUT, Server, find_binary
from statestore_testing.ports import free_port
from statestore_testing.waiting import wait_for

MASTER_NAME = "statestore-primary"


def query(server: Server, *args: str, timeout: float = 2.0) -> Any:
    """One authenticated command to a Redis server or Sentinel (a fresh connection each time)."""
    import redis

    client = redis.Redis(
        host=server.host, port=server.port, password=server.password, socket_timeout=timeout,
        socket_connect_timeout=timeout, protocol=2, decode_responses=True,
    )  # fmt: skip
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def _info(server: Server, *args: str) -> dict[str, str]:
    """Fields of an INFO / CLUSTER INFO reply."""
    reply = query(server, *args)
    if isinstance(reply, dict):  # redis-py parses some INFO replies itself
        return {str(k): str(v) for k, v in reply.items()}
    fields = {}
    for line in str(reply).splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    return fields


class SentinelServer(Server):
    """One redis-sentinel watching `primary`, with a password of its own."""

    name = "redis-sentinel"

    def __init__(
        self, primary: RedisServer, password: str = "", down_after_ms: int = 1000, quorum: int = 2
    ) -> None:
        self.binary = find_binary(["redis-sentinel"])
        super().__init__(None)
        self.primary = primary
        self.password = password
        self.down_after_ms = down_after_ms
        self.quorum = quorum
        self.config_path = self.data_dir / "sentinel.conf"

    def _initialise(self) -> None:
        # Sentinel rewrites its configuration file as it learns the topology: it must own it.
        self.data_dir.mkdir(exist_ok=True)
        self._chown(self.data_dir)
        name, primary = MASTER_NAME, self.primary
        self.config_path.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    f"bind {self.host}",
                    f"dir {self.data_dir}",
                    "daemonize no",
                    "protected-mode yes",
                    "loglevel notice",
                    *(
                        [f"requirepass {self.password}", f"sentinel sentinel-pass {self.password}"]
                        * bool(self.password)
                    ),
                    f"sentinel monitor {name} {primary.host} {primary.port} {self.quorum}",
                    f"sentinel auth-pass {name} {primary.password}",
                    f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
                    f"sentinel failover-timeout {name} 10000",
                    f"sentinel parallel-syncs {name} 1",
                    "",
                ]
            )
        )
        self._chown(self.config_path)

    def _command(self) -> list[str]:
        return [self.binary, str(self.config_path)]

    def _ready(self) -> bool:
        return bool(query(self, "PING", timeout=0.5))


class ServerGroup:
    """Servers that work as one: started in order, then `_settle()` waits until they do; a context
    manager that removes everything, also when the start fails."""

    start_seconds: float | None = None

    @property
    def servers(self) -> list[Server]:
        raise NotImplementedError

    def _settle(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        began = time.monotonic()
        for server in self.servers:
            server.start()
        self._settle()
        self.start_seconds = time.monotonic() - began

    def destroy(self) -> None:
        for server in reversed(self.servers):
            server.destroy()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()


class RedisSentinelSet(ServerGroup):
    def __init__(self, down_after_ms: int = 1000, sentinel_password: bool = True) -> None:
        password = "redis-" + secrets.token_hex(8)
        self.primary = RedisServer(appendfsync="everysec", password=password)
        self.replica = RedisServer(
            appendfsync="everysec",
            password=password,
            extra_args=(
                "--replicaof", self.primary.host, str(self.primary.port), "--masterauth", password,
            ),
        )  # fmt: skip
        # A failed-over primary that comes back becomes a replica and must authenticate to the new one.
        self.primary.extra_args = ("--masterauth", password)
        self.password = password
        self.sentinel_password = "sentinel-" + secrets.token_hex(8) if sentinel_password else ""
        self.master_name = MASTER_NAME
        self.sentinels = [
            SentinelServer(self.primary, self.sentinel_password, down_after_ms) for _ in range(3)
        ]

    @property
    def servers(self) -> list[Server]:
        return [self.primary, self.replica, *self.sentinels]

    @property
    def sentinel_hosts(self) -> str:
        return ",".join(s.address for s in self.sentinels)

    def _settle(self) -> None:
        wait_for("the replica to sync with the primary", self._replica_in_sync, START_TIMEOUT)
        wait_for("every Sentinel to know the replica and the other Sentinels", self._sentinels_ready)

    def _replica_in_sync(self) -> bool:
        info = _info(self.replica, "INFO", "replication")
        return info.get("master_link_status") == "up"

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            summary = query(sentinel, "INFO", "sentinel").get("master0", {})
            if (summary.get("status"), summary.get("slaves"), summary.get("sentinels")) != ("ok", 1, 3):
                return False
        return True

    def current_primary(self) -> str:
        """host:port of the primary, as the first answering Sentinel reports it."""
        for sentinel in self.sentinels:
            with contextlib.suppress(Exception):
                host, port = query(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
                return f"{host}:{port}"
        raise RuntimeError("no Sentinel answered")

    def server_at(self, address: str) -> RedisServer:
        return next(s for s in (self.primary, self.replica) if s.address == address)


def _cluster_args(password: str) -> tuple[str, ...]:
    return (
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", "2000",
        # Its own bus port: the default (port + 10000) does not exist above 55535.
        "--cluster-port", str(free_port()),
        "--masterauth", password,
    )  # fmt: skip


class RedisClusterSet(ServerGroup):
    def __init__(self, primaries: int = 3) -> None:
        self.cli = find_binary(["redis-cli"])
        password = "redis-" + secrets.token_hex(8)
        self.password = password
        self.nodes = [
            RedisServer(appendfsync="everysec", password=password, extra_args=_cluster_args(password))
            for _ in range(primaries)
        ]
        self._created = False

    @property
    def servers(self) -> list[Server]:
        return list(self.nodes)

    @property
    def seed_hosts(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def _settle(self) -> None:
        if not self._created:
            self._create()
        wait_for("every cluster node to report cluster_state:ok", self._all_ok, START_TIMEOUT)

    def _create(self) -> None:
        log = self.nodes[0].base_dir / "cluster-create.log"
        command = [self.cli, "--cluster", "create", *(n.address for n in self.nodes)]
        command += ["--cluster-replicas", "0", "--cluster-yes"]
        env = {**os.environ, "REDISCLI_AUTH": self.password}
        with Path(log).open("wb") as out:
            done = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=START_TIMEOUT, check=False
            )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed ({done.returncode}): {log.read_text()}")
        self._created = True

    def _all_ok(self) -> bool:
        return all(_info(n, "CLUSTER", "INFO").get("cluster_state") == "ok" for n in self.nodes)
