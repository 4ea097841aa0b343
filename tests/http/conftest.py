"""An HTTP client for the state API in front of one store of each backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import httpx
import pytest

from fixtures.stores import ComponentUnderTest
from statestore_sidecar.app import create_app
from statestore_sidecar.components import Component, MetadataItem, validate
from statestore_sidecar.runtime import Runtime, Settings

APP_ID = "myapp"
STORE = "store"

Components = Mapping[str, ComponentUnderTest]
# make_api(stores, **settings): a client of a runtime serving those stores.
MakeApi = Callable[..., Awaitable[httpx.AsyncClient]]


def runtime_for(stores: Components, **settings: object) -> Runtime:
    validated = []
    for name, cut in stores.items():
        component = Component(
            name=name,
            type=cut.type,
            metadata=tuple(MetadataItem(k, v) for k, v in cut.metadata.items()),
        )
        validated.append(validate(component, cut.metadata))
    return Runtime.build(Settings(**{"app_id": APP_ID, **settings}), validated)  # type: ignore[arg-type]


async def open_client(runtime: Runtime) -> httpx.AsyncClient:
    await runtime.start()
    for handle in runtime.stores.values():
        await asyncio.wait_for(handle.ready.wait(), 30)
    transport = httpx.ASGITransport(app=create_app(runtime))
    return httpx.AsyncClient(transport=transport, base_url="http://state", timeout=60)


@pytest.fixture
async def make_api() -> AsyncIterator[MakeApi]:
    """Build clients for custom runtimes; everything is closed at the end of the test."""
    runtimes: list[Runtime] = []
    clients: list[httpx.AsyncClient] = []

    async def make(stores: Components, **settings: object) -> httpx.AsyncClient:
        runtime = runtime_for(stores, **settings)
        runtimes.append(runtime)
        client = await open_client(runtime)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
    for runtime in runtimes:
        await runtime.stop()


@pytest.fixture
async def api(component: ComponentUnderTest, make_api: MakeApi) -> httpx.AsyncClient:
    """The state API with one store named `store` of the backend under test, app id `myapp`."""
    return await make_api({STORE: component})
