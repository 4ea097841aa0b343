"""Real Redis, PostgreSQL and MariaDB servers on free loopback ports, with throwaway data folders.

Each server has `host`, `port`, `address` ("host:port"), `user`, `password`, `data_dir`,
`start()` / `stop(kill=False)` (same port, same data: for outage tests; `kill=True` is a crash),
`restart()`, `pause()` / `resume()` (SIGSTOP/SIGCONT: a hung server), `running`,
`start_seconds` / `setup_seconds`, and a connection-string helper: `RedisServer.url()`,
`PostgresServer.connection_string(form="keyword"|"url")`, `MariaDBServer.dsn(params)` (also
`connection_string`). `RedisSentinelSet` (a primary, a replica, three Sentinels) and
`RedisClusterSet` (three Cluster primaries) start several of these together (see redis_ha). With `tls=True` a server gets a throwaway CA, server and client certificate
(`server.pki`). `with RedisServer() as server: ...` starts one and removes it afterwards.
"""

from statestore_testing.databases.mariadb import MariaDBServer
from statestore_testing.databases.postgres import PostgresServer
from statestore_testing.databases.redis import RedisServer
from statestore_testing.databases.redis_ha import RedisClusterSet, RedisSentinelSet, SentinelServer
from statestore_testing.databases.server import INSTALL_HINT, BackendBinaryMissing, Server

__all__ = [
    "INSTALL_HINT",
    "BackendBinaryMissing",
    "MariaDBServer",
    "PostgresServer",
    "RedisClusterSet",
    "RedisSentinelSet",
    "RedisServer",
    "SentinelServer",
    "Server",
]
