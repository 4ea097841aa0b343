"""Fixtures of the hostile-input tests (helpers live in `hostile.py`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hostile import STORE, Api

from fixtures.stores import ComponentUnderTest


@pytest.fixture
def api(component: ComponentUnderTest) -> Iterator[Api]:
    """The state API with one store named `store` of the backend under test (app id `myapp`)."""
    instance = Api({STORE: component})
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def query_api(query_component: ComponentUnderTest) -> Iterator[Api]:
    """Like `api`, for the backends that offer the query API."""
    instance = Api({STORE: query_component})
    try:
        yield instance
    finally:
        instance.close()
