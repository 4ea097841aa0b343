"""Hot reload: the resources are polled, and a change swaps the served stores without a restart.

Polling a digest of the files' contents (not inotify) sees a mounted ConfigMap's update, which the
kubelet makes by swapping a `..data` symlink: the file names stay, their contents change. Stores whose
Component did not change keep their handle (and their in-flight requests, pools, readiness); changed
ones are re-initialised, removed ones closed after a grace period for the requests still using them.
A configuration that fails to load or validate is logged and the previous one keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .components import ComponentError, Validated
from .resources import load_stores
from .runtime import StoreHandle
from .tasks import cancel_and_wait

if TYPE_CHECKING:
    from .state_api import StateCore

log = logging.getLogger("statestore.reload")

RETIRE_SECONDS = 30.0  # a replaced store is closed this long after the swap (its requests finish)
_SUFFIXES = (".yaml", ".yml", ".json")


def digest(paths: Sequence[str]) -> str:
    """A digest of every Component file under `paths` (contents read through symlinks)."""
    h = hashlib.sha256()
    for root in paths:
        path = Path(root)
        files = [path] if path.is_file() else sorted(path.glob("*")) if path.is_dir() else []
        for file in files:
            if file.name.startswith(".") or file.suffix not in _SUFFIXES:
                continue
            try:
                data = file.read_bytes()
            except OSError:  # removed between the listing and the read: the next poll sees it
                continue
            h.update(str(file).encode() + b"\0" + data + b"\0")
    return h.hexdigest()


def fingerprint(validated: Validated) -> str:
    """What a store's handle is built from: a change in it re-initialises the store."""
    component = validated.component
    return json.dumps(
        [component.type, component.version, dict(validated.metadata.values)], sort_keys=True, default=str
    )


@dataclass(frozen=True, slots=True)
class Plan:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def plan(current: Mapping[str, str], wanted: Mapping[str, str]) -> Plan:
    """From fingerprints by store name, before and after."""
    return Plan(
        tuple(sorted(set(wanted) - set(current))),
        tuple(sorted(set(current) - set(wanted))),
        tuple(sorted(n for n in set(current) & set(wanted) if current[n] != wanted[n])),
    )


class Reloader:
    def __init__(
        self, core: StateCore, paths: Sequence[str], interval: float, initial: Sequence[Validated]
    ) -> None:
        self.core = core
        self.paths = list(paths)
        self.interval = interval
        # Files changed between the server's load and this digest are seen at the next change only.
        self.seen = digest(self.paths)
        self.fingerprints = {v.component.name: fingerprint(v) for v in initial}
        self.retiring: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            now = await asyncio.to_thread(digest, self.paths)
            if now != self.seen:
                self.seen = now
                await self.reload()

    async def reload(self) -> None:
        runtime = self.core.runtime
        settings = runtime.settings
        try:
            validated = await asyncio.to_thread(load_stores, self.paths, settings.app_id, settings.namespace)
        except (ComponentError, OSError, ValueError) as exc:
            log.error("reload failed, the previous configuration keeps serving: %s", exc)
            return
        wanted = {v.component.name: v for v in validated}
        change = plan(self.fingerprints, {n: fingerprint(v) for n, v in wanted.items()})
        if not change:
            log.info("resources changed, state stores unchanged")
            return
        stores = runtime.stores

        def give_up(handle: StoreHandle) -> None:  # ignoreErrors: as Runtime.build's handles do
            if stores.get(handle.name) is handle:
                del stores[handle.name]

        try:
            fresh = {
                name: StoreHandle(
                    wanted[name], app_id=settings.app_id, namespace=settings.namespace, on_give_up=give_up
                )
                for name in (*change.added, *change.changed)
            }
        except Exception as exc:  # a store that cannot even be built: keep what serves now
            log.error("reload failed, the previous configuration keeps serving: %s", exc)
            return
        # No await from here to the end of the swap: a request sees the old or the new set, never a mix.
        old = {name: stores[name] for name in (*change.removed, *change.changed) if name in stores}
        for name in change.removed:
            stores.pop(name, None)
        stores.update(fresh)
        for handle in fresh.values():
            handle.start()
        self.fingerprints = {n: fingerprint(v) for n, v in wanted.items()}
        for handle in old.values():
            self._retire(handle)
        log.info(
            "state stores reloaded: added %s, removed %s, re-initialised %s",
            list(change.added),
            list(change.removed),
            list(change.changed),
        )

    def _retire(self, handle: StoreHandle) -> None:
        async def later() -> None:
            try:
                await asyncio.sleep(RETIRE_SECONDS)
            finally:
                await handle.close()

        task = asyncio.get_running_loop().create_task(later())
        self.retiring.add(task)
        task.add_done_callback(self.retiring.discard)

    async def stop(self) -> None:
        for task in list(self.retiring):
            await cancel_and_wait(task)


@contextlib.asynccontextmanager
async def watch(
    core: StateCore, *, paths: Sequence[str], interval: float, initial: Sequence[Validated]
) -> AsyncIterator[None]:
    """A service of the app (see `create_app`): reload on change while it serves; `initial` is what
    the server loaded at start."""
    reloader = Reloader(core, paths, interval, initial)
    task = asyncio.get_running_loop().create_task(reloader.run())
    try:
        yield
    finally:
        await cancel_and_wait(task)
        await reloader.stop()
