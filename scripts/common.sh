# Helpers shared by the scripts in this folder; sourced, never run on its own.
# shellcheck shell=bash

# The script's leading comment block is its usage text.
usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit 2
}

fail() { echo "error: $*" >&2; exit 2; }

# DATA_ARGS: (--data-path ABSOLUTE_PATH), or () for "none" (the bundled digits).
set_data_args() {
    DATA_ARGS=()
    [ "$1" = "none" ] && return 0
    local path
    path=$(realpath -m "$1")
    [ -d "$path" ] || fail "DATA_PATH $path is not a folder"
    DATA_ARGS=(--data-path "$path")
}

# A packaged recipe name as it is, or a YAML file as its checked absolute path.
resolve_config() {
    case "$1" in
        *.yaml|*.yml)
            local path
            path=$(realpath -m "$1")
            [ -f "$path" ] || fail "CONFIG $path does not exist"
            echo "$path" ;;
        *) echo "$1" ;;
    esac
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# POSITIONAL: the arguments before "--" (no options allowed); PASSED: those after it.
# Usage text on -h/--help, an error on any other option.
split_args() {
    POSITIONAL=() PASSED=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        case "$1" in -h|--help) usage ;; -*) fail "unknown option $1 (see --help)" ;; esac
        POSITIONAL+=("$1"); shift
    done
    [ "${1:-}" = "--" ] && shift
    PASSED=("$@")
}
