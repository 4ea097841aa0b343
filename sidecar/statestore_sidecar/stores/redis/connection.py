"""How a `state.redis` store connects: its metadata as connection settings, and the redis-py client
(one node, Sentinel or Cluster, through topology.py) or the pipelined connection they call for."""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import StoreConfig
from . import topology
from .metadata import NODE_PORT, SENTINEL_PORT, parse_host, parse_hosts
from .pipelined import Pipeline

if TYPE_CHECKING:
    import redis.asyncio


@dataclass(frozen=True, slots=True)
class Settings:
    """A Component's connection metadata, parsed and with go-redis's defaults applied."""

    name: str
    cluster: bool
    failover: bool
    sentinel_name: str
    sentinel_auth: dict[str, str | None]
    hosts: list[tuple[str, int]]
    where: str  # how errors name the backend
    db: int
    username: str | None
    password: str | None
    tls: bool
    skip_verify: bool
    client_cert: str | None
    client_key: str | None
    max_retries: int
    min_backoff: float
    max_backoff: float
    dial_timeout: float
    read_timeout: float
    write_timeout: float
    pool_size: int
    pool_timeout: float
    min_idle: int
    idle_timeout: float
    default_ttl: int | None
    query_indexes: Any
    call_timeout: float  # every call is bounded: connecting, sending and reading, plus back-off

    @classmethod
    def from_config(cls, config: StoreConfig) -> Settings:
        md = config.metadata
        cluster: bool = md["redisType"] == "cluster"
        failover: bool = md["failover"]
        sentinel_name: str = md["sentinelMasterName"] or ""
        if failover or cluster:
            hosts = parse_hosts(md["redisHost"], md["redisPort"], SENTINEL_PORT if failover else NODE_PORT)
        else:
            hosts = [parse_host(md["redisHost"], md["redisPort"])]
        listed = ",".join(f"{host}:{port}" for host, port in hosts)
        where = (
            f"{sentinel_name} (Sentinels {listed})"
            if failover
            else f"cluster {listed}"
            if cluster
            else listed
        )
        read_timeout: float = md["readTimeout"]
        write_timeout: float = md["writeTimeout"] if md["writeTimeout"] is not None else read_timeout
        max_retries: int = md["redisMaxRetries"]
        min_backoff = max(md["redisMinRetryInterval"], 0.0)
        max_backoff = max(md["redisMaxRetryInterval"], min_backoff)
        dial_timeout: float = md["dialTimeout"]
        ttl = md["ttlInSeconds"]
        attempts = max(max_retries, 0) + 1
        return cls(
            name=config.name,
            cluster=cluster,
            failover=failover,
            sentinel_name=sentinel_name,
            sentinel_auth={
                "username": md["sentinelUsername"] or None,
                "password": md["sentinelPassword"] or None,
            },
            hosts=hosts,
            where=where,
            db=md["redisDB"],
            username=md["redisUsername"] or None,
            password=md["redisPassword"] or None,
            tls=md["enableTLS"],
            skip_verify=md["insecureSkipTLSVerify"],
            client_cert=md["clientCert"] or None,
            client_key=md["clientKey"] or None,
            max_retries=max_retries,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            dial_timeout=dial_timeout,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            pool_size=md["poolSize"] or 10 * (os.cpu_count() or 1),
            pool_timeout=md["poolTimeout"] if md["poolTimeout"] is not None else read_timeout + 1.0,
            min_idle=md["minIdleConns"],
            idle_timeout=md["idleTimeout"],
            default_ttl=ttl if ttl is not None and ttl > 0 else None,
            query_indexes=md["queryIndexes"],
            call_timeout=(
                max(dial_timeout, 0.1)
                + max(read_timeout, write_timeout, 0.1)
                + min(attempts * max_backoff, 2.0)
            ),
        )


@dataclass
class Connected:
    """What `connect` made: the client, the pipelined connection (one node without TLS) and the
    folder of the TLS client certificate's files, for the store to close."""

    client: redis.asyncio.Redis
    pipeline: Pipeline | None
    tls_dir: tempfile.TemporaryDirectory[str] | None


def _ssl_options(s: Settings) -> tuple[dict[str, Any], tempfile.TemporaryDirectory[str] | None]:
    if not s.tls:
        return {}, None
    options: dict[str, Any] = {
        "ssl": True,
        "ssl_cert_reqs": ssl.CERT_NONE if s.skip_verify else ssl.CERT_REQUIRED,
        "ssl_check_hostname": not s.skip_verify,
    }
    if not (s.client_cert and s.client_key):
        return options, None
    folder = tempfile.TemporaryDirectory(prefix="statestore-redis-tls-")
    cert = os.path.join(folder.name, "client.crt")
    key = os.path.join(folder.name, "client.key")
    for path, text in ((cert, s.client_cert), (key, s.client_key)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    options.update(ssl_certfile=cert, ssl_keyfile=key)
    return options, folder


def connect(s: Settings) -> Connected:
    """The client for the topology (no connection is opened before the first call)."""
    from redis.asyncio.retry import Retry
    from redis.backoff import EqualJitterBackoff, NoBackoff

    backoff = EqualJitterBackoff(cap=s.max_backoff, base=s.min_backoff) if s.min_backoff else NoBackoff()
    tls, tls_dir = _ssl_options(s)
    options: dict[str, Any] = dict(
        db=s.db,
        username=s.username,
        password=s.password,
        socket_connect_timeout=s.dial_timeout,
        socket_timeout=max(s.read_timeout, s.write_timeout),
        socket_keepalive=True,
        retry=Retry(backoff, max(s.max_retries, 0)),
        # A connection idle for longer than this is pinged before reuse: dead ones are replaced.
        health_check_interval=s.idle_timeout if s.idle_timeout > 0 else 0,
        client_name=f"statestore-{s.name}"[:64].replace(" ", "_"),
        protocol=2,
        **tls,
    )
    if s.failover:
        sentinel = topology.sentinel_client(
            s.hosts,
            s.sentinel_name,
            sentinel_auth=s.sentinel_auth,
            options=options,
            pool_size=s.pool_size,
            pool_timeout=s.pool_timeout,
        )
        return Connected(sentinel, None, tls_dir)
    if s.cluster:
        return Connected(topology.cluster_client(s.hosts, options, pool_size=s.pool_size), None, tls_dir)
    pipeline = None
    pool_size = s.pool_size
    if not s.tls:
        pipeline = Pipeline(
            *s.hosts[0],
            db=s.db,
            username=s.username,
            password=s.password,
            client_name=options["client_name"],
            connect_timeout=s.dial_timeout,
            read_timeout=max(s.read_timeout, s.write_timeout),
            idle_timeout=s.idle_timeout,
        )
        pool_size = max(pool_size - 1, 1)  # the pipelined connection counts in poolSize
    node = topology.node_client(s.hosts[0], options, pool_size=pool_size, pool_timeout=s.pool_timeout)
    return Connected(node, pipeline, tls_dir)
