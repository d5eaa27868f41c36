#!/usr/bin/env bash
# Usage: bash scripts/run_standalone_train.sh [DATA_PATH] [CONFIG] [-- TRAIN_FLAGS...]
#
# Training on one device.
#
# DATA_PATH: dataset folder, or "none" (default) for the bundled digits. CONFIG: packaged recipe
# or YAML (default digits_cpu). DEVICE_ID (environment) picks the Ascend/GPU device. The log
# goes to ./logs/standalone_train/train.log as well as the terminal.
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

positional=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    case "$1" in -h|--help) usage ;; -*) fail "unknown option $1 (see --help)" ;; esac
    positional+=("$1"); shift
done
[ "${1:-}" = "--" ] && shift
[ ${#positional[@]} -le 2 ] || usage
set_data_args "${positional[0]:-none}"
config=$(resolve_config "${positional[1]:-digits_cpu}")
log_dir=$PWD/logs/standalone_train
mkdir -p "$log_dir"
python "$ROOT/train.py" --config "$config" "${DATA_ARGS[@]}" "$@" 2>&1 | tee "$log_dir/train.log"
