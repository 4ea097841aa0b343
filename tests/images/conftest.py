"""Both images, built once per run by `make images` (cached: warm runs only check the inputs' hash)."""

from __future__ import annotations

import pytest
from image_testing import build_images


@pytest.fixture(scope="session")
def images() -> None:
    build_images()
