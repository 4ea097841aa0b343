#!/usr/bin/env bash
# Regenerate the Python messages of Dapr's pluggable component protocol (dapr.proto.components.v1:
# common.proto and state.proto of the github.com/dapr/dapr module at $DAPR_VERSION, from the Go module
# cache) into sidecar/statestore_sidecar/stores/pluggable/proto/, with grpcio-tools (`pip install
# grpcio-tools`). The files are committed; tests/pluggable checks they are what this script writes.
#
# The `dapr` Python package owns the `dapr.proto` import path, so the files are compiled under this
# package's path instead (their proto package, and so the gRPC service names, are unchanged): state.proto's
# import of common.proto is rewritten to match. Only messages (and their .pyi) are generated: the client
# and server build their typed method handlers themselves.
#
# Usage: protos.sh [OUTPUT_DIR]   (default: the package folder above)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
while IFS='=' read -r key value; do
  case $key in ''|'#'*) continue ;; esac
  [ -n "${!key:-}" ] || declare "$key=$value"
done < "$HERE/../daprd/versions.env"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
OUT=${1:-$ROOT/sidecar/statestore_sidecar/stores/pluggable/proto}
PKG=statestore_sidecar/stores/pluggable/proto

info=$(GOFLAGS=-mod=mod go mod download -json "github.com/dapr/dapr@v$DAPR_VERSION")
dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$info")
src=$dir/dapr/proto/components/v1
[ -f "$src/state.proto" ] || { echo "no $src/state.proto" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/$PKG" "$work/out"
cp "$src/common.proto" "$work/$PKG/common.proto"
sed "s|import \"dapr/proto/components/v1/common.proto\";|import \"$PKG/common.proto\";|" \
  "$src/state.proto" >"$work/$PKG/state.proto"
"$PYTHON" -m grpc_tools.protoc -I "$work" --python_out="$work/out" --pyi_out="$work/out" \
  "$work/$PKG/common.proto" "$work/$PKG/state.proto"
mkdir -p "$OUT"
for f in common_pb2.py common_pb2.pyi state_pb2.py state_pb2.pyi; do
  cp "$work/out/$PKG/$f" "$OUT/$f"
done
