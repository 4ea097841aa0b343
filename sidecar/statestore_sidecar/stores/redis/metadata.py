"""`state.redis` settings: the schema and the parsers of its values (no driver needed)."""

from __future__ import annotations

from ...schema import AZURE_AD_PROFILE, Field, Kind, MetadataError, Resolved, StoreSchema
from ..base import Feature


def parse_host(host: str, port: int | None) -> tuple[str, int]:
    """(host, port) from `redisHost` ("host", "host:port", "[v6]:port") and `redisPort`."""
    text = host.strip()
    if "," in text:
        raise MetadataError(
            "redisHost", "lists several hosts; only a single node (redisType: node) is supported"
        )
    if "://" in text:
        raise MetadataError("redisHost", "must be host:port, not a URL")
    name, sep, port_text = text.rpartition(":") if not text.endswith("]") else ("", "", "")
    if not sep or (":" in name and not name.startswith("[")):
        name, port_text = text, ""
    name = name.removeprefix("[").removesuffix("]")
    if not name:
        raise MetadataError("redisHost", f"{host!r} has no host name")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise MetadataError("redisHost", f"{host!r} has an invalid port")
        return name, int(port_text)
    return name, port if port is not None else 6379


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


_NO_TLS_CLIENT_AUTH = "client certificates need enableTLS: true"

SCHEMA = StoreSchema(
    type="state.redis",
    fields=(
        Field("redisHost", required=True, check=lambda text: parse_host(text, None)),
        Field("redisPort", Kind.INT),
        Field("redisPassword"),
        Field("redisUsername"),
        Field("redisDB", Kind.INT, default=0, minimum=0),
        Field("redisType", default="node", choices=("node",)),
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
        "failover": "Redis Sentinel failover is not implemented; point redisHost at the primary",
        "sentinelMasterName": "Redis Sentinel is not implemented",
        "sentinelUsername": "Redis Sentinel is not implemented",
        "sentinelPassword": "Redis Sentinel is not implemented",
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
