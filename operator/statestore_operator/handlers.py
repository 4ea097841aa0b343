"""kopf registrations: thin handlers that hand every trigger to the Reconciler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import kopf

from . import access, actors, admission, fallback, injection, naming, render
from .kube import Client
from .reconcile import Reconciler
from .validation import is_state_store
from .workqueue import Key, WorkQueue

log = logging.getLogger("statestore.operator")

RETRY_DELAY = 5.0
MAX_RETRY_DELAY = 300.0


@dataclass
class Options:
    """What the command line decides."""

    pods: render.PodSettings
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    resync_seconds: float = 60.0
    workers: int = 64  # reconciliations at once
    app_id_label: str = access.DEFAULT_APP_ID_LABEL
    webhook_address: str | None = None
    webhook_host: str | None = None
    webhook_port: int = 9443
    webhook_cert: str | None = None
    webhook_key: str | None = None
    webhook_cert_reload_seconds: float = 60.0  # kopf re-reads the files this often; a change restarts it
    webhook_service: str | None = None  # "namespace/name[:port]": in-cluster clientConfig
    webhook_config_name: str = "statestore-operator.dapr.io"
    inject_sidecars: bool = False  # the Pod mutating webhook (sidecar mode)
    inject_failure_policy: str = "Ignore"
    inject_sidecar_kind: str = "auto"  # native (initContainers), ordinary (containers), or by version


def login() -> kopf.ConnectionInfo:
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no in-cluster service account and no kubeconfig")
    return info


class ServiceWebhookServer(kopf.WebhookServer):
    """kopf's server with a `service` clientConfig, for an operator running in the cluster."""

    def __init__(self, *, service: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        ref, _, port = service.partition(":")
        self.service_namespace, _, self.service_name = ref.partition("/")
        self.service_port = int(port or 443)

    async def __call__(self, fn: Any) -> Any:
        async for config in super().__call__(fn):
            # kopf appends "/<handler id>" to this path, as it does to its URLs.
            path = urllib.parse.urlsplit(str(config.get("url", ""))).path.rstrip("/")
            yield {
                "service": {
                    "namespace": self.service_namespace,
                    "name": self.service_name,
                    "port": self.service_port,
                    "path": path,
                },
                **({"caBundle": config["caBundle"]} if "caBundle" in config else {}),
            }


def _state_store(body: kopf.Body, **_: Any) -> bool:
    return is_state_store(body)


def _ours(body: kopf.Body, **_: Any) -> bool:
    """State stores, and Components that carry our status (their type was changed away from state.*)."""
    return is_state_store(body) or bool(body.get("status")) or fallback.has_annotations(body)


@dataclass
class _Runtime:
    reconciler: Reconciler | None = None
    queue: WorkQueue | None = None
    resync: asyncio.Task[None] | None = None
    failures: dict[Key, int] = field(default_factory=dict)


def register(registry: kopf.OperatorRegistry, options: Options) -> None:
    runtime = _Runtime()

    async def reconcile(key: Key, full: bool) -> None:
        assert runtime.reconciler is not None and runtime.queue is not None
        namespace, name = key
        try:
            await runtime.reconciler.reconcile(namespace, name, full)
        except Exception as exc:
            # kopf does not retry event handlers: requeue with exponential backoff, like a workqueue.
            failures = runtime.failures[key] = runtime.failures.get(key, 0) + 1
            delay = min(RETRY_DELAY * 2 ** (failures - 1), MAX_RETRY_DELAY)
            log.warning("reconciling %s/%s failed (retrying in %gs): %s", namespace, name, delay, exc)
            runtime.queue.add_after(key, delay)
        else:
            runtime.failures.pop(key, None)

    def enqueue(namespace: str, name: str, full: bool = True) -> None:
        # Handlers only queue the key and return at once: kopf's per-object event backlogs never grow,
        # and a burst of events for one Component becomes one reconciliation of its newest state.
        assert runtime.queue is not None
        runtime.queue.add((namespace, name), full)

    def claimants_in(index: kopf.Index[str, actors.ActorStore], namespace: str) -> list[actors.ActorStore]:
        return list(index.get(namespace, []))

    @kopf.on.login(id="login", registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return login()

    @kopf.on.startup(id="configure", registry=registry)
    async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Handler progress and diff-base live in annotations, so `.status` holds only our conditions.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix=naming.ANNOTATION_PREFIX
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=naming.ANNOTATION_PREFIX, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{naming.ANNOTATION_PREFIX}/finalizer"
        # We post our own Events, one per condition transition; kopf's would repeat on each retry.
        settings.posting.level = logging.ERROR
        settings.watching.server_timeout = 300
        if options.webhook_cert and options.webhook_key:
            listen: dict[str, Any] = {
                "addr": options.webhook_address,
                "port": options.webhook_port,
                "certfile": options.webhook_cert,
                "pkeyfile": options.webhook_key,
                "file_check_interval": options.webhook_cert_reload_seconds,
            }
            settings.admission.server = (
                ServiceWebhookServer(service=options.webhook_service, **listen)
                if options.webhook_service
                else kopf.WebhookServer(host=options.webhook_host, **listen)
            )
            # Empty: serve only; whoever installed us (the Helm chart) owns the configuration.
            settings.admission.managed = options.webhook_config_name or None
        runtime.reconciler = Reconciler(Client(login), options.pods, options.app_id_label)
        try:
            await runtime.reconciler.refresh_status_support()
        except Exception as exc:  # looked up again at every resync
            log.warning("could not look up the Component API's subresources: %s", exc)
        runtime.queue = WorkQueue(reconcile, options.workers)
        runtime.queue.start()
        runtime.resync = asyncio.create_task(_resync_forever())

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def _cleanup(**_: Any) -> None:
        if runtime.resync is not None:
            runtime.resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runtime.resync
        if runtime.queue is not None:
            await runtime.queue.stop()
        if runtime.reconciler is not None:
            await runtime.reconciler.client.close()

    async def _resync_forever() -> None:
        """Level-based safety net: every Component is reconciled again now and then (e.g. a Secret
        created after its Component or given a new value, or a write that failed)."""
        while True:
            await asyncio.sleep(options.resync_seconds)
            assert runtime.reconciler is not None
            try:
                # The CRD may have been upgraded (or replaced by Dapr's) since the last pass.
                await runtime.reconciler.refresh_status_support()
                for namespace in options.namespaces or (None,):
                    for body in await runtime.reconciler.client.list_components(namespace):
                        if is_state_store(body):
                            meta = body["metadata"]
                            enqueue(meta["namespace"], meta["name"])
            except Exception as exc:
                log.warning("resync failed: %s", exc)

    @kopf.index(
        naming.GROUP, naming.VERSION, naming.PLURAL, id="actor_stores", when=_state_store, registry=registry
    )
    def actor_stores(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str, actors.ActorStore] | None:
        if actors.claims_actor_store(body):
            return {str(namespace): actors.actor_store(body)}
        return None

    @kopf.on.event(naming.GROUP, naming.VERSION, naming.PLURAL, id="component", when=_ours, registry=registry)
    async def component_event(
        type: str, body: kopf.Body, namespace: str | None, name: str, **kwargs: Any
    ) -> None:
        namespace = str(namespace)
        assert runtime.reconciler is not None
        if runtime.reconciler.is_own_status_write(namespace, name, body.metadata.get("resourceVersion")):
            return  # the echo of our own status patch: nothing new to act on
        claimants = claimants_in(kwargs["actor_stores"], namespace)
        if type != "DELETED":
            enqueue(namespace, name)
        # Another actor store may win or lose by this change (e.g. the holder was deleted).
        for other in claimants:
            if other.name != name:
                enqueue(namespace, other.name)

    @kopf.on.event(
        "apps",
        "v1",
        "deployments",
        id="deployment",
        labels={"app.kubernetes.io/managed-by": naming.MANAGER},
        registry=registry,
    )
    async def deployment_event(body: kopf.Body, namespace: str | None, **kwargs: Any) -> None:
        namespace = str(namespace)
        for owner in body.metadata.get("ownerReferences") or []:
            if owner.get("kind") == naming.KIND and str(owner.get("apiVersion", "")).startswith(
                naming.GROUP + "/"
            ):
                enqueue(namespace, owner["name"], full=False)

    if not (options.webhook_cert and options.webhook_key):
        return

    if options.inject_sidecars:
        injection.register(
            registry,
            options.pods,
            options.namespaces,
            login,
            ignore_failures=options.inject_failure_policy == "Ignore",
            sidecar_kind=options.inject_sidecar_kind,
            resync_seconds=options.resync_seconds,
        )

    @kopf.on.validate(
        naming.GROUP,
        naming.VERSION,
        naming.PLURAL,
        id="validate-component",
        operations=["CREATE", "UPDATE"],
        registry=registry,
    )
    def validate_component(
        body: kopf.Body,
        warnings: list[str],
        **kwargs: Any,
    ) -> None:
        namespace = str(body.get("metadata", {}).get("namespace") or "")
        if options.namespaces and namespace not in options.namespaces:
            return  # not ours to judge (the webhook configuration is cluster-wide)
        verdict = admission.review(body, claimants_in(kwargs["actor_stores"], namespace))
        warnings.extend(verdict.warnings)
        if not verdict.allowed:
            raise kopf.AdmissionError(verdict.message, code=422)
