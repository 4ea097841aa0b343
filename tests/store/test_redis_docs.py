"""Every Component in docs/redis.md is valid as written (the same validation the operator runs)."""

from __future__ import annotations

import re
from pathlib import Path

from statestore_sidecar import components
from statestore_sidecar.stores import StoreConfig, create_store
from statestore_sidecar.stores.redis.store import RedisStore

DOC = Path(__file__).resolve().parents[2] / "docs" / "redis.md"


def test_documented_components_validate(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 3
    files = []
    for i, block in enumerate(blocks):
        path = tmp_path / f"c{i}.yaml"
        path.write_text(block)
        files.append(path)
    loaded = components.load(files)
    env = {
        components.secret_env_var("redis", key): "s3cret" for key in ("redis-password", "sentinel-password")
    }
    topologies = {}
    for component in loaded.stores:
        validated = components.validate(component, components.metadata_values(component, env))
        assert validated.warnings == ()
        store = create_store(component.type, StoreConfig(component.name, validated.metadata))
        assert isinstance(store, RedisStore)
        topologies[component.name] = (
            store.settings.failover,
            store.settings.cluster,
            len(store.settings.hosts),
        )
    assert topologies == {
        "cache": (False, False, 1),
        "orders": (True, False, 3),
        "sessions": (False, True, 2),
    }
