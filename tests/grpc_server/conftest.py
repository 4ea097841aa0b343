"""A real server with one store of the backend under test, and an SDK client for it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dapr.clients import DaprClient
from grpc_testing import serve

from fixtures.sdk import sdk_client
from fixtures.sidecar import Sidecar
from fixtures.stores import ComponentUnderTest


@pytest.fixture
def served(component: ComponentUnderTest, tmp_path: Path) -> Iterator[Sidecar]:
    with serve(component, tmp_path / f"server-{uuid.uuid4().hex[:6]}") as running:
        yield running


@pytest.fixture
def client(served: Sidecar) -> Iterator[DaprClient]:
    with sdk_client(served) as c:
        yield c
