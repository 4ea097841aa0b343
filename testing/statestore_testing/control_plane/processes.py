"""The control plane's processes: started to die with their parent, stopped by pid from another process."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def die_with_parent() -> None:
    """preexec_fn: kill the child if the process that started it dies (e.g. pytest is killed).

    SIGKILL, not SIGTERM: the siblings die at the same moment, and a kube-apiserver whose etcd is gone
    never finishes a graceful shutdown. The data is throwaway anyway.
    """
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def pid_runs(pid: int, binary: str) -> bool:
    """True if pid is alive and still runs `binary` (guards against pid reuse after a reboot/crash)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return Path(exe.removesuffix(" (deleted)")).name == Path(binary).name


def terminate(pid: int, binary: str, timeout: float = 15.0) -> None:
    if not pid_runs(pid, binary):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_runs(pid, binary) or is_zombie(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Proc:
    name: str
    binary: str
    pid: int
    log: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
