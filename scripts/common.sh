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
    path=$(realpath -m -- "$1")
    [ -d "$path" ] || fail "DATA_PATH $path is not a folder"
    DATA_ARGS=(--data-path "$path")
}

# A packaged recipe name as it is, or a YAML file as its checked absolute path.
resolve_config() {
    case "$1" in
        *.yaml|*.yml)
            local path
            path=$(realpath -m -- "$1")
            [ -f "$path" ] || fail "CONFIG $path does not exist"
            echo "$path" ;;
        *) echo "$1" ;;
    esac
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Opens FILE for a new log on descriptor LOG_FD, never through a symbolic link: a link there is
# refused, an earlier log removed, and the file created exclusively (noclobber: O_EXCL), so a
# link planted meanwhile makes the open fail instead of writing into the link's target.
open_log() {
    [ -L "$1" ] && fail "log $1 is a symbolic link: a log is never written through a link; remove it"
    [ ! -e "$1" ] || [ -f "$1" ] || fail "log $1 is not a regular file; remove it"
    rm -f -- "$1"
    local restore=+C
    [[ $- == *C* ]] && restore=-C
    set -C
    { exec {LOG_FD}>"$1"; } 2>/dev/null || fail "cannot create log $1 (did something appear there?)"
    set "$restore"
}

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
