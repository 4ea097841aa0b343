"""Every metadata name Dapr documents for our store types is implemented, refused by name, or listed
here as harmless to ignore with the reason; a name that changes how data is protected (encryption,
TLS, authentication) is never among the ignored.

The lists are Dapr's, written down as data with where each came from:
- components-contrib v1.14.0-rc.6 (the version dapr v1.14.0 builds with): `state/<store>/metadata.yaml`,
  their `builtinAuthenticationProfiles` expanded with `.build-tools/builtin-authentication-profiles.yaml`
  (the Azure AD profile's names; the AWS names are in the PostgreSQL file itself);
- docs.dapr.io component pages where there is no metadata.yaml (SQLite) or where they add names
  (setup-redis: `maxRetries`, `maxRetryBackoff`, `useEntraID`; setup-mysql: the pool settings);
- daprd's own metadata on every state store: `keyPrefix`, `actorStateStore`, the encryption keys
  (howto-encrypt-state) and the outbox settings (howto-outbox).
"""

from __future__ import annotations

import pytest

from statestore_sidecar import components
from statestore_sidecar.schema import COMMON_FIELDS, IGNORED_KEYS
from statestore_sidecar.stores import schema_for

EVERY_STATE_STORE = [
    "keyPrefix",
    "actorStateStore",
    "primaryEncryptionKey",
    "secondaryEncryptionKey",
    "outboxPublishPubsub",
    "outboxPublishTopic",
    "outboxPubsub",
    "outboxDiscardWhenMissingState",
]
AZURE_AD_PROFILE = [
    "azureClientId",
    "azureTenantId",
    "azureClientSecret",
    "azureCertificate",
    "azureCertificateFile",
    "azureCertificatePassword",
    "azureEnvironment",
]
DOCUMENTED: dict[str, list[str]] = {
    # state/in-memory/metadata.yaml: no metadata of its own.
    "state.in-memory": [],
    # docs.dapr.io setup-sqlite (the store has no metadata.yaml in components-contrib 1.14).
    "state.sqlite": [
        "connectionString",
        "timeout",
        "timeoutInSeconds",
        "tableName",
        "metadataTableName",
        "cleanupInterval",
        "busyTimeout",
        "disableWAL",
    ],
    # state/redis/metadata.yaml (metadata, then the azuread profile), then setup-redis additions.
    "state.redis": [
        "redisHost",
        "redisPassword",
        "redisUsername",
        "enableTLS",
        "clientCert",
        "clientKey",
        "failover",
        "sentinelMasterName",
        "redeliverInterval",
        "processingTimeout",
        "redisType",
        "redisDB",
        "redisMaxRetries",
        "redisMinRetryInterval",
        "redisMaxRetryInterval",
        "dialTimeout",
        "readTimeout",
        "writeTimeout",
        "poolSize",
        "poolTimeout",
        "maxConnAge",
        "minIdleConns",
        "idleCheckFrequency",
        "idleTimeout",
        "ttlInSeconds",
        "queryIndexes",
        "useEntraID",
        *AZURE_AD_PROFILE,
        "maxRetries",
        "maxRetryBackoff",
    ],
    # state/postgresql/v1/metadata.yaml: metadata, the connection string profile, the azuread and
    # aws profiles; setup-postgresql-v2 adds the individual connection parameters.
    "state.postgresql": [
        "connectionString",
        "timeout",
        "tableName",
        "metadataTableName",
        "cleanupInterval",
        "maxConns",
        "connectionMaxIdleTime",
        "queryExecMode",
        "useAzureAD",
        *AZURE_AD_PROFILE,
        "useAWSIAM",
        "awsRegion",
        "awsAccessKey",
        "awsSecretKey",
        "host",
        "hostaddr",
        "port",
        "database",
        "user",
        "password",
        "sslRootCert",
    ],
    # state/mysql/metadata.yaml, then setup-mysql's pool settings and pemContents.
    "state.mysql": [
        "connectionString",
        "cleanupInterval",
        "metadataTableName",
        "pemPath",
        "schemaName",
        "tableName",
        "timeoutInSeconds",
        "pemContents",
        "maxIdleConns",
        "maxOpenConns",
        "connMaxLifetime",
        "connMaxIdleTime",
    ],
}
# Names that change how data is protected: implemented or refused, never ignored.
PROTECTION = frozenset(
    n.lower()
    for n in (
        "primaryEncryptionKey",
        "secondaryEncryptionKey",
        "enableTLS",
        "clientCert",
        "clientKey",
        "redisPassword",
        "redisUsername",
        "useEntraID",
        *AZURE_AD_PROFILE,
        "useAzureAD",
        "useAWSIAM",
        "awsRegion",
        "awsAccessKey",
        "awsSecretKey",
        "password",
        "user",
        "sslRootCert",
        "connectionString",
        "pemPath",
        "pemContents",
    )
)
# Documented names accepted and ignored, with why that is harmless.
HARMLESS = {
    name.lower(): "the transactional outbox publishes to pub/sub, which this server does not serve;"
    " the state is written the same"
    for name in ("outboxPublishPubsub", "outboxPublishTopic", "outboxPubsub", "outboxDiscardWhenMissingState")
}


def verdict(store_type: str, name: str) -> str:
    schema = schema_for(store_type)
    known = {n.lower() for f in (*COMMON_FIELDS, *schema.fields) for n in (f.name, *f.aliases)}
    refused = {n.lower() for n in schema.unsupported}
    lowered = name.lower()
    if lowered in known:
        return "implemented"
    if lowered in refused:
        return "refused"
    if lowered in HARMLESS and lowered in IGNORED_KEYS:
        return "harmless"
    return "unaccounted"


@pytest.mark.parametrize("store_type", sorted(DOCUMENTED))
def test_every_documented_name_is_accounted_for(store_type: str) -> None:
    verdicts = {name: verdict(store_type, name) for name in [*EVERY_STATE_STORE, *DOCUMENTED[store_type]]}
    assert [n for n, v in verdicts.items() if v == "unaccounted"] == []
    ignored_protection = [n for n, v in verdicts.items() if v == "harmless" and n.lower() in PROTECTION]
    assert ignored_protection == []


@pytest.mark.parametrize("store_type", sorted(DOCUMENTED))
def test_refused_names_are_refused_by_name_and_harmless_ones_pass(store_type: str) -> None:
    good = {
        "state.in-memory": {},
        "state.sqlite": {"connectionString": ":memory:"},
        "state.redis": {"redisHost": "localhost:6379"},
        "state.postgresql": {"connectionString": "host=localhost user=u password=p dbname=d"},
        "state.mysql": {"connectionString": "u:p@tcp(localhost:3306)/"},
    }[store_type]
    for name in [*EVERY_STATE_STORE, *DOCUMENTED[store_type]]:
        values = {**good, name: "x"}
        doc = {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": "store"},
            "spec": {"type": store_type, "metadata": [{"name": k, "value": v} for k, v in values.items()]},
        }
        component = components.parse(doc)
        match verdict(store_type, name):
            case "refused":
                with pytest.raises(components.ComponentError) as info:
                    components.validate(component, values)
                assert info.value.field == name
                assert "is not supported by this server" in str(info.value)
            case "harmless":
                assert components.validate(component, values).warnings == ()
