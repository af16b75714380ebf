# shellcheck shell=bash
# Helpers sourced by the launch scripts (not run on its own).

# The script's header comment (line 2 up to `set -euo pipefail`), without the leading '# '.
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

die() {
  echo "error: $*" >&2
  exit 2
}

# Fails in one line naming every variable in "$@" that is unset or empty.
require_vars() {
  local missing=() var
  for var in "$@"; do
    [[ -n "${!var:-}" ]] || missing+=("$var")
  done
  ((${#missing[@]} == 0)) || die "set ${missing[*]} (see the top of $0)"
}

# argv as one shell line that re-parses to the same words (Python's shlex.quote, word by word).
quote_cmd() {
  local out=() word
  for word in "$@"; do
    if [[ -n "$word" && "$word" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      out+=("$word")
    else
      out+=("'${word//\'/\'\\\'\'}'")
    fi
  done
  echo "${out[*]}"
}

# Runs a command, or with DRY_RUN=1 prints it (quoted, one line) instead.
run() {
  if ((DRY_RUN)); then
    quote_cmd "$@"
  else
    "$@"
  fi
}
