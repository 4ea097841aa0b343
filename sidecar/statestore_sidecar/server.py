"""Running the API under uvicorn, one process or several sharing the ports.

The gRPC server runs in each process's event loop beside the HTTP server (`grpc_api.grpc_service`,
entered by the application's lifespan). Several workers share its port with SO_REUSEPORT, after the
parent has checked that no other process holds it.

With `--workers N` (N > 1) uvicorn's supervisor spawns N fresh interpreters that share the listening
socket. A spawned worker cannot receive the parent's objects, so the parent passes its parsed
arguments in the environment (`STATESTORE_SIDECAR_ARGS`) and each worker rebuilds the same
configuration through `worker_app`: it loads and validates the Components again and opens its own
connection pools. Metrics then live in prometheus_client's multi-process mode: every worker writes
to files in a private folder and the parent alone serves them on the metrics port.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from . import __version__, dapr_messages, logs, reload
from .app import Service, create_app
from .components import Validated
from .drain import FINISH_SECONDS, Drain
from .hot_http import HotHttpProtocol
from .resources import load_stores
from .runtime import Runtime, Settings

log = logging.getLogger("statestore.sidecar")

ARGS_ENV = "STATESTORE_SIDECAR_ARGS"
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def settings_from(args: argparse.Namespace, namespace: str | None) -> Settings:
    return Settings(
        app_id=args.app_id,
        namespace=namespace,
        api_token=os.environ.get("DAPR_API_TOKEN") or None,
        max_body_size=args.max_body_size,
        runtime_version=__version__,
        settle_before_serving=_workers(args) > 1,
    )


def _metrics_on(args: argparse.Namespace) -> bool:
    return bool(args.enable_metrics and args.metrics_port)


def _services(args: argparse.Namespace, settings: Settings, validated: list[Validated]) -> list[Service]:
    """The gRPC server beside the HTTP one, in the same event loop, unless its port is 0; the
    resources' watcher unless --reload-seconds is 0."""
    services: list[Service] = []
    reload_seconds = float(getattr(args, "reload_seconds", 0) or 0)
    if reload_seconds > 0 and args.resources_path:
        services.append(
            functools.partial(
                reload.watch, paths=args.resources_path, interval=reload_seconds, initial=validated
            )
        )
    if not args.dapr_grpc_port:
        return services
    from .grpc_api import grpc_service  # the Dapr messages cost memory: loaded only when it serves

    return [
        *services,
        functools.partial(
            grpc_service,
            host=args.dapr_listen_addresses,
            port=args.dapr_grpc_port,
            token=settings.api_token,
            shared_port=_workers(args) > 1,
        ),
    ]


def _workers(args: argparse.Namespace) -> int:
    return max(int(getattr(args, "workers", 1) or 1), 1)


def build_app(
    args: argparse.Namespace, validated: list[Validated], namespace: str | None, drain: Drain | None = None
) -> ASGIApp:
    settings = settings_from(args, namespace)
    app = create_app(Runtime.build(settings, validated, drain), _services(args, settings, validated))
    if _metrics_on(args):
        from .metrics import MetricsMiddleware

        app = MetricsMiddleware(app)
    # Everything loaded so far (modules, routes, the stores' settings) lives as long as the process.
    # Frozen, the collector never scans it again: a full collection of those ~70,000 objects took
    # 12-20 ms and showed up as the p99 of requests queued behind it.
    gc.collect()
    gc.freeze()
    return app


def worker_app() -> ASGIApp:
    """uvicorn's app factory in each worker process: the configuration the parent validated."""
    dapr_messages.skip_client_packages()  # a server process: the SDK's client is never used here
    args = argparse.Namespace(**json.loads(os.environ[ARGS_ENV]))
    logs.configure(args.log_level, args.log_as_json, args.app_id)
    namespace = os.environ.get("NAMESPACE") or None
    drain = Drain()
    _stop_drains(drain)
    return build_app(args, load_stores(args.resources_path, args.app_id, namespace), namespace, drain)


