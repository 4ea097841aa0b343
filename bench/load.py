"""Load generators: open loop at a fixed rate, closed loop for maximum throughput, and `wrk`.

* `open_loop` sends request i at t0 + i/rate whatever happened to earlier requests, and measures
  each latency from that *scheduled* time, so a server stall counts against every request it delayed
  (the coordinated-omission correction wrk2 makes). A helper thread keeps the schedule with
  nanosleep and wakes the event loop through a pipe: asyncio's own timers round up to whole
  milliseconds, which would add up to 1 ms to every measurement.
* `closed_loop` runs `concurrency` callers back to back for a time; its rate is the maximum the
  whole path sustains (including this Python client, which for direct access is the bottleneck).
* `wrk` drives the HTTP API from C, so the server, not the client, is what saturates; `go_load` does
  the same over gRPC with the official Go SDK (hack/sdk/go-client's `-load` mode).

A "call" is an async function of the request number returning an HTTP-like status (2xx is success).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

Call = Callable[[int], Awaitable[int]]

# Bounds of every load loop, whatever the arguments: no phase runs longer than this.
MAX_PHASE_SECONDS = 300.0
DRAIN_SECONDS = 10.0


@dataclass
class Phase:
    """What one load phase measured. Latencies are milliseconds, sorted."""

    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    # For wrk, which reports percentiles rather than samples.
    percentiles: dict[float, float] = field(default_factory=dict)
    tool: str = "python"

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    def pct(self, p: float) -> float:
        if self.percentiles and p in self.percentiles:
            return self.percentiles[p]
        if not self.latencies:
            return float("nan")
        rank = max(0, min(len(self.latencies) - 1, round(p / 100 * len(self.latencies) + 0.5) - 1))
        return self.latencies[rank]

    def summary(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "requests": self.requests,
            "ok_2xx": self.ok,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "p50_ms": round(self.pct(50), 3),
            "p90_ms": round(self.pct(90), 3),
            "p99_ms": round(self.pct(99), 3),
            "p99.9_ms": round(self.pct(99.9), 3),
        }


class _Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.errors = 0

    async def one(self, call: Call, number: int, scheduled: float) -> None:
        try:
            status = await call(number)
        except Exception:
            self.errors += 1
            status = 599
        self.latencies.append((time.perf_counter() - scheduled) * 1000.0)
        self.statuses[status] += 1

    def phase(self, seconds: float) -> Phase:
        return Phase(
            requests=len(self.latencies),
            errors=self.errors,
            seconds=seconds,
            statuses=dict(self.statuses),
            latencies=sorted(self.latencies),
        )


def _ticker(t0: float, rate: float, count: int, wfd: int, stop: threading.Event) -> None:
    for i in range(count):
        if stop.is_set():
            break
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        os.write(wfd, b"\0")


async def open_loop(call: Call, rate: float, seconds: float) -> Phase:
    """`rate` requests per second for `seconds`, latency measured from each request's scheduled time."""
    seconds = min(seconds, MAX_PHASE_SECONDS)
    count = max(1, int(rate * seconds))
    loop = asyncio.get_running_loop()
    recorder = _Recorder()
    tasks: set[asyncio.Task[None]] = set()
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    stop = threading.Event()
    t0 = time.perf_counter() + 0.05
    sent = 0

    def on_tick() -> None:
        nonlocal sent
        try:
            ticks = len(os.read(rfd, 65536))
        except BlockingIOError:
            return
        for _ in range(ticks):
            task = loop.create_task(recorder.one(call, sent, t0 + sent / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1

    loop.add_reader(rfd, on_tick)
    thread = threading.Thread(target=_ticker, args=(t0, rate, count, wfd, stop), daemon=True)
    thread.start()
    try:
        while thread.is_alive() or sent < count:
            await asyncio.sleep(0.05)
            if time.perf_counter() > t0 + seconds + DRAIN_SECONDS:
                break
        if tasks:
            await asyncio.wait(set(tasks), timeout=DRAIN_SECONDS)
    finally:
        stop.set()
        loop.remove_reader(rfd)
        thread.join(5)
        os.close(rfd)
        os.close(wfd)
        for task in list(tasks):
            task.cancel()
    phase = recorder.phase(time.perf_counter() - t0)
    phase.errors += len(tasks) + (count - sent)  # never completed, or never sent: failures
    phase.seconds = count / rate
    return phase


async def closed_loop(call: Call, concurrency: int, seconds: float) -> Phase:
    """`concurrency` callers back to back for `seconds`; latencies are service times."""
    seconds = min(seconds, MAX_PHASE_SECONDS)
    recorder = _Recorder()
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < deadline:
            await recorder.one(call, next(counter), time.perf_counter())

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(caller() for _ in range(concurrency))), seconds + DRAIN_SECONDS)
    return recorder.phase(time.perf_counter() - started)


# -- a minimal HTTP/1.1 client --------------------------------------------------------------------


