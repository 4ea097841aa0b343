"""What a server process loads, as its memory map shows it: the Dapr messages without the SDK's gRPC
client (grpcio), and cryptography only for a store with encryption keys. Each would cost every
worker several MB of memory (bench/README.md, "Memory per worker")."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import yaml

from fixtures.sdk import sdk_client
from fixtures.sidecar import component_doc, sidecar_process
from statestore_sidecar.components import secret_env_var

GRPC_CORE = "grpc/_cython/cygrpc"  # grpcio's core, which its client and server both load
CRYPTOGRAPHY = "cryptography/hazmat/bindings/_rust"  # AES-GCM and every other cipher
PROTOBUF = "google/_upb/_message"  # protobuf's runtime: the messages are loaded


def mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_the_probe_sees_what_a_process_maps() -> None:
    import grpc
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    grpc.insecure_channel("127.0.0.1:1").close()  # this process (the tests') uses both
    AESGCM(bytes(16))
    maps = mapped(os.getpid())
    assert GRPC_CORE in maps and CRYPTOGRAPHY in maps and PROTOBUF in maps


def test_a_server_serving_grpc_loads_neither_grpcio_nor_cryptography(tmp_path: Path) -> None:
    resources = tmp_path / "statestore.yaml"
    resources.write_text(yaml.safe_dump(component_doc("statestore")))
    with sidecar_process(["--resources-path", str(resources)]) as server:
        assert server.pid is not None
        with sdk_client(server) as client:  # a call over gRPC, then over HTTP
            client.save_state("statestore", "k", "v")
            assert client.get_state("statestore", "k").data == b"v"
        # bytes saved over gRPC come back as they were sent, as daprd returns them
        assert httpx.get(f"{server.url}/v1.0/state/statestore/k").content == b"v"
        maps = mapped(server.pid)
    assert PROTOBUF in maps
    assert GRPC_CORE not in maps
    assert CRYPTOGRAPHY not in maps


def test_a_store_with_encryption_keys_loads_cryptography(tmp_path: Path) -> None:
    doc = component_doc("statestore")
    doc["spec"]["metadata"] = [
        {"name": "primaryEncryptionKey", "secretKeyRef": {"name": "enc", "key": "key"}}
    ]
    resources = tmp_path / "statestore.yaml"
    resources.write_text(yaml.safe_dump(doc))
    env = {secret_env_var("enc", "key"): "000102030405060708090a0b0c0d0e0f"}
    with sidecar_process(["--resources-path", str(resources)], env) as server:
        assert server.pid is not None
        r = httpx.post(f"{server.url}/v1.0/state/statestore", json=[{"key": "k", "value": "v"}])
        assert r.status_code == 204
        assert httpx.get(f"{server.url}/v1.0/state/statestore/k").content == b'"v"'
        maps = mapped(server.pid)
    assert CRYPTOGRAPHY in maps
    assert GRPC_CORE not in maps
