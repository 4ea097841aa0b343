"""Stopping a child process the way its users are stopped: SIGTERM, then SIGKILL if it lingers."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM `proc` unless it has ended, wait up to `timeout` seconds, then SIGKILL it; reaped."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
