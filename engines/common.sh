# Sourced by engines/trtexec.sh and engines/polygraphy_compare.sh: the folders, the
# two profiles' sizes, DRY_RUN printing, and `mhc-export check` from this checkout.
# shellcheck shell=bash
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
decode_max="${DECODE_MAX_TOKENS:-16}"
prefill_max="${PREFILL_MAX_TOKENS:-4096}"
pypath="$root${PYTHONPATH:+:$PYTHONPATH}"

run() {  # print a command, and run it unless DRY_RUN is set
  echo "+ $*"
  [[ -n "${DRY_RUN:-}" ]] || "$@"
}

check() {  # mhc-export check ARGS...: the mhc node contract (and plugin layers, when asked)
  run env PYTHONPATH="$pypath" "${PYTHON:-python3}" -m mhc_export check "$@"
}
