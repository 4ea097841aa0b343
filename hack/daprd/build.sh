#!/usr/bin/env bash
# Build a lean daprd (the Dapr sidecar, the reference the tests hold statestore-sidecar to) from the Go
# module proxy, with only the components of hack/daprd/components.go, into
#   $STATESTORE_CACHE_DIR/daprd/v$DAPR_VERSION/daprd   (default cache: $HOME/.cache/statestore-operator)
#
# `go install github.com/dapr/dapr/cmd/daprd@v...` is refused (dapr's go.mod has replace lines), and
# upstream's entry point registers every component. So: a throwaway module that requires dapr at
# $DAPR_VERSION, carries every replace line of dapr's own go.mod (read at build time), and builds
# main.go + components.go from this folder, static (CGO_ENABLED=0), with the release ldflags of dapr's
# Makefile. The binary is staged in the cache directory, checked (`daprd --version`), moved into place,
# and stamped last with what it was built from (hack/lib/atomic_cache.sh); a warm run only checks.
#
# Usage: build.sh          build unless cached
#        build.sh --check  only check the cache; exit 1 if the binary is missing or stale
# Environment: DAPR_VERSION (default in versions.env), STATESTORE_CACHE_DIR, DAPRD_DIR (output folder).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/version_check.sh
source "$HERE/../lib/version_check.sh"
# shellcheck source=../lib/atomic_cache.sh
source "$HERE/../lib/atomic_cache.sh"
# shellcheck source=../lib/go_mod.sh
source "$HERE/../lib/go_mod.sh"
CHECK_ONLY=0
case ${1:-} in
  --check) CHECK_ONLY=1 ;;
  '') ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
while IFS='=' read -r key value; do
  case $key in ''|'#'*) continue ;; esac
  [ -n "${!key:-}" ] || declare "$key=$value"
done < "$HERE/versions.env"

CACHE_ROOT=${STATESTORE_CACHE_DIR:-$HOME/.cache/statestore-operator}
DAPRD_DIR=${DAPRD_DIR:-$CACHE_ROOT/daprd/v$DAPR_VERSION}
DEST=$DAPRD_DIR/daprd
MODULE=github.com/dapr/dapr
export GOTOOLCHAIN=local CGO_ENABLED=0

log() { printf '[daprd/build.sh] %s\n' "$*" >&2; }
TMPDIRS=()
trap 'rm -rf "${TMPDIRS[@]}"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

command -v go >/dev/null || { log "go is required to build daprd"; exit 1; }
# stamp_for <folder>: what a binary built from the sources in <folder> is: dapr's version, the
# toolchain and the sources. Any change rebuilds.
GOVERSION=$(go env GOVERSION)
stamp_for() {
  local sums
  sums=$(cd "$1" && sha256sum main.go components.go)
  sums=$(sha256sum <<<"$sums")
  printf '%s\n' "$MODULE@v$DAPR_VERSION $GOVERSION sources:${sums%% *}"
}
STAMP=$(stamp_for "$HERE")

mkdir -p "$DAPRD_DIR"
sweep_staging "$DAPRD_DIR"
if stamp_is "$DEST" "$STAMP" && check_version daprd "$DAPR_VERSION" "$DEST" --version; then
  log "daprd cached: $DEST"
  exit 0
fi
if [ "$CHECK_ONLY" = 1 ]; then
  log "not cached: $DEST (run make daprd)"
  exit 1
fi

STAGE=$(staging_dir "$DAPRD_DIR")
TMPDIRS+=("$STAGE")
work=$(mktemp -d)
TMPDIRS+=("$work")
start=$(date +%s)
log "building daprd v$DAPR_VERSION in $work"
(
  cd "$work"
  export GOFLAGS=-mod=mod
  go mod init example.invalid/daprd >/dev/null 2>&1
  info=$(go mod download -json "$MODULE@v$DAPR_VERSION")
  gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' <<<"$info")
  commit=$(sed -n 's/^[[:space:]]*"Hash": "\(.*\)",*$/\1/p' <<<"$info")
  [ -f "$gomod" ] || { log "could not download $MODULE@v$DAPR_VERSION's go.mod"; exit 1; }
  go mod edit -go="$(sed -n 's/^go //p' "$gomod")"
  replaces=$(replace_lines "$gomod")
  n=0
  for r in $replaces; do
    case $r in *=.*|*=/*) log "dapr's go.mod replaces with a local path: $r"; exit 1 ;; esac
    go mod edit -replace="$r"
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || { log "no replace lines found in $gomod"; exit 1; }
  log "copied $n replace lines from dapr's go.mod"
  go mod edit -require="$MODULE@v$DAPR_VERSION"
  cp "$HERE/main.go" "$HERE/components.go" .
  stamp_for . >"$STAGE/stamp"  # of the sources built, should they change meanwhile
  go mod tidy
  # The release ldflags of dapr's Makefile (REL_VERSION without the v, as its releases report it).
  ldf="-s -w -X $MODULE/pkg/buildinfo.version=$DAPR_VERSION -X $MODULE/pkg/buildinfo.gitversion=v$DAPR_VERSION"
  ldf+=" -X $MODULE/pkg/buildinfo.gitcommit=$commit -X github.com/dapr/kit/logger.DaprVersion=$DAPR_VERSION"
  go build -trimpath -ldflags "$ldf" -o "$STAGE/daprd" .
)
check_version daprd "$DAPR_VERSION" "$STAGE/daprd" --version
publish "$STAGE/daprd" "$DEST" "$(cat "$STAGE/stamp")"
log "built in $(( $(date +%s) - start ))s: $DEST"
