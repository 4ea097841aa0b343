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
