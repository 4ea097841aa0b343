"""redis-server with a password, persisting with an append-only file."""

from __future__ import annotations

import secrets
import socket
import ssl
from pathlib import Path
from urllib.parse import quote

from statestore_testing.databases.server import Server, find_binary


class RedisServer(Server):
    """redis-server with a password, persisting with an append-only file (`appendfsync always`)."""

    name = "redis"
    user = "default"

    def __init__(
        self,
        base_dir: Path | None = None,
        appendfsync: str = "always",
        tls: bool = False,
        tls_auth_clients: str = "no",
        *,
        extra_args: tuple[str, ...] = (),
        password: str | None = None,
    ) -> None:
        """With `tls`, the port speaks only TLS; `tls_auth_clients` is no, optional or yes.
        `extra_args` are more redis-server options (replication, cluster mode)."""
        self.binary = find_binary(["redis-server"])
        super().__init__(base_dir, tls)
        self.password = password or "redis-" + secrets.token_hex(8)
        self.extra_args = extra_args
        self.appendfsync = appendfsync
        self.tls_auth_clients = tls_auth_clients

    def _initialise(self) -> None:
        self.data_dir.mkdir(exist_ok=True)
        self._chown(self.data_dir)

    def _command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.data_dir),
            "--requirepass", self.password,
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
            *self._tls_args(),
            *self.extra_args,
        ]  # fmt: skip

    def _tls_args(self) -> list[str]:
        if self.pki is None:
            return []
        return [
            "--port", "0", "--tls-port", str(self.port),
            "--tls-cert-file", str(self.pki.server_cert), "--tls-key-file", str(self.pki.server_key),
            "--tls-ca-cert-file", str(self.pki.ca_cert), "--tls-auth-clients", self.tls_auth_clients,
        ]  # fmt: skip

    def _socket(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        if self.pki is None:
            return sock
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.client_cert), str(self.pki.client_key))
        return context.wrap_socket(sock, server_hostname="localhost")

    def command(self, *args: str, timeout: float = 2.0) -> bytes:
        """Send one command (authenticated) with a raw socket; returns the raw RESP reply."""
        request = b"".join(
            f"*{len(cmd)}\r\n".encode()
            + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in cmd)
            for cmd in (("AUTH", self.password), args)
        )
        with self._socket(timeout) as sock:
            sock.sendall(request)
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        if not reply.startswith(b"+OK\r\n"):
            raise RuntimeError(f"redis AUTH failed: {reply[:200]!r}")
        return reply[5:]

    def _ready(self) -> bool:
        return self.command("PING", timeout=0.5).startswith(b"+PONG")

    def url(self, db: int = 0) -> str:
        return f"redis://:{quote(self.password, safe='')}@{self.host}:{self.port}/{db}"
