"""What the operator uses of this package: reading and validating Components, as the server does,
and the server's stop timing, which the rendered pod's grace period must cover.

The operator imports only these names (a test pins the list), so everything else here can change
without touching it, and importing them loads no database driver.
"""

from __future__ import annotations

from .components import (
    COMPONENT_CONTAINER_ANNOTATION,
    Component,
    ComponentError,
    SecretRef,
    Validated,
    parse,
    secret_env_var,
    validate,
)
from .drain import FINISH_SECONDS
from .encryption import NAMES as ENCRYPTION_KEYS
from .schema import Persistence, is_truthy
from .stores import UnknownStoreType, schema_for

__all__ = [
    "COMPONENT_CONTAINER_ANNOTATION",
    "ENCRYPTION_KEYS",
    "FINISH_SECONDS",
    "Component",
    "ComponentError",
    "Persistence",
    "SecretRef",
    "UnknownStoreType",
    "Validated",
    "is_truthy",
    "parse",
    "schema_for",
    "secret_env_var",
    "validate",
]
