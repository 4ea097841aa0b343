"""Free loopback ports for servers started by tests, benchmarks and the local control plane."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now.

    The kernel picks it; another process may take it before our server binds it. That race is rare
    and the starters report the failing server's log when it happens, which is acceptable here.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
