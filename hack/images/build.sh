#!/usr/bin/env bash
# Build the operator and state API images with podman (`make images`).
#
#   bash hack/images/build.sh                    # from a Debian base bootstrapped here (no registry needed)
#   IMAGE_BASE=docker.io/library/python:3.11.14-slim-bookworm bash hack/images/build.sh   # registry base
#
# Installs podman, runc and mmdebstrap from Debian's packages when missing. The bootstrapped base (a
# Debian bookworm root filesystem with python3) is cached as a tarball under
# $HOME/.cache/statestore-operator/images, staged and stamped as hack/lib/atomic_cache.sh does.
# Each image is labelled with a hash of its inputs and rebuilt only when that hash changes.
# Podman runs with the settings in containers.conf next to this script (runc, cgroupfs, no default
# ulimits: crun and raising ulimits fail on hosts like the CI machines); export
# CONTAINERS_CONF=hack/images/containers.conf to run the images by hand the same way.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

OPERATOR_IMAGE=${OPERATOR_IMAGE:-localhost/statestore-operator:dev}
SIDECAR_IMAGE=${SIDECAR_IMAGE:-localhost/statestore-sidecar:dev}
IMAGE_BASE=${IMAGE_BASE:-}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# python3 is 3.11 in bookworm; python3-venv brings ensurepip, which the build stage uses for pip.
BASE_PACKAGES=python3,python3-venv,ca-certificates
HOST_CA=${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}
CACHE=${STATESTORE_CACHE:-$HOME/.cache/statestore-operator}/images
export CONTAINERS_CONF=$ROOT/hack/images/containers.conf
# shellcheck source=../lib/atomic_cache.sh
source "$ROOT/hack/lib/atomic_cache.sh"
STAGES=()
trap 'rm -rf "${STAGES[@]}"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

log() { printf 'images: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

install_tools() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from Debian's packages"
    as_root apt-get update -qq
    # The set these builds and tests were proven with; podman's other recommends are not needed.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      podman buildah runc mmdebstrap uidmap slirp4netns fuse-overlayfs >/dev/null
  fi
}

# sha256 of a list of files' names and contents, in a stable order (no pipe a reader could close early).
hash_files() {
  local list
  list=$(mktemp)
  printf '%s\n' "$@" | LC_ALL=C sort >"$list"
  local sum
  sum=$(xargs -d '\n' sha256sum <"$list" | sha256sum)
  rm -f "$list"
  printf '%s\n' "${sum%% *}"
}

# How the base is bootstrapped; the cached tarball's name hashes these, so changing them rebuilds it.
# essential + merged-usr hook: no apt and no usrmerge (which would pull in perl) in the image.
MMDEBSTRAP_ARGS=(
  --variant=essential --include="$BASE_PACKAGES" --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
)
DEBIAN_SOURCES=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main")

# A Debian root filesystem with python3, as a tarball in the cache: sets BASE_TARBALL. It counts only
# with its stamp (hack/lib/atomic_cache.sh): a failed or killed bootstrap leaves nothing taken as good.
bootstrap_base() {
  local stamp tarball stage
  stamp=$(printf '%s\n' "$SUITE" "${MMDEBSTRAP_ARGS[@]}" "${DEBIAN_SOURCES[@]}" | sha256sum)
  stamp=${stamp%% *}
  tarball=$CACHE/debian-$SUITE-python3.tar
  if ! stamp_is "$tarball" "$stamp"; then
    sweep_staging "$CACHE"
    stage=$(staging_dir "$CACHE")
    STAGES+=("$stage")
    log "bootstrapping a Debian $SUITE base with $BASE_PACKAGES (about 2 minutes)"
    mmdebstrap --quiet "${MMDEBSTRAP_ARGS[@]}" "$SUITE" "$stage/base.tar" "${DEBIAN_SOURCES[@]}" >&2
    publish "$stage/base.tar" "$tarball" "$stamp"
  fi
  BASE_TARBALL=$tarball
}

label_of() {
  podman image inspect --format "{{ index .Labels \"$2\" }}" "$1" 2>/dev/null || true
}

# The bootstrapped base imported into podman under a tag naming its tarball's content: sets BASE.
local_base() {
  local tarball sum tag
  bootstrap_base
  tarball=$BASE_TARBALL
  sum=$(sha256sum "$tarball")
  tag=localhost/statestore-base:$SUITE-${sum:0:16}
  if ! podman image exists "$tag"; then
    log "importing $tarball as $tag"
    podman import --quiet \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["python3"]' \
      "$tarball" "$tag" >/dev/null
  fi
  BASE=$tag
}

build() {
  local name=$1 tag=$2 base=$3 inputs hash
  mapfile -t inputs < <(find pyproject.toml README.md .dockerignore "images/$name.Dockerfile" sidecar operator \
    -type f -not -path '*/__pycache__/*' -not -name '*.pyc' -not -path '*.egg-info/*')
  hash=$( (printf '%s\n' "$base" "$(podman image inspect --format '{{.Id}}' "$base" 2>/dev/null || true)"; hash_files "${inputs[@]}") | sha256sum)
  hash=${hash:0:32}
  if [ "$(label_of "$tag" statestore.inputs)" = "$hash" ]; then
    log "$tag is up to date"
    return
  fi
  log "building $tag from $base"
  local began=$SECONDS
  # pip in the build trusts this machine's CAs (a TLS-inspecting proxy's too) and uses its index.
  local pip=()
  if [ -s "$HOST_CA" ]; then
    pip+=(--volume "$HOST_CA:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
  fi
  if [ -n "${PIP_INDEX_URL:-}" ]; then
    pip+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
  fi
  local args=(--quiet --network=host --pull=never "${pip[@]}" --build-arg "BASE=$base" -f "images/$name.Dockerfile")
  # The build stage gets a tag too, so pruning keeps its layers (the dependencies' above all) as cache.
  podman build "${args[@]}" --label statestore.inputs=build --target build -t "localhost/statestore-build:$name" . >/dev/null
  podman build "${args[@]}" --label "statestore.inputs=$hash" -t "$tag" . >/dev/null
  log "built $tag in $((SECONDS - began)) s"
}

install_tools
if [ -n "$IMAGE_BASE" ]; then
  BASE=$IMAGE_BASE
  podman image exists "$BASE" || podman pull "$BASE" >/dev/null
else
  local_base
fi
build operator "$OPERATOR_IMAGE" "$BASE"
build sidecar "$SIDECAR_IMAGE" "$BASE"
# Replaced images and build stages of earlier builds (they carry the inputs label) are not kept.
podman image prune --force --filter label=statestore.inputs >/dev/null
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' --filter reference="$OPERATOR_IMAGE" \
  --filter reference="$SIDECAR_IMAGE" >&2
