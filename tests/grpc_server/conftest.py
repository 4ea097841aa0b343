"""A real server with one store of the backend under test (ours, and daprd as the reference), and an
SDK client for it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dapr.clients import DaprClient
from grpc_testing import APP_ID, STORE, isolated, serve

from fixtures.sdk import sdk_client
from fixtures.sidecar import Sidecar
from fixtures.stores import ComponentUnderTest
from statestore_testing.daprd import DaprComponent, Daprd

# "daprd": the same tests against a real daprd on the same kind of backend, which shows that they
# expect daprd's behaviour (testing/statestore_testing/daprd.py; built by `make daprd`).
IMPLEMENTATIONS = [pytest.param("ours"), pytest.param("daprd", marks=pytest.mark.backends)]


@contextlib.contextmanager
def serve_daprd(
    component: ComponentUnderTest, folder: Path, env: dict[str, str] | None = None
) -> Iterator[Sidecar]:
    folder.mkdir(parents=True, exist_ok=True)
    component = isolated(component)
    store = DaprComponent(STORE, component.type, component.metadata)
    with Daprd([store], folder, app_id=APP_ID, env=env) as daprd:
        yield Sidecar(daprd.http_url, daprd.grpc_port)


@contextlib.contextmanager
def serve_impl(
    impl: str, component: ComponentUnderTest, folder: Path, env: dict[str, str] | None = None
) -> Iterator[Sidecar]:
    """`component`'s store named `store` under app id `myapp`, served by ours or by daprd."""
    with (serve if impl == "ours" else serve_daprd)(component, folder, env) as running:
        yield running


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def served(impl: str, component: ComponentUnderTest, tmp_path: Path) -> Iterator[Sidecar]:
    with serve_impl(impl, component, tmp_path / f"server-{uuid.uuid4().hex[:6]}") as running:
        yield running


@pytest.fixture
def client(served: Sidecar) -> Iterator[DaprClient]:
    with sdk_client(served) as c:
        yield c
