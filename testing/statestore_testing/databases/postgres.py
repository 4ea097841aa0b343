"""A PostgreSQL cluster (initdb + postgres) with password authentication over TCP."""

from __future__ import annotations

import secrets
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

from statestore_testing.databases.server import Server, find_binary


def postgres_bin_dirs() -> list[str]:
    root = Path("/usr/lib/postgresql")
    if not root.is_dir():
        return []
    versions = sorted(
        (p for p in root.iterdir() if (p / "bin" / "postgres").exists()),
        key=lambda p: int(p.name) if p.name.isdigit() else 0,
        reverse=True,
    )
    return [str(p / "bin") for p in versions]


class PostgresServer(Server):
    """A PostgreSQL cluster with password (scram) authentication over TCP."""

    name = "postgres"
    user = "postgres"
    database = "postgres"
    _stop_signal = signal.SIGINT  # fast shutdown

    def __init__(self, base_dir: Path | None = None, tls: bool = False) -> None:
        # Debian keeps the binaries in /usr/lib/postgresql/<version>/bin, off PATH; look there first.
        dirs = postgres_bin_dirs()
        self.initdb = find_binary(["initdb"], dirs) if not dirs else f"{dirs[0]}/initdb"
        self.postgres = find_binary(["postgres"], dirs) if not dirs else f"{dirs[0]}/postgres"
        self.pg_isready = find_binary(["pg_isready"], dirs)
        super().__init__(base_dir, tls)
        self.password = "pg-" + secrets.token_hex(8)
        self.socket_dir = self.base_dir / "sock"

    def _initialise(self) -> None:
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._chown(pwfile)
        self.socket_dir.mkdir(exist_ok=True)
        self._chown(self.socket_dir)
        self._run([
            self.initdb, "-D", str(self.data_dir), "--username", self.user, "--pwfile", str(pwfile),
            "--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C", "--no-sync",
        ])  # fmt: skip
        pwfile.unlink()

    def _command(self) -> list[str]:
        return [
            self.postgres, "-D", str(self.data_dir), "-p", str(self.port), "-h", self.host,
            "-k", str(self.socket_dir),
            "-c", "max_connections=200", "-c", "shared_buffers=32MB",
            "-c", "logging_collector=off", "-c", "log_min_messages=warning",
            *(
                [
                    "-c", "ssl=on", "-c", f"ssl_cert_file={self.pki.server_cert}",
                    "-c", f"ssl_key_file={self.pki.server_key}", "-c", f"ssl_ca_file={self.pki.ca_cert}",
                ]
                if self.pki is not None
                else []
            ),
        ]  # fmt: skip

    def _ready(self) -> bool:
        result = subprocess.run(
            [self.pg_isready, "-q", "-h", self.host, "-p", str(self.port), "-t", "1"], check=False
        )
        return result.returncode == 0

    def connection_string(self, form: str = "keyword", database: str | None = None) -> str:
        """A pgx connection string: the keyword form (`host=... port=...`) or the URL form."""
        db = database or self.database
        if form == "url":
            return (
                f"postgres://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
                f"@{self.host}:{self.port}/{db}?sslmode=disable"
            )
        return (
            f"host={self.host} user={self.user} password={self.password} port={self.port} "
            f"database={db} sslmode=disable"
        )
