#!/usr/bin/env bash
# Build go-client (main.go here: state operations through the official Dapr Go SDK, for tests; load.go:
# a closed loop of them for the benchmark) into
#   $STATESTORE_CACHE_DIR/go-client/v$DAPR_GO_SDK_VERSION/go-client   (default: $HOME/.cache/statestore-operator)
# from a throwaway module that requires github.com/dapr/go-sdk at the pinned version: static, staged in
# the cache directory, checked (`go-client -version`), moved into place and stamped last
# (hack/lib/build_script.sh); a warm run only checks.
#
# Usage: build.sh          build unless cached
#        build.sh --check  only check the cache; exit 1 if the binary is missing or stale
# Environment: DAPR_GO_SDK_VERSION (default in versions.env), STATESTORE_CACHE_DIR, GO_CLIENT_DIR.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../lib/build_script.sh
source "$HERE/../../lib/build_script.sh"
build_script_start go-client/build.sh "$HERE/versions.env" "$@"
SDK=github.com/dapr/go-sdk

works() { check_version go-client "$SDK v$DAPR_GO_SDK_VERSION" "$1" -version; }
go_build_cached go-client "${GO_CLIENT_DIR:-$CACHE_ROOT/go-client/v$DAPR_GO_SDK_VERSION}" \
  "$SDK" "$DAPR_GO_SDK_VERSION" works main.go load.go