def _chunked_end(data: bytes, at: int) -> int | None:
    """Where a chunked body starting at `at` ends (past its last CRLF), or None while incomplete."""
    while True:
        line_end = data.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(data[at:line_end].split(b";", 1)[0], 16)
        if size == 0:
            end = data.find(b"\r\n\r\n", line_end)  # past any trailers
            return None if end < 0 else end + 4
        at = line_end + 2 + size + 2
        if at > len(data):
            return None


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time; responses carry Content-Length (uvicorn's)
    or a chunked body (daprd's larger ones)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end].lower()
        if b"\r\ntransfer-encoding: chunked" in head:
            end = _chunked_end(self.buffer, head_end + 4)
            if end is None:
                return
            total = end
        else:
            at = head.find(b"\r\ncontent-length:")
            length = 0
            if at >= 0:
                line_end = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : line_end if line_end >= 0 else None])
            total = head_end + 4 + length
            if len(self.buffer) < total:
                return
        status = int(self.buffer[9:12])
        self.buffer = self.buffer[total:]
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.transport.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc or ConnectionError("connection closed"))

    def request(self, data: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter


class HttpPool:
    """`size` keep-alive connections to host:port; a request waits for a free one (like wrk's -c)."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self.free: asyncio.Queue[_Connection] = asyncio.Queue()
        self.all: list[_Connection] = []

    async def open(self) -> HttpPool:
        for _ in range(self.size):
            self.free.put_nowait(await self._connect())
        return self

    async def _connect(self) -> _Connection:
        _, conn = await asyncio.get_running_loop().create_connection(_Connection, self.host, self.port)
        self.all.append(conn)
        return conn

    async def send(self, data: bytes) -> int:
        conn = await self.free.get()
        try:
            if conn.transport is None or conn.transport.is_closing():
                # The server closed it while idle (uvicorn's keep-alive timeout is 5 s): reconnect.
                conn = await self._connect()
            return await conn.request(data)
        finally:
            self.free.put_nowait(conn)

    def close(self) -> None:
        for conn in self.all:
            if conn.transport is not None:
                conn.transport.close()


def http_get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


def http_post(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


# -- wrk ----------------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _lua_quote(data: bytes) -> str:
    return '"' + "".join(f"\\{b}" if b < 32 or b in (34, 92) or b > 126 else chr(b) for b in data) + '"'


def wrk_script(method: str, paths: list[str], body_for: list[bytes] | None) -> str:
    """A wrk Lua script cycling through `paths` (and matching bodies) and counting status codes."""
    lines = ["local paths = {" + ",".join(_lua_quote(p.encode()) for p in paths) + "}"]
    if body_for is not None:
        lines.append("local bodies = {" + ",".join(_lua_quote(b) for b in body_for) + "}")
    lines += [
        "local i = 0",
        "request = function()",
        "  i = i % #paths + 1",
    ]
    if body_for is not None:
        lines.append(
            f'  return wrk.format("{method}", paths[i], {{["Content-Type"] = "application/json"}}, bodies[i])'
        )
    else:
        lines.append(f'  return wrk.format("{method}", paths[i])')
    lines += ["end", ""]
    return "\n".join(lines)


def run_wrk(
    url: str, script: str, connections: int, seconds: float, cores: str | None = None
) -> tuple[Phase, str]:
    """wrk's figures (one thread, `connections` connections) and its raw output."""
    seconds = min(seconds, MAX_PHASE_SECONDS)
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        path = Path(tmp) / "script.lua"
        path.write_text(script)
        command = [
            "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
            "--timeout", "5s", "-s", str(path), url,
        ]  # fmt: skip
        if cores is not None:
            command = ["taskset", "-c", cores, *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True)
    return parse_wrk(done.stdout), done.stdout


def go_load(address: str, store: str, op: str, connections: int, seconds: float) -> Phase:
    """The Go SDK's closed loop: `connections` callers, one gRPC connection each, GET or SAVE of one key."""
    from statestore_testing.go_client import go_client_binary

    seconds = min(seconds, MAX_PHASE_SECONDS)
    command = [
        str(go_client_binary()), "-load", op, "-address", address, "-store", store,
        "-connections", str(connections), "-concurrency", str(connections),
        "-duration", f"{max(1, round(seconds))}s",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    figures = json.loads(done.stdout)
    ok, errors = int(figures["requests"]), int(figures["errors"])
    return Phase(
        requests=ok + errors,
        errors=errors,
        seconds=float(figures["seconds"]),
        statuses={200: ok} if not errors else {200: ok, 599: errors},
        tool="go-sdk",
    )


def have_go_load() -> bool:
    from statestore_testing.go_client import go_client_binary

    try:
        go_client_binary()
    except FileNotFoundError:
        return False
    return True


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> Phase:
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    phase = Phase(tool="wrk")
    if total:
        phase.requests = int(total.group(1))
        phase.seconds = _ms(total.group(2) + total.group(3)) / 1000.0
    for p, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.MULTILINE):
        phase.percentiles[float(p)] = _ms(value)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    bad = int(non2xx.group(1)) if non2xx else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    phase.errors = sum(int(x) for x in errors.groups()) if errors else 0
    # wrk only tells 2xx/3xx from the rest; our API never answers 3xx.
    phase.statuses = {200: phase.requests - bad}
    if bad:
        phase.statuses[500] = bad
    return phase


@contextlib.contextmanager
def pinned(cores: set[int]) -> Any:
    """Run the block with this process pinned to `cores` (restored afterwards)."""
    before = os.sched_getaffinity(0)
    usable = cores <= set(range(os.cpu_count() or 1))
    if usable:
        os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        if usable:
            os.sched_setaffinity(0, before)
