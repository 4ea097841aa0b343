"""Running the API under uvicorn, one process or several sharing the port."""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn

from . import __version__
from .app import create_app
from .components import Validated
from .runtime import Runtime, Settings

log = logging.getLogger("statestore.sidecar")


def settings_from(args: argparse.Namespace, namespace: str | None) -> Settings:
    return Settings(
        app_id=args.app_id,
        namespace=namespace,
        api_token=os.environ.get("DAPR_API_TOKEN") or None,
        max_body_size=args.max_body_size,
        runtime_version=__version__,
    )


def serve(args: argparse.Namespace, validated: list[Validated], namespace: str | None) -> int:
    settings = settings_from(args, namespace)
    app = create_app(Runtime.build(settings, validated))
    if args.enable_metrics and args.metrics_port:
        from .metrics import MetricsMiddleware, start_metrics_server

        start_metrics_server(args.metrics_port, args.dapr_listen_addresses)
        app = MetricsMiddleware(app)
    log.info(
        "state API listening on %s:%d with %d state store(s)%s",
        args.dapr_listen_addresses,
        args.dapr_http_port,
        len(validated),
        ", API token required" if settings.api_token else "",
    )
    config = uvicorn.Config(
        app,
        host=args.dapr_listen_addresses,
        port=args.dapr_http_port,
        access_log=False,
        log_config=None,
        server_header=False,
        loop="auto",
        http="auto",
    )
    uvicorn.Server(config).run()
    return 0
