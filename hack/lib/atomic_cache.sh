# An all-or-nothing file cache for the set-up scripts (sourced).
#
# A cached file <dest> counts only with its completion stamp <dest>.from, whose content says what was
# built (module@version, flags, a hash of the sources). Builds write into a staging directory inside the
# cache directory (same filesystem, so moving a file into place is an atomic rename), the stamp is
# removed before and written (atomically) after the move, and staging directories of runs that died
# are swept. So an interrupted or failed build never leaves a file that a later run takes as good.

# stamp_is <dest> <stamp>: <dest> exists and was completed as <stamp>.
stamp_is() {
  [ -e "$1" ] && [ -f "$1.from" ] || return 1
  local have
  have=$(cat "$1.from")
  [ "$have" = "$2" ]
}

# write_stamp <dest> <stamp>: record <dest> as complete (atomic: a temporary file renamed).
write_stamp() {
  printf '%s\n' "$2" >"$1.from.tmp.$$"
  mv -f "$1.from.tmp.$$" "$1.from"
}

# publish <staged file> <dest> <stamp>: move a finished file into the cache, its stamp last.
publish() {
  rm -f "$2.from"
  mv -f "$1" "$2"
  write_stamp "$2" "$3"
}

# staging_dir <cache dir>: print a new staging directory inside <cache dir>, named for this process.
# The caller removes it (an EXIT trap); sweep_staging removes those of processes that are gone.
staging_dir() {
  mkdir -p "$1"
  mktemp -d "$1/.staging.$$.XXXXXX"
}

# sweep_staging <cache dir>: remove staging directories (and stamp temporaries) left by dead runs.
sweep_staging() {
  local path name pid
  for path in "$1"/.staging.* "$1"/*.from.tmp.*; do
    [ -e "$path" ] || continue
    name=${path##*/}
    case $name in
      .staging.*) pid=${name#.staging.}; pid=${pid%%.*} ;;
      *) pid=${name##*.from.tmp.} ;;
    esac
    case $pid in '' | *[!0-9]*) continue ;; esac
    kill -0 "$pid" 2>/dev/null || rm -rf "$path"
  done
}
