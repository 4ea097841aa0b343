"""`state.redis` settings: the schema and the parsers of its values (no driver needed)."""

from __future__ import annotations

from ...schema import AZURE_AD_PROFILE, Field, Kind, MetadataError, Resolved, StoreSchema
from ..base import Feature

# Where each topology's hosts listen when `redisHost` names no port (and `redisPort` is not given).
NODE_PORT = 6379
SENTINEL_PORT = 26379


def _one_host(text: str, default_port: int) -> tuple[str, int]:
    """(host, port) from "host", "host:port" or "[v6]:port"."""
    if "://" in text:
        raise MetadataError("redisHost", "must be host:port, not a URL")
    name, sep, port_text = text.rpartition(":") if not text.endswith("]") else ("", "", "")
    if not sep or (":" in name and not name.startswith("[")):
        name, port_text = text, ""
    name = name.removeprefix("[").removesuffix("]")
    if not name:
        raise MetadataError("redisHost", f"{text!r} has no host name")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise MetadataError("redisHost", f"{text!r} has an invalid port")
        return name, int(port_text)
    return name, default_port


def parse_hosts(hosts: str, port: int | None, default_port: int = NODE_PORT) -> list[tuple[str, int]]:
    """Every (host, port) of a comma-separated `redisHost` (cluster seed nodes, or Sentinels)."""
    parts = [part.strip() for part in hosts.split(",")]
    if any(not part for part in parts):
        raise MetadataError("redisHost", f"{hosts!r} has an empty host in its list")
    fallback = port if port is not None else default_port
    found = [_one_host(part, fallback) for part in parts]
    if len(set(found)) != len(found):
        raise MetadataError("redisHost", f"{hosts!r} names a host twice")
    return found


def parse_host(host: str, port: int | None) -> tuple[str, int]:
    """(host, port) from `redisHost` ("host", "host:port", "[v6]:port") and `redisPort`."""
    if "," in host:
        raise MetadataError(
            "redisHost",
            "lists several hosts; that needs redisType: cluster (seed nodes) or failover: true (Sentinels)",
        )
    return parse_hosts(host, port)[0]


def check(md: Resolved) -> None:
    """Rules across settings (opaque values pass)."""
    cert, key = md.given("clientCert"), md.given("clientKey")
    if (cert or key) and md.known("enableTLS") and not md["enableTLS"]:
        raise MetadataError("clientCert", _NO_TLS_CLIENT_AUTH)
    if cert != key:
        raise MetadataError("clientCert", "clientCert and clientKey must be given together")
    indexes = md["queryIndexes"]
    if indexes is not None and not isinstance(indexes, list):
        raise MetadataError("queryIndexes", "must be a JSON array of {name, indexes}")
    _check_topology(md)


def _check_topology(md: Resolved) -> None:
    cluster = md.known("redisType") and md["redisType"] == "cluster"
    failover = md.known("failover") and md["failover"]
    if failover and cluster:
        raise MetadataError(
            "failover",
            "failover with redisType: cluster (Sentinel-managed replicas serving reads) is not "
            "implemented; use failover: true with redisType: node, or a Redis Cluster without failover",
        )
    if failover and md.known("sentinelMasterName") and not md["sentinelMasterName"]:
        raise MetadataError("sentinelMasterName", "is required with failover: true")
    if not failover:
        for name in ("sentinelMasterName", "sentinelUsername", "sentinelPassword"):
            if md.given(name) and md.known("failover"):
                raise MetadataError(name, "applies only with failover: true (Redis Sentinel)")
    if cluster and md.known("redisDB") and md["redisDB"] != 0:
        raise MetadataError("redisDB", "must be 0 with redisType: cluster (Redis Cluster has one database)")
    if md.known("redisHost") and md.known("redisType") and md.known("failover"):
        if failover or cluster:
            parse_hosts(md["redisHost"], md["redisPort"], SENTINEL_PORT if failover else NODE_PORT)
        else:
            parse_host(md["redisHost"], md["redisPort"])


_NO_TLS_CLIENT_AUTH = "client certificates need enableTLS: true"

SCHEMA = StoreSchema(
    type="state.redis",
    fields=(
        Field("redisHost", required=True, check=lambda text: parse_hosts(text, None)),
        Field("redisPort", Kind.INT),
        Field("redisPassword"),
        Field("redisUsername"),
        Field("redisDB", Kind.INT, default=0, minimum=0),
        Field("redisType", default="node", choices=("node", "cluster")),
        Field("failover", Kind.BOOL, default=False),
        Field("sentinelMasterName"),
        Field("sentinelUsername"),
        Field("sentinelPassword"),
        Field("enableTLS", Kind.BOOL, default=False),
        Field("insecureSkipTLSVerify", Kind.BOOL, default=False),
        Field("clientCert"),
        Field("clientKey"),
        Field("redisMaxRetries", Kind.INT, default=3, aliases=("maxRetries",), minimum=-1),
        Field("redisMinRetryInterval", Kind.DURATION, default=0.008),
        Field("redisMaxRetryInterval", Kind.DURATION, default=0.512, aliases=("maxRetryBackoff",)),
        Field("dialTimeout", Kind.DURATION, default=5.0),
        Field("readTimeout", Kind.DURATION, default=3.0),
        Field("writeTimeout", Kind.DURATION),
        Field("poolSize", Kind.INT, minimum=1),
        Field("poolTimeout", Kind.DURATION),
        Field("minIdleConns", Kind.INT, default=0, minimum=0),
        Field("idleTimeout", Kind.DURATION, default=300.0),
        Field("maxConnAge", Kind.DURATION, default=0.0),
        Field("idleCheckFrequency", Kind.DURATION, default=60.0),
        Field("ttlInSeconds", Kind.INT, minimum=-1),
        Field("queryIndexes", Kind.JSON),
    ),
    features=frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL}),
    check=check,
    unsupported={
        **AZURE_AD_PROFILE,
        "useEntraID": "Microsoft Entra ID authentication is not implemented; use redisUsername/redisPassword",
        "useOIDC": "OIDC authentication is not implemented; use redisUsername/redisPassword",
        "oidcTokenEndpoint": "OIDC authentication is not implemented",
        "oidcClientID": "OIDC authentication is not implemented",
        "oidcClientAssertionCert": "OIDC authentication is not implemented",
        "oidcClientAssertionKey": "OIDC authentication is not implemented",
        "oidcResource": "OIDC authentication is not implemented",
        "oidcAudience": "OIDC authentication is not implemented",
        "oidcScopes": "OIDC authentication is not implemented",
        "oidcKid": "OIDC authentication is not implemented",
        "oidcCACert": "OIDC authentication is not implemented",
        "redeliverInterval": "applies to Redis pub/sub, not to state stores",
        "processingTimeout": "applies to Redis pub/sub, not to state stores",
    },
)
