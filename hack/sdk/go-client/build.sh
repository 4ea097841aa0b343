#!/usr/bin/env bash
# Build go-client (main.go here: state operations through the official Dapr Go SDK, for tests) into
#   $STATESTORE_CACHE_DIR/go-client/v$DAPR_GO_SDK_VERSION/go-client   (default: $HOME/.cache/statestore-operator)
# from a throwaway module that requires github.com/dapr/go-sdk at the pinned version. Like
# hack/daprd/build.sh: static, staged in the cache directory, checked (`go-client -version`), moved into
# place and stamped last (hack/lib/atomic_cache.sh); a warm run only checks.
#
# Usage: build.sh          build unless cached
#        build.sh --check  only check the cache; exit 1 if the binary is missing or stale
# Environment: DAPR_GO_SDK_VERSION (default in versions.env), STATESTORE_CACHE_DIR, GO_CLIENT_DIR.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../lib/version_check.sh
source "$HERE/../../lib/version_check.sh"
# shellcheck source=../../lib/atomic_cache.sh
source "$HERE/../../lib/atomic_cache.sh"
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
OUT_DIR=${GO_CLIENT_DIR:-$CACHE_ROOT/go-client/v$DAPR_GO_SDK_VERSION}
DEST=$OUT_DIR/go-client
SDK=github.com/dapr/go-sdk
export GOTOOLCHAIN=local CGO_ENABLED=0

log() { printf '[go-client/build.sh] %s\n' "$*" >&2; }
TMPDIRS=()
trap 'rm -rf "${TMPDIRS[@]}"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

command -v go >/dev/null || { log "go is required to build go-client"; exit 1; }
# stamp_for <folder>: what a binary built from <folder>/main.go is: the SDK's version, the toolchain and
# the source. Any change rebuilds.
GOVERSION=$(go env GOVERSION)
stamp_for() {
  local sum
  sum=$(sha256sum "$1/main.go")
  printf '%s\n' "$SDK@v$DAPR_GO_SDK_VERSION $GOVERSION sources:${sum%% *}"
}
STAMP=$(stamp_for "$HERE")
EXPECTED="$SDK v$DAPR_GO_SDK_VERSION"

mkdir -p "$OUT_DIR"
sweep_staging "$OUT_DIR"
if stamp_is "$DEST" "$STAMP" && check_version go-client "$EXPECTED" "$DEST" -version; then
  log "go-client cached: $DEST"
  exit 0
fi
if [ "$CHECK_ONLY" = 1 ]; then
  log "not cached: $DEST (run make go-client)"
  exit 1
fi

STAGE=$(staging_dir "$OUT_DIR")
TMPDIRS+=("$STAGE")
work=$(mktemp -d)
TMPDIRS+=("$work")
start=$(date +%s)
log "building go-client with $SDK v$DAPR_GO_SDK_VERSION in $work"
(
  cd "$work"
  export GOFLAGS=-mod=mod
  go mod init example.invalid/go-client >/dev/null 2>&1
  go mod edit -require="$SDK@v$DAPR_GO_SDK_VERSION"
  cp "$HERE/main.go" .
  stamp_for . >"$STAGE/stamp"  # of the source built, should it change meanwhile
  go mod tidy
  go build -trimpath -ldflags "-s -w" -o "$STAGE/go-client" .
)
check_version go-client "$EXPECTED" "$STAGE/go-client" -version
publish "$STAGE/go-client" "$DEST" "$(cat "$STAGE/stamp")"
log "built in $(( $(date +%s) - start ))s: $DEST"
