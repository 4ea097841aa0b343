"""Hot reload: a running server picks up changed Component files (written as the kubelet updates a
mounted ConfigMap: a new directory and one atomic swap of the `..data` symlink), while another store
serves concurrent load without a single failed request."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from fixtures.operator_process import wait_for
from fixtures.sidecar import component_yaml, sidecar_process
from statestore_sidecar import reload
from statestore_testing.volumes import project


class Load(threading.Thread):
    """Saves and reads on one store until stopped; counts requests and failures."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.done = threading.Event()
        self.requests = 0
        self.failures: list[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.done.is_set():
                key = f"k{self.requests}"
                saved = client.post("/v1.0/state/steady", json=[{"key": key, "value": self.requests}])
                got = client.get(f"/v1.0/state/steady/{key}")
                self.requests += 2
                if saved.status_code != 204 or got.status_code != 200 or got.json() != self.requests - 2:
                    self.failures.append(f"{saved.status_code} {got.status_code} {got.text}")


def names(url: str) -> list[str]:
    body = httpx.get(f"{url}/v1.0/metadata").json()
    return sorted(c["name"] for c in body.get("components") or [])


def test_changed_components_take_effect_without_a_restart(tmp_path: Path) -> None:
    folder = tmp_path / "components"
    folder.mkdir()
    project(folder, {"steady.yaml": component_yaml("steady"), "moving.yaml": component_yaml("moving")})
    log = tmp_path / "server.log"
    args = ["--resources-path", str(folder), "--reload-seconds", "0.2", "--app-id", "app"]
    with sidecar_process(args, log=log) as server:
        url = server.url
        assert httpx.post(f"{url}/v1.0/state/steady", json=[{"key": "kept", "value": 1}]).status_code == 204
        assert httpx.post(f"{url}/v1.0/state/moving", json=[{"key": "m", "value": 1}]).status_code == 204
        load = Load(url)
        load.start()
        try:
            wait_for("load running", lambda: load.requests > 20)
            # Added and re-initialised (a new key prefix: the in-memory store starts empty).
            project(
                folder,
                {
                    "steady.yaml": component_yaml("steady"),
                    "moving.yaml": component_yaml("moving", keyPrefix="name"),
                    "added.yaml": component_yaml("added"),
                },
            )
            wait_for("the added store", lambda: names(url) == ["added", "moving", "steady"])
            assert httpx.get(f"{url}/v1.0/state/moving/m").status_code == 204
            assert httpx.post(f"{url}/v1.0/state/added", json=[{"key": "a", "value": 2}]).status_code == 204
            # A broken file: the reload fails and the previous configuration keeps serving.
            project(
                folder,
                {
                    "steady.yaml": component_yaml("steady"),
                    "moving.yaml": component_yaml("moving", ctype="state.nope"),
                },
            )
            wait_for("the failure logged", lambda: "reload failed" in log.read_text())
            assert names(url) == ["added", "moving", "steady"]
            assert httpx.get(f"{url}/v1.0/state/added/a").json() == 2
            # Removed.
            project(
                folder, {"steady.yaml": component_yaml("steady"), "moving.yaml": component_yaml("moving")}
            )
            wait_for("the removed store", lambda: names(url) == ["moving", "steady"])
            gone = httpx.get(f"{url}/v1.0/state/added/a")
            assert gone.status_code == 400 and gone.json()["errorCode"] == "ERR_STATE_STORE_NOT_FOUND"
            before = load.requests
            wait_for("more load after the changes", lambda: load.requests > before + 20)
        finally:
            load.done.set()
            load.join(30)
        assert load.failures == []
        # The untouched store kept its data through every reload.
        assert httpx.get(f"{url}/v1.0/state/steady/kept").json() == 1
    text = log.read_text()
    assert "added ['added'], removed [], re-initialised ['moving']" in text
    assert "added [], removed ['added'], re-initialised ['moving']" in text


def test_digest_sees_a_symlink_swap_and_ignores_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "components"
    project(folder, {"a.yaml": component_yaml("a")})
    first = reload.digest([str(folder)])
    (folder / "notes.txt").write_text("not a Component")
    assert reload.digest([str(folder)]) == first
    project(folder, {"a.yaml": component_yaml("a", keyPrefix="none")})  # same name, new contents
    assert reload.digest([str(folder)]) != first


def test_plan() -> None:
    change = reload.plan({"a": "1", "b": "1", "c": "1"}, {"a": "1", "b": "2", "d": "1"})
    assert (change.added, change.removed, change.changed) == (("d",), ("c",), ("b",))
    assert not reload.plan({"a": "1"}, {"a": "1"})
