"""Threads that own SQLite connections: readers, and the one writer with group commit.

Each connection belongs to one thread: one writer thread (all writes of this process queue there
rather than on SQLite's lock) and, for files, a few reader threads (WAL readers never block
writers). Every call has a deadline: statements are interrupted once it passes.

Group commit: writes waiting together run in one transaction, each in its own savepoint (a refused
write leaves the others alone), and are answered after the one commit, so concurrent writers share
an fsync instead of queueing for one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from ..base import BackendUnavailable, StoreError

log = logging.getLogger("statestore.sqlite")

_MAX_BATCH = 256  # writes committed together at most

T = TypeVar("T")


class _Deadline(threading.local):
    conn: sqlite3.Connection | None = None
    at: float = math.inf


class Timeout(Exception):
    pass


class Mode(enum.Enum):
    ALONE = "alone"  # outside any transaction, never batched (setup, reads, ping)
    STATEMENT = "statement"  # one write statement: atomic by itself
    TRANSACTION = "transaction"  # several write statements that must apply together


class Lane:
    """Reader threads that each own one connection; every call runs on one of them with a deadline."""

    def __init__(self, name: str, threads: int, connect: Callable[[], sqlite3.Connection]) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._connect = connect
        self._local = _Deadline()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _progress(self) -> int:
        # Runs in the thread executing a statement: a nonzero answer interrupts it.
        return 1 if time.monotonic() > self._local.at else 0

    def _connection(self) -> sqlite3.Connection:
        conn = self._local.conn
        if conn is None:
            conn = self._connect()
            conn.set_progress_handler(self._progress, 1000)
            with self._lock:
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    def _run(self, fn: Callable[[sqlite3.Connection], T], deadline: float) -> T:
        if time.monotonic() > deadline:
            raise Timeout
        conn = self._connection()
        self._local.at = deadline
        try:
            return fn(conn)
        finally:
            self._local.at = math.inf

    async def call(
        self, fn: Callable[[sqlite3.Connection], T], seconds: float, grace: float, mode: Mode = Mode.ALONE
    ) -> T:
        assert mode is Mode.ALONE, "reader connections do not write"
        deadline = time.monotonic() + seconds
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._run, fn, deadline)
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation (gh-86296).
        try:
            async with asyncio.timeout(seconds + grace):
                return await future
        except TimeoutError:
            raise Timeout from None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


@dataclass(slots=True)
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    deadline: float
    future: Future[Any]
    mode: Mode


class _BatchBroken(Exception):
    """SQLite rolled the whole batch back after one job's error; the jobs are run one by one."""


class Writer:
    """The one thread (and connection) that writes for this store, with group commit.

    Writes waiting together run in one `BEGIN IMMEDIATE` transaction, each inside a savepoint so a
    refused job (an etag mismatch) leaves the others alone; one commit (one fsync) then makes them all
    durable before any of them is answered.
    """

    def __init__(self, name: str, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        self._at = math.inf
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _progress(self) -> int:
        return 1 if time.monotonic() > self._at else 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = self._connect()
            conn.set_progress_handler(self._progress, 1000)
            self._conn = conn
        return self._conn

    async def call(
        self, fn: Callable[[sqlite3.Connection], T], seconds: float, grace: float, mode: Mode = Mode.ALONE
    ) -> T:
        future: Future[T] = Future()
        self._queue.put(_Job(fn, time.monotonic() + seconds, future, mode))
        try:
            async with asyncio.timeout(seconds + grace):
                return await asyncio.wrap_future(future)
        except TimeoutError:
            raise Timeout from None

    def shutdown(self) -> None:
        self._queue.put(None)
        self._thread.join()
        while True:  # calls that came in after the stop: refused rather than left waiting
            try:
                late = self._queue.get_nowait()
            except queue.Empty:
                break
            if late is not None and late.future.set_running_or_notify_cancel():
                late.future.set_exception(BackendUnavailable("the SQLite store is closed"))
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    # --- the writer thread ---

    def _loop(self) -> None:
        held: _Job | None = None
        while True:
            job = held if held is not None else self._queue.get()
            held = None
            if job is None:
                return
            if job.mode is Mode.ALONE:
                batch = [job]
            else:
                batch = [job]
                while len(batch) < _MAX_BATCH:
                    try:
                        waiting = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if waiting is None:
                        self._queue.put(None)  # stop after this batch
                        break
                    if waiting.mode is Mode.ALONE:
                        held = waiting
                        break
                    batch.append(waiting)
            running = [j for j in batch if j.future.set_running_or_notify_cancel()]
            try:
                if job.mode is Mode.ALONE:
                    for one in running:
                        self._run_one(one)
                else:
                    self._run_batch(running)
            except BaseException as exc:  # a bug here must not leave callers waiting, nor end the thread
                log.exception("sqlite writer %s: unexpected failure", self._thread.name)
                for one in running:
                    if not one.future.done():
                        one.future.set_exception(StoreError(f"SQLite writer failed: {exc!r}"))

    def _run_one(self, job: _Job) -> None:
        """One job on its own: a statement in autocommit, a transaction in its own transaction."""
        try:
            if time.monotonic() > job.deadline:
                raise Timeout
            conn = self._connection()
            self._at = job.deadline
            try:
                if job.mode is Mode.TRANSACTION:
                    conn.execute("BEGIN IMMEDIATE")
                    result = job.fn(conn)
                    conn.execute("COMMIT")
                else:
                    result = job.fn(conn)
            finally:
                self._at = math.inf
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
        except BaseException as exc:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)

    def _run_batch(self, batch: list[_Job]) -> None:
        now = time.monotonic()
        for job in [j for j in batch if now > j.deadline]:
            job.future.set_exception(Timeout())
        batch = [j for j in batch if now <= j.deadline]
        if len(batch) <= 1:
            for job in batch:
                self._run_one(job)
            return
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:  # the write lock or the connection is not to be had
            for job in batch:
                job.future.set_exception(exc)
            return
        try:
            for job in batch:
                conn.execute("SAVEPOINT job")
                self._at = job.deadline
                try:
                    value = job.fn(conn)
                except Exception as exc:
                    self._at = math.inf
                    if not conn.in_transaction:
                        raise _BatchBroken from exc
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((False, exc))
                else:
                    self._at = math.inf
                    conn.execute("RELEASE job")
                    outcomes.append((True, value))
        except BaseException as exc:
            self._at = math.inf
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, _BatchBroken | sqlite3.Error):
                for job in batch:  # nothing was kept: each job again, alone
                    self._run_one(job)
                return
            for job in batch:
                job.future.set_exception(exc)
            return
        try:
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            for job in batch:
                job.future.set_exception(exc)
            return
        for job, (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)
