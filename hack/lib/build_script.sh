# The common start of the set-up build scripts (sourced), and the cached build of a Go binary from a
# throwaway module. Sourcing it also brings version_check.sh, atomic_cache.sh and go_mod.sh.
LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=version_check.sh
source "$LIB_DIR/version_check.sh"
# shellcheck source=atomic_cache.sh
source "$LIB_DIR/atomic_cache.sh"
# shellcheck source=go_mod.sh
source "$LIB_DIR/go_mod.sh"

# build_script_start <label> <versions.env> <the script's arguments...>: sets
#   CHECK_ONLY  1 with --check (only check the cache), else 0; any other argument is a usage error
#   the pinned KEY=VALUE lines of <versions.env>, unless the environment already sets KEY
#   CACHE_ROOT  $STATESTORE_CACHE_DIR, default $HOME/.cache/statestore-operator
#   TMPDIRS     folders removed on exit, also on failure or a signal (append right after creating one)
# and exports a Go that never downloads another toolchain and builds static binaries. log() writes
# `[<label>] message` to stderr.
build_script_start() {
  LOG_LABEL=$1
  local versions=$2 key value
  shift 2
  CHECK_ONLY=0
  case ${1:-} in
    --check) CHECK_ONLY=1 ;;
    '') ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
  esac
  while IFS='=' read -r key value; do
    case $key in ''|'#'*) continue ;; esac
    [ -n "${!key:-}" ] || declare -g "$key=$value"
  done <"$versions"
  CACHE_ROOT=${STATESTORE_CACHE_DIR:-$HOME/.cache/statestore-operator}
  export GOTOOLCHAIN=local CGO_ENABLED=0
  TMPDIRS=()
  trap 'rm -rf "${TMPDIRS[@]}"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM HUP
}

log() { printf '[%s] %s\n' "$LOG_LABEL" "$*" >&2; }

# go_stamp <module@version> <folder> <source files...>: what a binary built from those files in
# <folder> is: the module it requires, the toolchain and the sources (one file: its sum; several: the
# sum of their sums). Any change rebuilds.
go_stamp() {
  local what=$1 folder=$2 sum
  shift 2
  if [ "$#" -eq 1 ]; then
    sum=$(sha256sum "$folder/$1")
  else
    sum=$(cd "$folder" && sha256sum "$@")
    sum=$(sha256sum <<<"$sum")
  fi
  printf '%s\n' "$what $GOVERSION sources:${sum%% *}"
}

# go_ldflags: the -ldflags of go_build_cached; a script may define its own (it runs in the module
# folder, after the requirements are set, so it may read MODULE_COMMIT).
go_ldflags() { printf '%s\n' "-s -w"; }

# go_build_cached <name> <out dir> <module> <version> <works> <source files...>
# <out dir>/<name>, unless cached: the main package of <source files> (in $HERE) built, static and
# -trimpath, in a throwaway module that requires <module>@v<version>, with that module's own go
# directive and replace lines too when GO_UPSTREAM_REPLACES=1 (go_mod.sh). Cached means stamped with
# go_stamp and `<works> <binary>` succeeding; a new build passes the same check in the staging
# folder before it is moved into place and stamped (atomic_cache.sh). With CHECK_ONLY=1 nothing is
# built and a missing or stale binary returns 1.
go_build_cached() {
  local name=$1 out=$2 module=$3 version=$4 works=$5
  shift 5
  local dest=$out/$name stamp stage work start
  command -v go >/dev/null || { log "go is required to build $name"; exit 1; }
  GOVERSION=$(go env GOVERSION)
  stamp=$(go_stamp "$module@v$version" "$HERE" "$@")
  mkdir -p "$out"
  sweep_staging "$out"
  if stamp_is "$dest" "$stamp" && "$works" "$dest"; then
    log "$name cached: $dest"
    return 0
  fi
  if [ "$CHECK_ONLY" = 1 ]; then
    log "not cached: $dest (run make ${LOG_LABEL%/build.sh})"
    return 1
  fi

  stage=$(staging_dir "$out")
  TMPDIRS+=("$stage")
  work=$(mktemp -d)
  TMPDIRS+=("$work")
  start=$(date +%s)
  log "building $name with $module v$version in $work"
  (
    cd "$work"
    export GOFLAGS=-mod=mod
    go mod init "example.invalid/$name" >/dev/null 2>&1
    if [ "${GO_UPSTREAM_REPLACES:-0}" = 1 ]; then
      require_as_upstream "$module" "$version"
    fi
    go mod edit -require="$module@v$version"
    local file
    for file in "$@"; do cp "$HERE/$file" .; done
    go_stamp "$module@v$version" . "$@" >"$stage/stamp" # of the sources built, should they change meanwhile
    go mod tidy
    go build -trimpath -ldflags "$(go_ldflags)" -o "$stage/$name" .
  )
  "$works" "$stage/$name"
  publish "$stage/$name" "$dest" "$(cat "$stage/stamp")"
  log "built in $(($(date +%s) - start))s: $dest"
}
