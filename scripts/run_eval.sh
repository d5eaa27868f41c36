#!/usr/bin/env bash
# Usage: bash scripts/run_eval.sh MODEL_FILE [DATA_PATH] [-- EVAL_FLAGS...]
#
# Evaluate a checkpoint or an exported MINDIR on every validation sample.
#
# MODEL_FILE: .ckpt or .mindir (with its sidecar JSON). DATA_PATH: dataset folder, or "none"
# (default) for the bundled digits. Results: one line on stdout and a JSON next to MODEL_FILE.
set -euo pipefail

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit 2
}

positional=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    case "$1" in -h|--help) usage ;; -*) echo "error: unknown option $1" >&2; usage ;; esac
    positional+=("$1"); shift
done
[ "${1:-}" = "--" ] && shift
[ ${#positional[@]} -ge 1 ] && [ ${#positional[@]} -le 2 ] || usage
model_file=$(realpath -m "${positional[0]}")
data_path=${positional[1]:-none}
root=$(cd "$(dirname "$0")/.." && pwd)

[ -f "$model_file" ] || { echo "error: MODEL_FILE $model_file does not exist" >&2; exit 2; }
case "$model_file" in
    *.ckpt) source_args=(--ckpt "$model_file") ;;
    *.mindir) source_args=(--mindir "$model_file") ;;
    *) echo "error: MODEL_FILE must end in .ckpt or .mindir" >&2; exit 2 ;;
esac
data_args=()
if [ "$data_path" != "none" ]; then
    data_path=$(realpath -m "$data_path")
    [ -d "$data_path" ] || { echo "error: DATA_PATH $data_path is not a folder" >&2; exit 2; }
    data_args=(--data-path "$data_path")
fi
python "$root/eval.py" "${source_args[@]}" "${data_args[@]}" "$@"
