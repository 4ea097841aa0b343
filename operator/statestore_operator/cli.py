"""`statestore-operator`: run the operator (kopf) with the project's flags."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import kopf
import prometheus_client

from . import __version__, access, handlers, inject, quantities, render, scaling

DEFAULT_IMAGE = "ghcr.io/statestore-operator/statestore-sidecar:" + __version__


def quantity(text: str) -> str:
    """An argparse type: a resource quantity, or "" (unset)."""
    if text and not quantities.is_quantity(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a resource quantity (e.g. 100m, 128Mi)")
    return text


def _drain_seconds(text: str) -> int:
    if not text.isdigit() or int(text) > 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds from 0 to 3600")
    return int(text)


def _replicas(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= scaling.MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {scaling.MAX_REPLICAS}")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="statestore-operator",
        description="Validate state store Components and run a state API Deployment for each.",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    p.add_argument(
        "--image",
        default=os.environ.get("STATESTORE_IMAGE", DEFAULT_IMAGE),
        help="image of the state API pods (env STATESTORE_IMAGE; default %(default)s)",
    )
    p.add_argument("--image-pull-policy", default="IfNotPresent", choices=["Always", "IfNotPresent", "Never"])
    p.add_argument("--pod-log-level", default="info", help="--log-level of the state API pods")
    p.add_argument(
        "--pod-drain-seconds",
        type=_drain_seconds,
        default=5,
        help="how long a stopping state API pod keeps serving while not ready (default 5; its "
        f"terminationGracePeriodSeconds is this plus {render.STOP_SECONDS})",
    )
    p.add_argument(
        "--resync-seconds", type=float, default=60.0, help="re-check every Component this often (default 60)"
    )
    p.add_argument(
        "--default-replicas",
        type=_replicas,
        default=1,
        help="state API replicas of a networked store (Redis, PostgreSQL, MySQL) without a "
        f"{scaling.REPLICAS} annotation (default 1; stores of local files or memory always run one)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=64,
        help="Components reconciled at once (default %(default)s); more events queue, deduplicated",
    )
    pods = p.add_argument_group("state API pod resources (empty: not set)")
    pods.add_argument("--pod-cpu-request", type=quantity, default="50m", help="default %(default)s")
    pods.add_argument("--pod-memory-request", type=quantity, default="64Mi", help="default %(default)s")
    pods.add_argument("--pod-cpu-limit", type=quantity, default="", help="default: none")
    pods.add_argument("--pod-memory-limit", type=quantity, default="256Mi", help="default %(default)s")
    p.add_argument(
        "--app-id-label",
        default=access.DEFAULT_APP_ID_LABEL,
        metavar="KEY",
        help="pod label holding the Dapr app id; a Component's scopes admit pods whose label is one of them "
        "(NetworkPolicy; default %(default)s)",
    )
    peering = p.add_mutually_exclusive_group()
    peering.add_argument(
        "--standalone", action="store_true", default=True, help="no peering (default; run one replica)"
    )
    peering.add_argument(
        "--peering", metavar="NAME", help="use kopf peering with this KopfPeering name instead"
    )
    p.add_argument(
        "--liveness", metavar="URL", help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz"
    )
    p.add_argument("--metrics-port", type=int, default=0, help="Prometheus metrics port (0: off)")
    p.add_argument("--metrics-address", default="0.0.0.0", help="address of the metrics endpoint")
    hook = p.add_argument_group("validating webhook (on when --webhook-cert and --webhook-key are given)")
    hook.add_argument("--webhook-address", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    hook.add_argument("--webhook-port", type=int, default=9443, help="listen port (default 9443)")
    hook.add_argument("--webhook-host", help="host name the API server calls (URL clientConfig)")
    hook.add_argument(
        "--webhook-service", metavar="NS/NAME[:PORT]", help="Service the API server calls instead of a URL"
    )
    hook.add_argument("--webhook-cert", help="PEM certificate (its CA, or itself, becomes the caBundle)")
    hook.add_argument("--webhook-key", help="PEM private key of --webhook-cert")
    hook.add_argument(
        "--webhook-cert-reload-seconds",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="re-read --webhook-cert/--webhook-key this often; when they change (e.g. cert-manager renewed "
        "them) the webhook is served with the new pair, without a restart (default %(default)g)",
    )
    hook.add_argument(
        "--webhook-config-name",
        default="statestore-operator.dapr.io",
        help="name of the ValidatingWebhookConfiguration the operator maintains; empty: serve only "
        "(the configuration is installed by other means, e.g. the Helm chart)",
    )
    hook.add_argument(
        "--inject-sidecars",
        action="store_true",
        help='also serve the Pod mutating webhook: pods annotated statestore.dapr.io/inject: "true" get a '
        "statestore sidecar (needs --webhook-cert and --webhook-key)",
    )
    hook.add_argument(
        "--inject-failure-policy",
        choices=["Ignore", "Fail"],
        default="Ignore",
        help="failurePolicy of the Pod webhook: Ignore (default) lets pods start without the sidecar while "
        "the operator is down; Fail refuses them instead",
    )
    hook.add_argument(
        "--inject-sidecar-kind",
        choices=inject.SIDECAR_KINDS,
        default="auto",
        help="the injected container: native (an initContainer with restartPolicy Always), ordinary (the "
        "last of the pod's containers), or auto (default): native when the API server is 1.29 or later",
    )
    p.add_argument("--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"statestore-operator {__version__}")
    return p


def resources(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """The state API container's `resources`, from the --pod-* flags (unset ones left out)."""
    requests = {"cpu": args.pod_cpu_request, "memory": args.pod_memory_request}
    limits = {"cpu": args.pod_cpu_limit, "memory": args.pod_memory_limit}
    result = {
        "requests": {k: v for k, v in requests.items() if v},
        "limits": {k: v for k, v in limits.items() if v},
    }
    return {k: v for k, v in result.items() if v}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if bool(args.webhook_cert) != bool(args.webhook_key):
        print("statestore-operator: error: --webhook-cert and --webhook-key go together", file=sys.stderr)
        return 2
    if args.webhook_config_name and args.webhook_config_name.count(".") < 2:
        # kopf names each webhook "<handler>.<config name>"; the API server wants three DNS segments.
        print(
            "statestore-operator: error: --webhook-config-name needs three dot-separated parts",
            file=sys.stderr,
        )
        return 2
    for kind in ("cpu", "memory"):
        request, limit = getattr(args, f"pod_{kind}_request"), getattr(args, f"pod_{kind}_limit")
        if request and limit and quantities.value(request) > quantities.value(limit):
            print(
                f"statestore-operator: error: --pod-{kind}-request {request} is above --pod-{kind}-limit {limit}",
                file=sys.stderr,
            )
            return 2
    if args.workers < 1:
        print("statestore-operator: error: --workers must be at least 1", file=sys.stderr)
        return 2
    if not access.is_label_key(args.app_id_label):
        print(
            f"statestore-operator: error: --app-id-label {args.app_id_label!r} is not a label key",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # kopf logs every successful event handler call; the Events and conditions say what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    options = handlers.Options(
        pods=render.PodSettings(
            image=args.image,
            image_pull_policy=args.image_pull_policy,
            log_level=args.pod_log_level,
            drain_seconds=args.pod_drain_seconds,
            default_replicas=args.default_replicas,
            resources=resources(args),
        ),
        namespaces=tuple(args.namespace),
        resync_seconds=args.resync_seconds,
        workers=args.workers,
        app_id_label=args.app_id_label,
        webhook_address=args.webhook_address,
        webhook_host=args.webhook_host,
        webhook_port=args.webhook_port,
        webhook_cert=args.webhook_cert,
        webhook_key=args.webhook_key,
        webhook_cert_reload_seconds=args.webhook_cert_reload_seconds,
        webhook_service=args.webhook_service,
        webhook_config_name=args.webhook_config_name,
        inject_sidecars=args.inject_sidecars,
        inject_failure_policy=args.inject_failure_policy,
        inject_sidecar_kind=args.inject_sidecar_kind,
    )
    registry = kopf.OperatorRegistry()
    handlers.register(registry, options)
    if args.metrics_port:
        prometheus_client.start_http_server(args.metrics_port, addr=args.metrics_address)
    kopf.run(
        registry=registry,
        standalone=not args.peering,
        peering_name=args.peering,
        liveness_endpoint=args.liveness,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
