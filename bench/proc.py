"""CPU time and memory of processes, read from /proc (Linux only), for a process and its descendants."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(c) for c in handle.read().split()]
    except OSError:
        pass
    return found


def tree(pid: int) -> list[int]:
    """`pid` and every live descendant (uvicorn workers, PostgreSQL backends)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += _children(current)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (fields 14 and 15 of /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces; the fields after it start past the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except OSError:
        return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages divided among the processes sharing them.

    Summing RSS over PostgreSQL's processes would count its shared buffers once per backend.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Usage:
    """CPU seconds and memory of a set of process trees, sampled at one instant."""

    cpu: float
    rss: int  # summed over the processes
    pss: int  # summed over the processes
    rss_max: int  # of the largest process (per worker, for a multi-process server)
    processes: int

    @classmethod
    def sample(cls, roots: list[int]) -> Usage:
        pids = sorted({p for root in roots for p in tree(root)})
        rss = [rss_bytes(p) for p in pids]
        return cls(
            sum(cpu_seconds(p) for p in pids),
            sum(rss),
            sum(pss_bytes(p) for p in pids),
            max(rss, default=0),
            len(pids),
        )


def pin(pid: int, cores: set[int]) -> None:
    """Pin a process tree to cores; a no-op on a machine with fewer cores than asked for."""
    if not cores <= set(range(os.cpu_count() or 1)):
        return
    for p in tree(pid):
        # Every thread: sched_setaffinity on a pid moves only the thread with that id.
        try:
            tasks = [int(t) for t in os.listdir(f"/proc/{p}/task")]
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(task, cores)


def core_busy() -> dict[int, float]:
    """Busy (non-idle) CPU seconds of each core since boot, from /proc/stat."""
    out: dict[int, float] = {}
    with open("/proc/stat") as handle:
        for line in handle:
            if line.startswith("cpu") and line[3].isdigit():
                name, *values = line.split()
                ticks = [int(v) for v in values]
                idle = ticks[3] + ticks[4]  # idle + iowait
                out[int(name[3:])] = (sum(ticks[:8]) - idle) / _TICKS
    return out
