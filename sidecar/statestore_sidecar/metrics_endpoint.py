"""The Prometheus endpoint, started once per server: by the only process, or by the parent of workers.

Apart from `metrics.py` because the parent of workers must not define the metrics themselves: in
multi-process mode every process that defines them writes its own files.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server


def serve_metrics(port: int, address: str, registry: CollectorRegistry | None = None) -> None:
    """Serve `registry` (the default one when None) on address:port, or exit with a one-line error."""
    try:
        if registry is None:
            start_http_server(port, addr=address)
        else:
            start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        # daprd exits too when its metrics port is taken.
        raise SystemExit(
            f"statestore-sidecar: error: cannot serve metrics on {address}:{port}: {exc.strerror or exc}"
        ) from None
