"""statestore-sidecar, as users run it, serving a Dapr pluggable state store found in its sockets
folder: two components on one socket kept apart, the component's features as capabilities, its ETag
errors as ours, the socket going away and coming back (health 500, then 204, no restart), and a
Component naming its component container (`dapr.io/component-container`) waiting for a socket that
is not there yet."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from fixtures.pluggable import ContribPluggable
from fixtures.sidecar import sidecar, sidecar_process
from statestore_testing.waiting import wait_for

pytestmark = pytest.mark.backends


def write_components(
    folder: Path, *names: str, store_type: str = "state.memstore", annotations: dict[str, str] | None = None
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        manifest = {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": name, **({"annotations": annotations} if annotations else {})},
            "spec": {"type": store_type, "version": "v1", "metadata": [{"name": "anything", "value": "x"}]},
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(manifest))


def test_two_components_on_one_socket(tmp_path: Path) -> None:
    sockets = tmp_path / "plug"
    write_components(tmp_path / "resources", "one", "two")
    env = {"DAPR_COMPONENTS_SOCKETS_FOLDER": str(sockets)}
    args = ["--resources-path", str(tmp_path / "resources"), "--app-id", "app"]
    with ContribPluggable(sockets / "memstore.sock"), sidecar(args, env) as url:
        meta = httpx.get(f"{url}/v1.0/metadata").json()
        caps = {c["name"]: (c["type"], c["capabilities"]) for c in meta["components"]}
        expected = ("state.memstore", ["ETAG", "TRANSACTIONAL", "TTL", "ACTOR"])
        assert caps == {"one": expected, "two": expected}
        key = f"k-{uuid.uuid4().hex}"
        assert httpx.post(f"{url}/v1.0/state/one", json=[{"key": key, "value": 1}]).status_code == 204
        assert httpx.get(f"{url}/v1.0/state/two/{key}").status_code == 204
        got = httpx.get(f"{url}/v1.0/state/one/{key}")
        assert got.json() == 1
        stale = httpx.post(f"{url}/v1.0/state/one", json=[{"key": key, "value": 2, "etag": "nope"}])
        assert stale.status_code == 409 and stale.json()["errorCode"] == "ERR_STATE_SAVE"


def test_a_type_with_no_socket_is_refused_at_start(tmp_path: Path) -> None:
    from fixtures.sidecar import run_cli

    write_components(tmp_path / "resources", "one", store_type="state.nosocket")
    done = run_cli(
        ["--resources-path", str(tmp_path / "resources"), "--app-id", "app", "--dapr-http-port", "0"],
        env={"DAPR_COMPONENTS_SOCKETS_FOLDER": str(tmp_path / "empty")},
    )
    assert done.returncode != 0
    assert "unknown state store type 'state.nosocket'" in done.stderr
    assert "pluggable component's socket in" in done.stderr


def test_the_socket_going_away_and_coming_back(tmp_path: Path) -> None:
    sockets = tmp_path / "plug"
    write_components(tmp_path / "resources", "one")
    env = {"DAPR_COMPONENTS_SOCKETS_FOLDER": str(sockets)}
    args = ["--resources-path", str(tmp_path / "resources"), "--app-id", "app"]
    plug = ContribPluggable(sockets / "memstore.sock")
    plug.start()
    try:
        with sidecar_process(args, env) as server:
            url = server.url
            assert httpx.post(f"{url}/v1.0/state/one", json=[{"key": "a", "value": 1}]).status_code == 204
            plug.stop()
            assert not plug.socket.exists()
            wait_for("health 500", lambda: httpx.get(f"{url}/v1.0/healthz").status_code == 500, timeout=60)
            failed = httpx.get(f"{url}/v1.0/state/one/a")
            assert failed.status_code == 500
            plug.start()
            wait_for("health 204", lambda: httpx.get(f"{url}/v1.0/healthz").status_code == 204, timeout=60)
            # The same server (no restart) serves the new component process, initialised again.
            assert httpx.post(f"{url}/v1.0/state/one", json=[{"key": "b", "value": 2}]).status_code == 204
            assert httpx.get(f"{url}/v1.0/state/one/b").json() == 2
    finally:
        plug.stop()


def test_a_declared_component_waits_for_its_socket(tmp_path: Path) -> None:
    """In a pod, the component container may start after ours: the server stays up and unready, and
    serves once the socket appears."""
    sockets = tmp_path / "plug"
    container = '{"name": "memstore", "image": "example.test/memstore:1"}'
    annotations = {"dapr.io/component-container": container}
    write_components(tmp_path / "resources", "one", annotations=annotations)
    env = {"DAPR_COMPONENTS_SOCKETS_FOLDER": str(sockets)}
    args = ["--resources-path", str(tmp_path / "resources"), "--app-id", "app", "--log-level", "debug"]
    plug = ContribPluggable(sockets / "memstore.sock")
    try:
        log = tmp_path / "sidecar.log"
        with sidecar_process(args, env, wait_ready=False, log=log) as server:
            url = server.url
            assert httpx.get(f"{url}/v1.0/healthz").status_code == 500
            early = httpx.get(f"{url}/v1.0/state/one/a")
            assert early.status_code == 500, early.text
            assert "no socket for pluggable component state.memstore" in early.text

            def looks() -> list[str]:
                return [line for line in log.read_text().splitlines() if "init failed, retrying" in line]

            wait_for("the socket looked for three times", lambda: len(looks()) >= 3, timeout=60)
            plug.start()
            wait_for("health 204", lambda: httpx.get(f"{url}/v1.0/healthz").status_code == 204, timeout=90)
            assert httpx.post(f"{url}/v1.0/state/one", json=[{"key": "a", "value": 1}]).status_code == 204
            assert httpx.get(f"{url}/v1.0/state/one/a").json() == 1
            meta = httpx.get(f"{url}/v1.0/metadata").json()
            assert [(c["name"], c["type"]) for c in meta["components"]] == [("one", "state.memstore")]
        # Looked for again and again (debug), but said once (warning).
        warned = [line for line in looks() if "WARNING" in line or '"warning"' in line.lower()]
        assert len(warned) == 1 and "no socket for pluggable component state.memstore" in warned[0], looks()
    finally:
        plug.stop()


def test_an_undeclared_type_without_socket_is_still_refused(tmp_path: Path) -> None:
    from fixtures.sidecar import run_cli

    # An empty annotation declares nothing.
    write_components(
        tmp_path / "resources",
        "one",
        store_type="state.nosocket",
        annotations={"dapr.io/component-container": ""},
    )
    done = run_cli(
        ["--resources-path", str(tmp_path / "resources"), "--app-id", "app", "--dapr-http-port", "0"],
        env={"DAPR_COMPONENTS_SOCKETS_FOLDER": str(tmp_path / "empty")},
    )
    assert done.returncode != 0
    assert "unknown state store type 'state.nosocket'" in done.stderr
