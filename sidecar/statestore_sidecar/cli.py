"""`statestore-sidecar`: serve the state API for the Components in some files, with daprd's flags."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from . import __version__, logs
from .components import ComponentError
from .resources import load_stores

log = logging.getLogger("statestore.sidecar")


def _size(text: str) -> int:
    """Bytes from `4Mi`, `4MB`, `512Ki` or a plain number, as daprd's --max-body-size accepts."""
    units = {
        "ki": 1 << 10,
        "mi": 1 << 20,
        "gi": 1 << 30,
        "k": 1000,
        "kb": 1000,
        "m": 10**6,
        "mb": 10**6,
        "g": 10**9,
        "gb": 10**9,
        "b": 1,
        "": 1,
    }
    stripped = text.strip().lower()
    number = stripped.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = stripped[len(number) :]
    if not number or unit not in units:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (for example 4Mi)")
    return int(float(number) * units[unit])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="statestore-sidecar",
        description="Serve Dapr's state API (HTTP and gRPC) for the state store Components in the resources.",
    )
    p.add_argument(
        "--resources-path",
        "--components-path",
        action="append",
        default=[],
        metavar="PATH",
        help="a Component YAML file or a folder of them (repeatable)",
    )
    p.add_argument("--app-id", default="", help="the application id (used by the appid key prefix)")
    p.add_argument("--dapr-http-port", type=int, default=3500, help="port of the state API (default 3500)")
    p.add_argument(
        "--dapr-grpc-port",
        type=int,
        default=int(os.environ.get("DAPR_GRPC_PORT") or 50001),
        help="port of the gRPC API (default: DAPR_GRPC_PORT, else 50001; 0 turns it off)",
    )
    p.add_argument(
        "--dapr-listen-addresses", default="0.0.0.0", help="address to listen on (default 0.0.0.0, as daprd)"
    )
    p.add_argument("--metrics-port", type=int, default=9090, help="Prometheus metrics port (default 9090)")
    p.add_argument("--enable-metrics", type=_bool, default=True, help="serve metrics (default true)")
    p.add_argument("--log-level", default="info", choices=sorted(logs.LEVELS), help="default info")
    p.add_argument("--log-as-json", action="store_true", help="write logs as JSON lines")
    p.add_argument("--max-body-size", type=_size, default=4 << 20, help="request body limit (default 4Mi)")
    p.add_argument("--workers", type=int, default=1, help="server processes sharing the port (default 1)")
    p.add_argument(
        "--drain-seconds",
        type=_seconds,
        default=0.0,
        help="on SIGTERM, fail readiness but keep serving this long before stopping (default 0; "
        "one server process only)",
    )
    p.add_argument(
        "--reload-seconds",
        type=_seconds,
        default=5.0,
        help="check the resources for changes this often and reload the state stores without a restart "
        "(default 5; 0 turns it off)",
    )
    p.add_argument("--version", action="version", version=f"statestore-sidecar {__version__}")
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 3600 seconds")
    return value


def _bool(text: str) -> bool:
    return text.strip().lower() in ("1", "t", "true", "y", "yes", "on")


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.drain_seconds and args.workers > 1:
        p.error("--drain-seconds needs a single server process (--workers 1)")
    logs.configure(args.log_level, args.log_as_json, args.app_id)
    namespace = os.environ.get("NAMESPACE") or None
    try:
        validated = load_stores(args.resources_path, args.app_id, namespace)
    except ComponentError as exc:
        print(f"statestore-sidecar: error: {exc}", file=sys.stderr)
        return 1
    from .server import serve  # the server stack loads only once the configuration is good

    return serve(args, validated, namespace)


if __name__ == "__main__":
    sys.exit(main())
