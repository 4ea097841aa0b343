"""`state.mysql` settings: the schema and the parsers of its values (the Go MySQL DSN, its TLS
and timeout parameters); no driver needed."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from urllib.parse import unquote

from ...schema import Field, Kind, MetadataError, Resolved, StoreSchema, parse_bool, parse_duration
from ..base import Feature

IDENT_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,63}"

_DSN_PARAMS = (
    "parseTime",
    "tls",
    "timeout",
    "readTimeout",
    "writeTimeout",
    "charset",
    "allowNativePasswords",
)
_TLS_VALUES = ("true", "false", "skip-verify", "preferred", "custom")


@dataclass
class DSN:
    """A parsed Go MySQL DSN (github.com/go-sql-driver/mysql syntax)."""

    user: str = ""
    password: str = ""
    net: str = "tcp"
    host: str = "127.0.0.1"
    port: int = 3306
    unix_socket: str | None = None
    database: str = ""
    tls: str = "false"
    parse_time: bool = False
    timeout: float | None = None
    read_timeout: float | None = None
    write_timeout: float | None = None
    charset: str = "utf8mb4"

    def describe(self) -> str:
        return self.unix_socket or f"{self.host}:{self.port}"


def _duration(name: str, value: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise MetadataError("connectionString", f"{name} must be a duration such as 30s") from None
    if seconds < 0:
        raise MetadataError("connectionString", f"{name} must not be negative")
    return seconds


def parse_dsn(text: str) -> DSN:
    """A DSN from `[user[:password]@][net[(addr)]]/dbname[?param=value&...]`; MetadataError if refused.

    Parsed the way go-sql-driver/mysql parses it (the last '/', then the last '@' before it, then
    the first ':'); messages name parts, never values, as the string holds a password.
    """
    dsn = DSN()
    slash = text.rfind("/")
    if slash < 0:
        raise MetadataError("connectionString", "is not a MySQL DSN (user:password@tcp(host:port)/): no '/'")
    left, right = text[:slash], text[slash + 1 :]
    if left:
        at = left.rfind("@")
        if at >= 0:
            credentials, left = left[:at], left[at + 1 :]
            dsn.user, _, dsn.password = credentials.partition(":")
        paren = left.find("(")
        if paren >= 0:
            if not left.endswith(")"):
                raise MetadataError("connectionString", "address must be in parentheses: tcp(host:port)")
            dsn.net, addr = left[:paren], left[paren + 1 : -1]
        else:
            dsn.net, addr = left, ""
        dsn.net = dsn.net or "tcp"
        if dsn.net == "tcp":
            if addr:
                host, sep, port = addr.rpartition(":")
                if not sep or (":" in host and not host.startswith("[")):
                    host, port = addr, ""
                dsn.host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
                if port:
                    if not port.isdigit() or not 0 < int(port) < 65536:
                        raise MetadataError("connectionString", "the port must be a number from 1 to 65535")
                    dsn.port = int(port)
        elif dsn.net == "unix":
            dsn.unix_socket = addr or "/tmp/mysql.sock"
        else:
            raise MetadataError("connectionString", f"network {dsn.net!r} is not supported (use tcp or unix)")
    database, _, params = right.partition("?")
    dsn.database = unquote(database)
    seen: set[str] = set()
    for pair in params.split("&") if params else []:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise MetadataError("connectionString", f"parameter {name!r} has no value")
        value = unquote(raw.replace("+", " "))
        if name not in _DSN_PARAMS:
            raise MetadataError(
                "connectionString",
                f"parameter {name!r} is not supported by this server (supported: {', '.join(_DSN_PARAMS)})",
            )
        if name in seen:
            raise MetadataError("connectionString", f"parameter {name!r} is given twice")
        seen.add(name)
        match name:
            case "allowNativePasswords":
                # Dapr's documented DSNs carry allowNativePasswords=true; the driver always allows them.
                try:
                    allowed = parse_bool(value)
                except ValueError:
                    raise MetadataError(
                        "connectionString", "allowNativePasswords must be true or false"
                    ) from None
                if not allowed:
                    raise MetadataError("connectionString", "allowNativePasswords=false is not supported")
            case "parseTime":
                try:
                    dsn.parse_time = parse_bool(value)
                except ValueError:
                    raise MetadataError("connectionString", "parseTime must be true or false") from None
            case "tls":
                lowered = value.lower()
                if lowered in ("1", "t", "yes", "on"):
                    lowered = "true"
                elif lowered in ("0", "f", "no", "off"):
                    lowered = "false"
                if lowered not in _TLS_VALUES:
                    raise MetadataError("connectionString", f"tls must be one of {', '.join(_TLS_VALUES)}")
                dsn.tls = lowered
            case "timeout":
                dsn.timeout = _duration(name, value) or None
            case "readTimeout":
                dsn.read_timeout = _duration(name, value) or None
            case "writeTimeout":
                dsn.write_timeout = _duration(name, value) or None
            case "charset":
                usable = [c for c in value.split(",") if c.strip().lower() in ("utf8mb4", "utf8", "utf8mb3")]
                if not usable:
                    raise MetadataError(
                        "connectionString", "charset must be utf8mb4 (the store needs full Unicode)"
                    )
                dsn.charset = "utf8mb4"
    return dsn


def quote_ident(name: str, field: str) -> str:
    if not re.fullmatch(IDENT_PATTERN, name):
        raise MetadataError(field, f"{name!r} is not a valid identifier")
    return f"`{name}`"


def parse_connection_string(text: str) -> DSN:
    """The DSN of `connectionString`, which leaves the database to `schemaName`."""
    dsn = parse_dsn(text)
    if dsn.database:
        raise MetadataError(
            "connectionString", "must not name a database after the '/'; give it as schemaName instead"
        )
    return dsn


def parse_pem(text: str) -> ssl.SSLContext:
    """A TLS context trusting the CA certificate(s) of `pemContents`."""
    try:
        return ssl.create_default_context(cadata=text)
    except (ssl.SSLError, ValueError):
        raise MetadataError("pemContents", "is not a PEM certificate") from None


def check(md: Resolved) -> None:
    """Rules across settings (opaque values pass)."""
    if not md.known("connectionString") or md["connectionString"] is None:
        return
    if parse_dsn(md["connectionString"]).tls == "custom" and not (
        md.given("pemPath") or md.given("pemContents")
    ):
        raise MetadataError("connectionString", "tls=custom needs pemPath (a CA certificate file)")


SCHEMA = StoreSchema(
    type="state.mysql",
    fields=(
        # A Go MySQL DSN without a database: user:password@tcp(host:port)/?params.
        Field("connectionString", required=True, check=parse_connection_string),
        Field("schemaName", default="dapr_state_store", pattern=IDENT_PATTERN),
        Field("tableName", default="state", pattern=IDENT_PATTERN),
        Field("metadataTableName", default="dapr_metadata", pattern=IDENT_PATTERN),
        Field("timeoutInSeconds", Kind.DURATION, default=20.0, minimum=1.0, aliases=("timeout",)),
        Field("cleanupInterval", Kind.DURATION, default=3600.0, aliases=("cleanupIntervalInSeconds",)),
        Field("pemPath"),  # CA certificate (PEM file) for tls=custom
        Field("pemContents", check=parse_pem),  # CA certificate (PEM text) for tls=custom
        Field("maxOpenConns", Kind.INT, default=0, minimum=0),  # 0: max(4, CPUs)
        Field("connMaxIdleTime", Kind.DURATION, default=0.0),
    ),
    features=frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API}),
    check=check,
    unsupported={
        "maxIdleConns": "not implemented; idle connections are reused until connMaxIdleTime",
        "connMaxLifetime": "not implemented; use connMaxIdleTime",
    },
)
