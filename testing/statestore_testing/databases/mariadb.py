"""A MariaDB server (mariadb-install-db + mariadbd) with a password-authenticated user, over TCP.

It also serves the `state.mysql` store's tests: Debian packages MariaDB, not Oracle's MySQL server.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pymysql  # type: ignore[import-untyped]

from statestore_testing.databases.server import Server, find_binary


class MariaDBServer(Server):
    """A MariaDB server with a password-authenticated user allowed everything, over TCP."""

    name = "mariadb"
    user = "dapr"

    def __init__(self, base_dir: Path | None = None, tls: bool = False) -> None:
        self.mariadbd = find_binary(["mariadbd", "mysqld"], ["/usr/sbin", "/usr/libexec"])
        self.install_db = find_binary(
            ["mariadb-install-db", "mysql_install_db"], ["/usr/bin", "/usr/scripts"]
        )
        super().__init__(base_dir, tls)
        self.password = "my-" + secrets.token_hex(8)
        self.socket_path = self.base_dir / "mysqld.sock"

    def _initialise(self) -> None:
        self.data_dir.mkdir(exist_ok=True)
        self._chown(self.data_dir)
        self._run([
            self.install_db, "--no-defaults", f"--datadir={self.data_dir}",
            "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve",
            "--innodb-buffer-pool-size=32M",
        ])  # fmt: skip

    def _command(self) -> list[str]:
        return [
            self.mariadbd, "--no-defaults", f"--datadir={self.data_dir}", f"--port={self.port}",
            f"--bind-address={self.host}", f"--socket={self.socket_path}",
            f"--pid-file={self.base_dir / 'mysqld.pid'}", "--skip-name-resolve", "--skip-log-bin",
            "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M", "--max-connections=300",
            "--character-set-server=utf8mb4", "--collation-server=utf8mb4_bin",
            *(
                [
                    f"--ssl-cert={self.pki.server_cert}", f"--ssl-key={self.pki.server_key}",
                    f"--ssl-ca={self.pki.ca_cert}",
                ]
                if self.pki is not None
                else []
            ),
        ]  # fmt: skip

    def _root_connect(self) -> Any:
        return pymysql.connect(unix_socket=str(self.socket_path), user="root", password="", connect_timeout=2)

    def _ready(self) -> bool:
        if not getattr(self, "_setup_done", False):
            conn = self._root_connect()
        else:
            conn = pymysql.connect(
                host=self.host, port=self.port, user=self.user, password=self.password, connect_timeout=2
            )
        conn.close()
        return True

    def _after_first_start(self) -> None:
        conn = self._root_connect()
        try:
            with conn.cursor() as cur:
                cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (self.user, self.password))
                cur.execute("GRANT ALL PRIVILEGES ON *.* TO %s@'%%'", (self.user,))
                cur.execute("FLUSH PRIVILEGES")
            conn.commit()
        finally:
            conn.close()

    def dsn(self, params: str = "") -> str:
        """A Go MySQL DSN without a schema, as Dapr's `connectionString` wants it."""
        query = f"?{params}" if params else ""
        return f"{self.user}:{self.password}@tcp({self.host}:{self.port})/{query}"

    connection_string = dsn
