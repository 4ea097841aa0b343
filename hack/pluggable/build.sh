#!/usr/bin/env bash
# Build contrib-pluggable (main.go here: a components-contrib state store served over Dapr's pluggable
# component protocol, for tests) from the Go module proxy into
#   $STATESTORE_CACHE_DIR/pluggable/v$DAPR_VERSION/contrib-pluggable
# A throwaway module requires github.com/dapr/dapr at $DAPR_VERSION (its Go stubs of
# dapr.proto.components.v1) with every replace line of dapr's go.mod, as hack/daprd/build.sh does. The
# binary is staged in the cache directory, checked, moved into place and stamped last
# (hack/lib/atomic_cache.sh); a warm run only checks.
#
# Usage: build.sh          build unless cached
#        build.sh --check  only check the cache; exit 1 if the binary is missing or stale
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
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
done < "$HERE/../daprd/versions.env"

CACHE_ROOT=${STATESTORE_CACHE_DIR:-$HOME/.cache/statestore-operator}
OUT_DIR=$CACHE_ROOT/pluggable/v$DAPR_VERSION
DEST=$OUT_DIR/contrib-pluggable
MODULE=github.com/dapr/dapr
export GOTOOLCHAIN=local CGO_ENABLED=0

log() { printf '[pluggable/build.sh] %s\n' "$*" >&2; }
TMPDIRS=()
trap 'rm -rf "${TMPDIRS[@]}"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

command -v go >/dev/null || { log "go is required to build contrib-pluggable"; exit 1; }
GOVERSION=$(go env GOVERSION)
stamp_for() {
  local sum
  sum=$(sha256sum "$1/main.go")
  printf '%s\n' "$MODULE@v$DAPR_VERSION $GOVERSION sources:${sum%% *}"
}
STAMP=$(stamp_for "$HERE")


mkdir -p "$OUT_DIR"
sweep_staging "$OUT_DIR"
if stamp_is "$DEST" "$STAMP" && [ -x "$DEST" ]; then
  log "contrib-pluggable cached: $DEST"
  exit 0
fi
if [ "$CHECK_ONLY" = 1 ]; then
  log "not cached: $DEST (run make pluggable)"
  exit 1
fi

STAGE=$(staging_dir "$OUT_DIR")
TMPDIRS+=("$STAGE")
work=$(mktemp -d)
TMPDIRS+=("$work")
start=$(date +%s)
log "building contrib-pluggable against dapr v$DAPR_VERSION in $work"
(
  cd "$work"
  export GOFLAGS=-mod=mod
  go mod init example.invalid/contrib-pluggable >/dev/null 2>&1
  info=$(go mod download -json "$MODULE@v$DAPR_VERSION")
  gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' <<<"$info")
  [ -f "$gomod" ] || { log "could not download $MODULE@v$DAPR_VERSION's go.mod"; exit 1; }
  go mod edit -go="$(sed -n 's/^go //p' "$gomod")"
  for r in $(replace_lines "$gomod"); do
    case $r in *=.*|*=/*) log "dapr's go.mod replaces with a local path: $r"; exit 1 ;; esac
    go mod edit -replace="$r"
  done
  go mod edit -require="$MODULE@v$DAPR_VERSION"
  cp "$HERE/main.go" .
  stamp_for . >"$STAGE/stamp"
  go mod tidy
  go build -trimpath -ldflags "-s -w" -o "$STAGE/contrib-pluggable" .
)
# Not `works | grep -q`: grep -q closing early would SIGPIPE the binary under pipefail; capture first.
usage=$("$STAGE/contrib-pluggable" -h 2>&1 || true)
case $usage in *-socket*) ;; *) log "the built binary does not run: $usage"; exit 1 ;; esac
publish "$STAGE/contrib-pluggable" "$DEST" "$(cat "$STAGE/stamp")"
log "built in $(( $(date +%s) - start ))s: $DEST"