def _stop_drains(drain: Drain) -> None:
    """Chain a worker's stop signals to its drain, before uvicorn's own handler.

    A worker waits for its stores before it serves (`Settings.settle_before_serving`), inside
    uvicorn's start-up, where uvicorn's handler is not looked at; the drain is.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            drain.hurry()
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)


def _uvicorn_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "host": args.dapr_listen_addresses,
        "port": args.dapr_http_port,
        "access_log": False,
        "log_config": None,
        "server_header": False,
        # Named, not "auto": a missing uvloop or httptools must fail loudly, not halve throughput.
        "loop": "uvloop",
        # httptools' protocol, serving the data requests without an ASGI cycle (hot_http.py).
        "http": HotHttpProtocol,
        # Nothing reads the client address, so X-Forwarded-* need not be parsed on every request.
        "proxy_headers": False,
        "timeout_graceful_shutdown": FINISH_SECONDS,
    }


class DrainingServer(uvicorn.Server):
    """uvicorn's server, stopped by the drain: SIGTERM begins it, the listeners close when it expires.

    SIGINT (Ctrl-C) and a second SIGTERM stop at once, as before. Stopping closes the listening
    sockets and idle connections, then waits for the requests in flight (uvicorn's shutdown); the
    other listeners (gRPC) close at the same moment (`Drain.close()`).
    """

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain
        self._announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not self.drain.draining and self.drain.grace_seconds > 0:
            self.drain.begin()  # plain assignments: safe in a signal handler
            return
        self.drain.hurry()
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain.draining and not self._announced:
            self._announced = True
            log.info("stopping: not ready; serving for %gs more", self.drain.remaining())
        if self.drain.expired():
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.drain.close()
        await super().shutdown(sockets)


@contextlib.contextmanager
def _multiprocess_metrics(args: argparse.Namespace) -> Iterator[None]:
    if not _metrics_on(args):
        yield
        return
    folder = tempfile.mkdtemp(prefix="statestore-metrics-")
    os.environ[_MULTIPROC_ENV] = folder  # inherited by the spawned workers before they import metrics
    try:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        from .metrics_endpoint import serve_metrics

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
        serve_metrics(args.metrics_port, args.dapr_listen_addresses, registry)
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"statestore-sidecar: error: gRPC port {port} is in use: {exc}") from None


def serve(args: argparse.Namespace, validated: list[Validated], namespace: str | None) -> int:
    workers = _workers(args)
    log.info(
        "state API listening on %s:%d (gRPC: %s) with %d state store(s)%s%s",
        args.dapr_listen_addresses,
        args.dapr_http_port,
        args.dapr_grpc_port or "off",
        len(validated),
        ", API token required" if os.environ.get("DAPR_API_TOKEN") else "",
        f", {workers} worker processes" if workers > 1 else "",
    )
    if workers > 1:
        if args.dapr_grpc_port:
            # Workers share the gRPC port with SO_REUSEPORT, which would also share it with any
            # other process of this user: make sure it is free first.
            _check_free(args.dapr_listen_addresses, args.dapr_grpc_port)
        os.environ[ARGS_ENV] = json.dumps(vars(args))
        with _multiprocess_metrics(args):
            # An import string and a factory: each spawned worker builds its own app and pools.
            uvicorn.run(
                "statestore_sidecar.server:worker_app",
                factory=True,
                workers=workers,
                **_uvicorn_options(args),
            )
        return 0
    drain = Drain(args.drain_seconds)
    dapr_messages.skip_client_packages()  # a server process: the SDK's client is never used here
    app = build_app(args, validated, namespace, drain)
    if _metrics_on(args):
        from .metrics_endpoint import serve_metrics

        serve_metrics(args.metrics_port, args.dapr_listen_addresses)
    DrainingServer(uvicorn.Config(app, **_uvicorn_options(args)), drain).run()
    return 0
