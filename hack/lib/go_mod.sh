# Reading a Go module's go.mod for the set-up scripts (sourced).

# replace_lines <go.mod>: each active `replace` directive as OLD[@V]=NEW[@V], the form of
# `go mod edit -replace` (both the block and the one-line form; comments skipped).
replace_lines() {
  awk '
    function at(s,   f, n) { n = split(s, f, /[ \t]+/); return n > 1 ? f[1] "@" f[2] : f[1] }
    function trim(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); return s }
    { sub(/\/\/.*/, "") }
    /^replace[ \t]*\([ \t]*$/ { block = 1; next }
    block && /^[ \t]*\)/ { block = 0; next }
    block || /^replace[ \t]/ {
      line = $0; sub(/^replace[ \t]+/, "", line)
      if (split(line, side, /=>/) != 2) next
      print at(trim(side[1])) "=" at(trim(side[2]))
    }
  ' "$1"
}

# require_as_upstream <module> <version>: in the current (throwaway) module, the go directive and every
# replace line of <module>@v<version>'s own go.mod, which `go install` refuses but a main module may
# carry; sets MODULE_COMMIT to the version's commit. Local-path replacements cannot be copied: an error.
require_as_upstream() {
  local module=$1 version=$2 info gomod r n=0
  info=$(go mod download -json "$module@v$version")
  gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' <<<"$info")
  MODULE_COMMIT=$(sed -n 's/^[[:space:]]*"Hash": "\(.*\)",*$/\1/p' <<<"$info")
  [ -f "$gomod" ] || { log "could not download $module@v$version's go.mod"; exit 1; }
  go mod edit -go="$(sed -n 's/^go //p' "$gomod")"
  for r in $(replace_lines "$gomod"); do
    case $r in *=.*|*=/*) log "$module's go.mod replaces with a local path: $r"; exit 1 ;; esac
    go mod edit -replace="$r"
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || { log "no replace lines found in $gomod"; exit 1; }
  log "copied $n replace lines from $module's go.mod"
}
