#!/usr/bin/env bash
# Build contrib-pluggable (main.go here: a components-contrib state store served over Dapr's pluggable
# component protocol, for tests) from the Go module proxy into
#   $STATESTORE_CACHE_DIR/pluggable/v$DAPR_VERSION/contrib-pluggable
# A throwaway module requires github.com/dapr/dapr at $DAPR_VERSION (its Go stubs of
# dapr.proto.components.v1) with every replace line of dapr's go.mod, as hack/daprd/build.sh does. The
# binary is staged in the cache directory, checked, moved into place and stamped last
# (hack/lib/build_script.sh); a warm run only checks.
#
# Usage: build.sh          build unless cached
#        build.sh --check  only check the cache; exit 1 if the binary is missing or stale
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/build_script.sh
source "$HERE/../lib/build_script.sh"
build_script_start pluggable/build.sh "$HERE/../daprd/versions.env" "$@"

# Runs: its usage names -socket. Not `| grep -q`, which would SIGPIPE the binary under pipefail.
works() {
  local usage
  usage=$("$1" -h 2>&1 || true)
  case $usage in *-socket*) ;; *) log "$1 does not run: $usage"; return 1 ;; esac
}
GO_UPSTREAM_REPLACES=1 go_build_cached contrib-pluggable "$CACHE_ROOT/pluggable/v$DAPR_VERSION" \
  github.com/dapr/dapr "$DAPR_VERSION" works main.go
