"""`state.postgresql` settings: the schema and the parsers of its values (pgx/libpq connection
strings in keyword and URL form, TLS modes, durations); no driver needed."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from ...schema import Field, Kind, MetadataError, StoreSchema, parse_duration
from ..base import Feature

_IDENT = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
TABLE_PATTERN = rf"{_IDENT}(\.{_IDENT})?"  # a table, or schema.table
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# pgx options we understand; every other option is refused (pgx would send it to the server as a
# run-time parameter, which we do only for the well-known ones listed in _RUNTIME_PARAMS).
_KNOWN_OPTIONS = frozenset(
    {
        "host", "hostaddr", "port", "user", "password", "dbname", "database", "sslmode", "sslrootcert",
        "sslcert", "sslkey", "sslpassword", "connect_timeout", "pool_max_conns", "pool_min_conns",
        "pool_max_conn_idle_time",
    }
)  # fmt: skip
_RUNTIME_PARAMS = frozenset({"application_name", "search_path", "timezone", "statement_timeout"})


@dataclass
class ConnectParams:
    """What asyncpg needs to connect, translated from a pgx connection string."""

    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    database: str | None = None
    sslmode: str = "prefer"
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    sslpassword: str | None = None
    connect_timeout: float | None = None
    server_settings: dict[str, str] = field(default_factory=dict)
    pool_max: int | None = None
    pool_min: int | None = None
    pool_idle: float | None = None

    def ssl(self) -> ssl.SSLContext | str | bool:
        """The `ssl` argument of asyncpg.connect for this sslmode."""
        if self.sslmode == "disable":
            return False
        files = self.sslrootcert or self.sslcert
        if not files and self.sslmode in ("allow", "prefer", "require"):
            return self.sslmode
        if self.sslmode in ("verify-ca", "verify-full"):
            context = ssl.create_default_context(cafile=self.sslrootcert)
            context.check_hostname = self.sslmode == "verify-full"
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            if self.sslrootcert:  # libpq: a root certificate with "require" verifies the CA
                context.load_verify_locations(cafile=self.sslrootcert)
            else:
                context.verify_mode = ssl.CERT_NONE
        if self.sslcert:
            context.load_cert_chain(self.sslcert, self.sslkey, password=self.sslpassword)
        return context

    def describe(self) -> str:
        """host:port/database, for messages (never the password)."""
        return f"{self.host or 'localhost'}:{self.port or 5432}/{self.database or self.user or ''}"


def _keyword_pairs(text: str) -> list[tuple[str, str]]:
    """`key=value` pairs of a libpq/pgx keyword connection string (values may be 'quoted')."""
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return pairs
        start = i
        while i < n and text[i] != "=" and not text[i].isspace():
            i += 1
        name = text[start:i]
        while i < n and text[i].isspace():
            i += 1
        if not name or i >= n or text[i] != "=":
            raise MetadataError("connectionString", f"expected key=value near option {name or '?'!r}")
        i += 1
        while i < n and text[i].isspace():
            i += 1
        value: list[str] = []
        if i < n and text[i] == "'":
            i += 1
            while True:
                if i >= n:
                    raise MetadataError("connectionString", f"unterminated quoted value for {name!r}")
                ch = text[i]
                if ch == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                elif ch == "'":
                    i += 1
                    break
                else:
                    value.append(ch)
                    i += 1
        else:
            while i < n and not text[i].isspace():
                if text[i] == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                else:
                    value.append(text[i])
                    i += 1
        pairs.append((name, "".join(value)))


def _url_pairs(text: str) -> list[tuple[str, str]]:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise MetadataError("connectionString", f"is not a valid URL: {exc}") from None
    pairs: list[tuple[str, str]] = []
    netloc = parts.netloc.rpartition("@")[2]
    if "," in netloc:
        raise MetadataError("connectionString", "lists several hosts; only one host is supported")
    if parts.hostname:
        pairs.append(("host", unquote(parts.hostname)))
    if port is not None:
        pairs.append(("port", str(port)))
    if parts.username:
        pairs.append(("user", unquote(parts.username)))
    if parts.password is not None:
        pairs.append(("password", unquote(parts.password)))
    database = parts.path.lstrip("/")
    if database:
        pairs.append(("database", unquote(database)))
    if parts.fragment:
        raise MetadataError("connectionString", "must not have a #fragment")
    pairs.extend(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
    return pairs


def parse_connection_string(text: str) -> ConnectParams:
    """ConnectParams from a pgx connection string, keyword or URL form; MetadataError if refused.

    Messages name options, never values: the string usually holds a password.
    """
    stripped = text.strip()
    if re.match(r"^postgres(ql)?://", stripped, re.IGNORECASE):
        pairs = _url_pairs(stripped)
    elif "://" in stripped.split("=", 1)[0]:
        raise MetadataError("connectionString", "URL form must start with postgres:// or postgresql://")
    else:
        pairs = _keyword_pairs(stripped)
    params = ConnectParams()
    seen: set[str] = set()
    for raw_name, value in pairs:
        name = raw_name.lower() if raw_name.lower() in _KNOWN_OPTIONS | _RUNTIME_PARAMS else raw_name
        canonical = "database" if name == "dbname" else ("host" if name == "hostaddr" else name)
        if canonical in seen:
            raise MetadataError("connectionString", f"option {raw_name!r} is given twice")
        seen.add(canonical)
        if name in _RUNTIME_PARAMS:
            params.server_settings[name] = value
            continue
        if name not in _KNOWN_OPTIONS:
            supported = ", ".join(sorted(_KNOWN_OPTIONS | _RUNTIME_PARAMS))
            raise MetadataError(
                "connectionString",
                f"option {raw_name!r} is not supported by this server (supported: {supported})",
            )
        match canonical:
            case "host":
                if "," in value:
                    raise MetadataError("connectionString", "lists several hosts; only one host is supported")
                params.host = value or None
            case "port":
                if not value.isdigit() or not 0 < int(value) < 65536:
                    raise MetadataError("connectionString", "port must be a number from 1 to 65535")
                params.port = int(value)
            case "user":
                params.user = value
            case "password":
                params.password = value
            case "database":
                params.database = value
            case "sslmode":
                if value not in _SSL_MODES:
                    raise MetadataError("connectionString", f"sslmode must be one of {', '.join(_SSL_MODES)}")
                params.sslmode = value
            case "sslrootcert" | "sslcert" | "sslkey" | "sslpassword":
                setattr(params, canonical, value or None)
            case "connect_timeout":
                try:
                    seconds = parse_duration(value)
                except ValueError:
                    raise MetadataError("connectionString", "connect_timeout must be seconds") from None
                params.connect_timeout = seconds if seconds > 0 else None
            case "pool_max_conns" | "pool_min_conns":
                if not value.isdigit():
                    raise MetadataError("connectionString", f"{canonical} must be a non-negative integer")
                if canonical == "pool_max_conns":
                    params.pool_max = int(value)
                else:
                    params.pool_min = int(value)
            case "pool_max_conn_idle_time":
                try:
                    params.pool_idle = parse_duration(value)
                except ValueError:
                    raise MetadataError(
                        "connectionString", "pool_max_conn_idle_time must be a duration"
                    ) from None
    if params.sslkey and not params.sslcert:
        raise MetadataError("connectionString", "sslkey needs sslcert")
    return params


def quote_table(name: str) -> str:
    """A validated, lower-cased (as PostgreSQL folds unquoted names) and quoted table name."""
    if not re.fullmatch(TABLE_PATTERN, name):
        raise MetadataError("tableName", f"{name!r} is not a valid table name")
    return ".".join(f'"{part.lower()}"' for part in name.split("."))


SCHEMA = StoreSchema(
    type="state.postgresql",
    fields=(
        # pgx keyword form (host=... user=...) or URL form (postgres://...).
        Field("connectionString", required=True, check=parse_connection_string),
        Field("tableName", default="state", pattern=TABLE_PATTERN),
        Field("metadataTableName", default="dapr_metadata", pattern=TABLE_PATTERN),
        Field("timeout", Kind.DURATION, default=20.0, minimum=1.0, aliases=("timeoutInSeconds",)),
        Field("cleanupInterval", Kind.DURATION, default=3600.0, aliases=("cleanupIntervalInSeconds",)),
        Field("maxConns", Kind.INT, default=0, minimum=0),  # 0: max(4, CPUs)
        Field("connectionMaxIdleTime", Kind.DURATION, default=300.0),
        # cache_statement (the default) caches prepared statements; the others do not (for connection
        # poolers such as PgBouncer).
        Field(
            "queryExecMode",
            default="",
            choices=("", "cache_statement", "cache_describe", "describe_exec", "exec", "simple_protocol"),
        ),
    ),
    features=frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API}),
    versions=("v1",),
    unsupported={
        "useAzureAD": "Azure AD authentication is not implemented; use a password in connectionString",
        "azureClientId": "Azure AD authentication is not implemented",
        "azureEnvironment": "Azure AD authentication is not implemented",
        "azureTenantId": "Azure AD authentication is not implemented",
        "azureClientSecret": "Azure AD authentication is not implemented",
        "azureCertificate": "Azure AD authentication is not implemented",
        "azureCertificateFile": "Azure AD authentication is not implemented",
        "azureCertificatePassword": "Azure AD authentication is not implemented",
        "useAWSIAM": "AWS IAM authentication is not implemented; use a password in connectionString",
        "awsRegion": "AWS IAM authentication is not implemented",
        "awsAccessKey": "AWS IAM authentication is not implemented",
        "awsSecretKey": "AWS IAM authentication is not implemented",
        "awsSessionToken": "AWS IAM authentication is not implemented",
        "awsIamRoleArn": "AWS IAM authentication is not implemented",
        "awsStsSessionName": "AWS IAM authentication is not implemented",
        "host": "give the host inside connectionString",
        "hostaddr": "give the host inside connectionString",
        "port": "give the port inside connectionString",
        "database": "give the database inside connectionString",
        "user": "give the user inside connectionString",
        "password": "give the password inside connectionString",
        "sslRootCert": "give sslrootcert inside connectionString",
        "tablePrefix": "belongs to state.postgresql v2, which is not implemented; use tableName",
    },
)
