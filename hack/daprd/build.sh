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
# and stamped last with what it was built from (hack/lib/build_script.sh); a warm run only checks.
#
# Usage: build.sh          build unless cached
#        build.sh --check  only check the cache; exit 1 if the binary is missing or stale
# Environment: DAPR_VERSION (default in versions.env), STATESTORE_CACHE_DIR, DAPRD_DIR (output folder).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/build_script.sh
source "$HERE/../lib/build_script.sh"
build_script_start daprd/build.sh "$HERE/versions.env" "$@"
MODULE=github.com/dapr/dapr

works() { check_version daprd "$DAPR_VERSION" "$1" --version; }
# The release ldflags of dapr's Makefile (REL_VERSION without the v, as its releases report it).
go_ldflags() {
  local ldf="-s -w -X $MODULE/pkg/buildinfo.version=$DAPR_VERSION -X $MODULE/pkg/buildinfo.gitversion=v$DAPR_VERSION"
  ldf+=" -X $MODULE/pkg/buildinfo.gitcommit=$MODULE_COMMIT -X github.com/dapr/kit/logger.DaprVersion=$DAPR_VERSION"
  printf '%s\n' "$ldf"
}
GO_UPSTREAM_REPLACES=1 go_build_cached daprd "${DAPRD_DIR:-$CACHE_ROOT/daprd/v$DAPR_VERSION}" \
  "$MODULE" "$DAPR_VERSION" works main.go components.go
