#!/usr/bin/env bash
# Usage: bash scripts/run_standalone_train.sh [DATA_PATH] [CONFIG] [-- TRAIN_FLAGS...]
#
# Training on one device.
#
# DATA_PATH: dataset folder, or "none" (default) for the bundled digits. CONFIG: packaged recipe
# or YAML (default digits_cpu). DEVICE_ID (environment) picks the Ascend/GPU device. The log
# goes to ./logs/standalone_train/train.log as well as the terminal.
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
[ ${#positional[@]} -le 2 ] || usage
data_path=${positional[0]:-none}
config=${positional[1]:-digits_cpu}
root=$(cd "$(dirname "$0")/.." && pwd)

data_args=()
if [ "$data_path" != "none" ]; then
    data_path=$(realpath -m "$data_path")
    [ -d "$data_path" ] || { echo "error: DATA_PATH $data_path is not a folder" >&2; exit 2; }
    data_args=(--data-path "$data_path")
fi
if [[ "$config" == *.yaml || "$config" == *.yml ]]; then
    config=$(realpath -m "$config")
    [ -f "$config" ] || { echo "error: CONFIG $config does not exist" >&2; exit 2; }
fi
log_dir=$PWD/logs/standalone_train
mkdir -p "$log_dir"
python "$root/train.py" --config "$config" "${data_args[@]}" "$@" 2>&1 | tee "$log_dir/train.log"
