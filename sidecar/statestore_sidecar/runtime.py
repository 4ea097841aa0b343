"""The running server's state: its configured stores, their readiness, and server settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from .components import Validated, encryption_keys
from .drain import Drain
from .keys import KeyScheme, prefix_for
from .stores import StoreConfig, canonical_type, create_store
from .stores.base import BackendUnavailable, Feature, NotThereYet, Store, StoreError
from .tasks import cancel_and_wait

log = logging.getLogger("statestore.runtime")

PING_TIMEOUT = 2.0
INIT_BACKOFF_MAX = 30.0
NOT_THERE_YET_RETRY = 1.0  # e.g. a pluggable component's socket: a cheap look, ready soon after it comes


class StoreHandle:
    """A configured store plus whether its backend is initialised; routes use only `store`."""

    def __init__(
        self,
        validated: Validated,
        *,
        app_id: str,
        namespace: str | None,
        on_give_up: Callable[[StoreHandle], None] | None = None,
    ) -> None:
        component = validated.component
        self.name = component.name
        self.init_timeout = component.init_timeout
        self.ignore_errors = component.ignore_errors
        self._on_give_up = on_give_up
        self.type = canonical_type(component.type, pluggable=component.pluggable)
        self.version = component.version or validated.schema.versions[0]
        self.features: frozenset[Feature] = validated.schema.features
        self.keys = KeyScheme(
            prefix_for(
                str(validated.metadata["keyPrefix"]),
                app_id=app_id,
                store_name=component.name,
                namespace=namespace,
            )
        )
        config = StoreConfig(component.name, validated.metadata, component.version)
        store = create_store(self.type, config, pluggable=component.pluggable)
        # Encryption wraps the store, so every backend gets it and no route knows of it.
        keys = encryption_keys(validated)
        self.store: Store = store
        # A pluggable component says what it can do only once initialised.
        self._features_from = store if validated.schema.passthrough else None
        if keys is not None:
            # cryptography costs ~7 MB of memory per process: loaded only for a store with keys.
            from .stores.encrypted import EncryptedStore

            self.store = EncryptedStore(store, keys, component.name)
            log.info(
                "state store %s: values are encrypted (primary key from secret %s%s)",
                self.name,
                keys.primary.name,
                f", secondary from secret {keys.secondary.name}" if keys.secondary else "",
            )
        self.ready = asyncio.Event()
        # Set once the first initialisation attempt is over, whatever its outcome.
        self.attempted = asyncio.Event()
        self.last_error = "not initialised yet"
        self._task: asyncio.Task[None] | None = None

    @property
    def capabilities(self) -> list[str]:
        caps = sorted(f.value for f in self.features)
        if {Feature.ETAG, Feature.TRANSACTIONAL} <= self.features:
            caps.append("ACTOR")
        return caps

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._init_with_backoff())

    async def _init_with_backoff(self) -> None:
        try:
            await self._init_until_settled()
        finally:
            self.attempted.set()

    async def _init_until_settled(self) -> None:
        # An unreachable backend must not crash-loop the pod: keep trying and stay unready meanwhile.
        delay = 0.5
        said = False
        while True:
            try:
                # spec.initTimeout bounds each attempt, as daprd bounds its one attempt.
                async with asyncio.timeout(self.init_timeout):
                    await self.store.init()
            except Exception as exc:  # a driver's connect failing in any way is unavailability
                self.last_error = (
                    f"init timeout exceeded after {self.init_timeout:g}s"
                    if isinstance(exc, TimeoutError)
                    else str(exc) or type(exc).__name__
                )
                if self.ignore_errors:
                    # As daprd: the server goes on without this store (requests to it: not found).
                    log.error(
                        "state store %s: init failed and ignoreErrors is set, serving without it: %s",
                        self.name,
                        self.last_error,
                    )
                    with contextlib.suppress(Exception):
                        await self.store.close()
                    if self._on_give_up is not None:
                        self._on_give_up(self)
                    return
                if isinstance(exc, StoreError) and not isinstance(exc, BackendUnavailable):
                    # The backend answered and refused (a table of another layout, no permission):
                    # retrying cannot help, so it is reported once and the store stays unready.
                    log.error("state store %s: init failed, not retried: %s", self.name, self.last_error)
                    return
                wait = delay
                if isinstance(exc, NotThereYet):
                    # Looked for often and said once (a pluggable container may take a while to start).
                    wait = min(delay, NOT_THERE_YET_RETRY)
                    level, said = (logging.DEBUG if said else logging.WARNING), True
                else:
                    level = logging.WARNING
                log.log(
                    level,
                    "state store %s: init failed, retrying in %.1fs: %s",
                    self.name,
                    wait,
                    self.last_error,
                )
                self.attempted.set()
                await asyncio.sleep(wait)
                delay = min(delay * 2, INIT_BACKOFF_MAX)
                continue
            if self._features_from is not None:
                self.features = self._features_from.features
            log.info("state store %s (%s) is ready", self.name, self.type)
            self.ready.set()
            return

    def unavailable(self) -> BackendUnavailable:
        return BackendUnavailable(f"state store {self.name} is not initialised: {self.last_error}")

    async def healthy(self) -> bool:
        if not self.ready.is_set():
            return False
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                await self.store.ping()
        except (TimeoutError, Exception) as exc:
            self.last_error = str(exc) or type(exc).__name__
            return False
        return True

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            await cancel_and_wait(self._task)
        if self.ready.is_set():
            await self.store.close()


@dataclass
class Settings:
    app_id: str = ""
    namespace: str | None = None
    api_token: str | None = None
    max_body_size: int = 4 << 20
    runtime_version: str = "edge"
    # Workers sharing a port: one that took connections while its stores were still initialising
    # would answer "not ready" after a peer had answered ready. Each worker starts serving once
    # every store's first initialisation attempt is over (ready, failed, or given up).
    settle_before_serving: bool = False


@dataclass
class Runtime:
    settings: Settings
    stores: dict[str, StoreHandle]
    extended: dict[str, str] = field(default_factory=dict)
    drain: Drain = field(default_factory=Drain)

    @classmethod
    def build(cls, settings: Settings, validated: list[Validated], drain: Drain | None = None) -> Runtime:
        handles: dict[str, StoreHandle] = {}

        def give_up(handle: StoreHandle) -> None:
            handles.pop(handle.name, None)  # ignoreErrors: no longer served, not counted by healthz

        for v in validated:
            handles[v.component.name] = StoreHandle(
                v, app_id=settings.app_id, namespace=settings.namespace, on_give_up=give_up
            )
        return cls(settings, handles, drain=drain or Drain())

    async def start(self) -> None:
        for handle in self.stores.values():
            handle.start()
        if self.settings.settle_before_serving:
            await self._settle()

    async def _settle(self) -> None:
        """Wait for every store's first initialisation attempt, or for a stop signal."""
        settled = asyncio.ensure_future(
            asyncio.gather(*(h.attempted.wait() for h in list(self.stores.values())))
        )
        try:
            # Polled: a signal handler sets the drain, and a stop must not wait for a hung backend.
            while not settled.done() and not self.drain.draining:
                await asyncio.wait([settled], timeout=0.1)
        finally:
            settled.cancel()

    async def stop(self) -> None:
        for handle in list(self.stores.values()):
            await handle.close()

    async def unhealthy(self) -> list[str]:
        """Names of the stores whose backend is not usable right now."""
        handles = list(self.stores.values())  # a store given up meanwhile leaves the dict
        results = await asyncio.gather(*(h.healthy() for h in handles))
        return [h.name for h, ok in zip(handles, results, strict=True) if not ok]
