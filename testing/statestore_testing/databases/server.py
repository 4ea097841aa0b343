"""One database server process with a data folder that survives stop()/start(), for outage tests.

The binaries come from Debian's packages (`hack/backends/install.sh`); a missing one raises
BackendBinaryMissing with that hint. PostgreSQL and MariaDB refuse to run as root, so as root the
servers run as the user `statestore-db` that install.sh creates (or `nobody`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from statestore_testing.pki import PKI, make_pki
from statestore_testing.ports import LOOPBACK, free_port

INSTALL_HINT = "run hack/backends/install.sh (as root) to install redis-server, redis-sentinel, postgresql and mariadb-server"
DB_USER = os.environ.get("BACKENDS_DB_USER", "statestore-db")
HOST = LOOPBACK
START_TIMEOUT = float(os.environ.get("BACKENDS_START_TIMEOUT", "60"))


class BackendBinaryMissing(RuntimeError):
    pass


def find_binary(names: Sequence[str], extra_dirs: Sequence[str] = ()) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
        for folder in extra_dirs:
            candidate = Path(folder) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    raise BackendBinaryMissing(
        f"none of {', '.join(names)} found on PATH or in {list(extra_dirs)}; {INSTALL_HINT}"
    )


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to run servers as when we are root; None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in (DB_USER, "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise BackendBinaryMissing(f"no user {DB_USER!r} (or nobody) to run database servers as; {INSTALL_HINT}")


class Server:
    """One server process with a data folder that survives stop()/start()."""

    name = "server"
    user = ""
    password = ""

    def __init__(self, base_dir: Path | None = None, tls: bool = False) -> None:
        self.tls = tls
        self.pki: PKI | None = None  # with tls: the CA, server and client certificates
        self.host = HOST
        self.port = free_port()
        self._owner = _run_as()
        self._own_base = base_dir is None
        self.base_dir = (
            Path(tempfile.mkdtemp(prefix=f"statestore-{self.name}-")) if base_dir is None else base_dir
        )
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None  # duration of the last start(), until it answered
        self.setup_seconds: float | None = None  # one-off initialisation (initdb and the like)
        self._initialised = False
        self._left_behind: list[int] = []
        self._atexit_registered = False
        if self._owner is not None:
            os.chown(self.base_dir, *self._owner)
            os.chmod(self.base_dir, 0o755)

    # -- to implement -------------------------------------------------------------------------------
    def _initialise(self) -> None:
        """Create the data folder contents (once)."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        """Whether the server accepts authenticated connections now."""
        raise NotImplementedError

    def _after_first_start(self) -> None:
        """One-off setup that needs a running server (users, grants)."""

    _stop_signal = signal.SIGTERM

    # -- lifecycle ----------------------------------------------------------------------------------
    def _popen(self, command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        extra: dict[str, Any] = {}
        if self._owner is not None:
            extra = {"user": self._owner[0], "group": self._owner[1], "extra_groups": []}
        return subprocess.Popen(command, cwd=self.base_dir, start_new_session=True, **extra, **kwargs)

    def _run(self, command: list[str], input_text: str | None = None) -> None:
        with self.log_path.open("ab") as log:
            proc = self._popen(command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
            proc.communicate(input_text.encode() if input_text is not None else None, timeout=START_TIMEOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name}: {command[0]} failed ({proc.returncode}); see {self.log_path}")

    def _chown(self, path: Path) -> None:
        if self._owner is not None:
            os.chown(path, *self._owner)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        began = time.monotonic()
        if not self._initialised:
            if self.tls:
                self.pki = make_pki(self.base_dir / "tls", self._owner)
            self._initialise()
            self._initialised = True
            self.setup_seconds = time.monotonic() - began
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = self._popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        if not self._atexit_registered:
            # If the test run dies without running finalizers, do not leave a server behind.
            atexit.register(self.stop, True)
            self._atexit_registered = True
        deadline = started + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"{self.name} exited with {code} while starting; log:\n{self.log_tail()}")
            with contextlib.suppress(Exception):
                if self._ready():
                    break
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise RuntimeError(
                    f"{self.name} did not accept connections within {START_TIMEOUT:g}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)
        self.start_seconds = time.monotonic() - started
        if not getattr(self, "_setup_done", False):
            self._after_first_start()
            self._setup_done = True

    def stop(self, kill: bool = False, timeout: float = 30.0) -> None:
        """Stop the server: a clean shutdown, or SIGKILL to its whole process group with `kill=True`
        (a crash: PostgreSQL's backends die with the postmaster). The data is kept."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            if kill:
                self._left_behind = self._descendants()
                self._signal_group(signal.SIGKILL)
            else:
                self._signal_group(signal.SIGCONT)
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(self._stop_signal)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                proc.wait(timeout=10)
        for pid in getattr(self, "_left_behind", []):  # children the leader left behind
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self._left_behind = []
        self.process = None

    def _descendants(self) -> list[int]:
        """The server's process and every process below it (PostgreSQL's children call setsid(),
        so a process group does not reach them)."""
        if self.process is None:
            return []
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def _signal_group(self, sig: signal.Signals) -> None:
        for pid in self._descendants():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it keeps its connections but answers nothing, like a hang."""
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop and remove every file."""
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
