"""The official Dapr Go SDK as a client: hack/sdk/go-client (built by `make go-client`), for the
tests' SDK checks and the benchmark's gRPC load (its `-load` mode)."""

from __future__ import annotations

from pathlib import Path

from statestore_testing.cached_binaries import cached_binary

__all__ = ["go_client_binary"]


def go_client_binary() -> Path:
    """The go-client that hack/sdk/go-client/build.sh caches (or `$GO_CLIENT_BIN`)."""
    return cached_binary(
        "go-client",
        script="hack/sdk/go-client/build.sh",
        versions="hack/sdk/go-client/versions.env",
        pin="DAPR_GO_SDK_VERSION",
        folder="go-client",
        override="GO_CLIENT_BIN",
    )
