"""Loading the Dapr messages the `dapr` package ships, in a server process, without its client.

The package's `dapr/proto/__init__.py` and `dapr/proto/runtime/v1/__init__.py` import grpcio and
every service stub for the SDK's client; that costs ~17 MB of memory per server process, for code the
server never runs (`grpc_wire` speaks HTTP/2 itself). The message modules (`*_pb2`) import protobuf
alone. `skip_client_packages` registers those packages bare (their folders, not their `__init__`),
so that the messages load without the client. The message classes are the same, file for file.

Only a process that will never use the SDK's client may call it: the server's own, before it
imports `grpc_api`. A process that has imported the client already (a test with both) is left as
it is.
"""

from __future__ import annotations

import importlib.util
import sys
import types

# The packages between `dapr` and the message modules that `grpc_api` imports.
PACKAGES = (
    "dapr.proto",
    "dapr.proto.common",
    "dapr.proto.common.v1",
    "dapr.proto.runtime",
    "dapr.proto.runtime.v1",
)


def skip_client_packages() -> bool:
    """Register `PACKAGES` bare unless `dapr.proto` is imported already; True when it did."""
    if "dapr.proto" in sys.modules:
        return False
    spec = importlib.util.find_spec("dapr")
    if spec is None or not spec.submodule_search_locations:
        return False  # no `dapr` package: the import of `grpc_api` will say so
    root = next(iter(spec.submodule_search_locations))
    for name in PACKAGES:
        package = types.ModuleType(name, "a package of Dapr messages, loaded without the SDK client")
        package.__path__ = [f"{root}/{name.removeprefix('dapr.').replace('.', '/')}"]
        package.__package__ = name
        sys.modules[name] = package
    return True
