"""Bad state encryption settings are refused the same way by the server and the operator: a key of the
wrong length or form (read from the secret), a key not given by `secretKeyRef`, a secondary key
without a primary one or from the primary's secret, and a name daprd would not recognise.

The server exits 1 with one line naming the component and the item (never the key), as
`components.validate` says it; the operator's check, given the Secret's value, reports the same.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.sidecar import run_cli
from statestore_operator.validation import INVALID_METADATA, VALID, check
from statestore_sidecar import components
from statestore_sidecar.components import secret_env_var
from statestore_testing.ports import free_port

GOOD_KEY = "000102030405060708090a0b0c0d0e0f"


def manifest(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "store"},
        "spec": {
            "type": "state.sqlite",
            "version": "v1",
            "metadata": [{"name": "connectionString", "value": ":memory:"}, *items],
        },
    }


def ref(item: str, secret: str, key: str = "key") -> dict[str, Any]:
    return {"name": item, "secretKeyRef": {"name": secret, "key": key}}


# (metadata items, secret values by (secret, key), the item named, words of the message)
CASES: list[tuple[list[dict[str, Any]], dict[tuple[str, str], str], str, str]] = [
    (
        [ref("primaryEncryptionKey", "enc")],
        {("enc", "key"): "0a1b2c3d4e5f60718293"},
        "primaryEncryptionKey",
        "the key is 80 bits (20 hex digits); AES-GCM takes 128-, 192- or 256-bit keys",
    ),
    (
        [ref("primaryEncryptionKey", "enc")],
        {("enc", "key"): GOOD_KEY + "\n"},
        "primaryEncryptionKey",
        "characters other than 0-9 and a-f (a trailing newline or spaces?)",
    ),
    (
        [ref("primaryEncryptionKey", "new"), ref("secondaryEncryptionKey", "old")],
        {("new", "key"): GOOD_KEY, ("old", "key"): "0a1b2c3d4e5f6071829304"},
        "secondaryEncryptionKey",
        "the key is 88 bits",
    ),
    (
        [{"name": "primaryEncryptionKey", "value": GOOD_KEY}],
        {},
        "primaryEncryptionKey",
        "must be a secretKeyRef",
    ),
    (
        [ref("primaryEncryptionKey", "enc", "a"), ref("secondaryEncryptionKey", "enc", "b")],
        {("enc", "a"): GOOD_KEY, ("enc", "b"): GOOD_KEY},
        "secondaryEncryptionKey",
        "names the same secret as primaryEncryptionKey ('enc')",
    ),
    (
        [ref("secondaryEncryptionKey", "old")],
        {("old", "key"): GOOD_KEY},
        "secondaryEncryptionKey",
        "needs primaryEncryptionKey",
    ),
    (
        [ref("PrimaryEncryptionKey", "enc")],
        {("enc", "key"): GOOD_KEY},
        "PrimaryEncryptionKey",
        "write it as 'primaryEncryptionKey'",
    ),
]


@pytest.mark.parametrize(("items", "secrets", "field", "words"), CASES, ids=[c[3][:40] for c in CASES])
def test_server_and_operator_refuse_bad_keys(
    tmp_path: Path, items: list[dict[str, Any]], secrets: dict[tuple[str, str], str], field: str, words: str
) -> None:
    doc = manifest(items)
    path = tmp_path / "store.yaml"
    path.write_text(yaml.safe_dump(doc))
    env = {secret_env_var(name, key): value for (name, key), value in secrets.items()}

    (component,) = components.load([path]).stores
    with pytest.raises(components.ComponentError) as info:
        components.validate(component, components.metadata_values(component, {**os.environ, **env}))
    error = info.value
    assert (error.field, error.component) == (field, "store")
    assert words in str(error)

    done = run_cli(
        ["--resources-path", str(path), "--dapr-http-port", str(free_port()), "--metrics-port", "0"], env
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"statestore-sidecar: error: {error}"]
    for value in secrets.values():
        assert value.strip() not in done.stderr

    read = {
        i["name"]: secrets[(i["secretKeyRef"]["name"], i["secretKeyRef"]["key"])]
        for i in items
        if "secretKeyRef" in i
    }
    found = {name: {key} for name, key in secrets}
    outcome = check(doc, found, read)
    assert (outcome.ok, outcome.reason, outcome.field) == (False, INVALID_METADATA, field)
    assert outcome.message in str(error)


def test_good_keys_pass_both() -> None:
    doc = manifest([ref("primaryEncryptionKey", "new"), ref("secondaryEncryptionKey", "old")])
    outcome = check(
        doc,
        {"new": {"key"}, "old": {"key"}},
        {"primaryEncryptionKey": GOOD_KEY, "secondaryEncryptionKey": GOOD_KEY * 2},
    )
    assert (outcome.ok, outcome.reason) == (True, VALID)
    # Admission time: the Secret is not read, the naming rules still apply.
    assert check(doc, None).ok
    plain = manifest([{"name": "primaryEncryptionKey", "value": GOOD_KEY}])
    assert check(plain, None).field == "primaryEncryptionKey"
