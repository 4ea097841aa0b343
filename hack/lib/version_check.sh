# Version checks for the set-up scripts (sourced), safe under `set -euo pipefail`.
#
# A pipe into a reader that stops early (`cmd --version | head -1`, `| grep -q`, `| sed 1q`) fails at
# random under pipefail: once the reader has exited, the writer's next write kills it with SIGPIPE
# (status 141), and the pipeline reports that although nothing went wrong. So these functions never
# pipe: they read everything the command prints, then look at it.

# first_line <command...>: print the first line the command writes (stdout and stderr together),
# after reading all of it. Returns the command's status.
first_line() {
  local out status=0
  out=$(timeout "${VERSION_CHECK_TIMEOUT:-60}" "$@" 2>&1) || status=$?
  printf '%s\n' "${out%%$'\n'*}"
  return "$status"
}

# check_version <label> <expected text> <command...>: succeed when the command (a version query)
# exits 0 and its output contains <expected text>. Logs `<label>: <first line>` to stderr, or why not.
check_version() {
  local label=$1 expected=$2 out status=0
  shift 2
  out=$(timeout "${VERSION_CHECK_TIMEOUT:-60}" "$@" 2>&1) || status=$?
  if [ "$status" -ne 0 ]; then
    printf '%s: `%s` failed (exit %d): %s\n' "$label" "$*" "$status" "${out%%$'\n'*}" >&2
    return 1
  fi
  case $out in
    *"$expected"*)
      printf '%s: %s\n' "$label" "${out%%$'\n'*}" >&2
      return 0
      ;;
  esac
  printf '%s: `%s` does not report %s: %s\n' "$label" "$*" "$expected" "${out%%$'\n'*}" >&2
  return 1
}
