"""Free loopback ports for servers started by tests, benchmarks and the local control plane."""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

LOOPBACK = "127.0.0.1"

# Ports are picked below the kernel's ephemeral range. Asking the kernel for port 0 returns a port
# from that range, which every outgoing connection (database clients, kube clients, SDKs) also draws
# its source port from: one of them could take the port before our server binds it. Below the range
# only another picker can collide, and the random choice plus the bind check make that improbable.
_FALLBACK_EPHEMERAL_START = 32768
_LOWEST = 10000
_ATTEMPTS = 200

_lock = threading.Lock()
_handed_out: set[int] = set()
_random = random.SystemRandom()


def _ephemeral_start() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return _FALLBACK_EPHEMERAL_START


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing is bound to right now, never handed out before by this process.

    Another process may still bind it before our server does; outside the ephemeral range that takes
    a second picker choosing the same port in the same moment. Starters report the failing server's
    log if it ever happens.
    """
    highest = _ephemeral_start() - 1
    with _lock:
        if highest > _LOWEST:
            for _ in range(_ATTEMPTS):
                port = _random.randint(_LOWEST, highest)
                if port not in _handed_out and _bindable(host, port):
                    _handed_out.add(port)
                    return port
        # A machine whose ephemeral range starts low, or a crowded one: let the kernel choose.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            chosen: int = sock.getsockname()[1]
        _handed_out.add(chosen)
        return chosen
