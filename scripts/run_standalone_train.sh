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

split_args "$@"
[ ${#POSITIONAL[@]} -le 2 ] || usage
set_data_args "${POSITIONAL[0]:-none}"
config=$(resolve_config "${POSITIONAL[1]:-digits_cpu}")
log_dir=$PWD/logs/standalone_train
mkdir -p "$log_dir"
open_log "$log_dir/train.log"
python "$ROOT/train.py" --config "$config" "${DATA_ARGS[@]}" "${PASSED[@]}" 2>&1 | tee "/dev/fd/$LOG_FD"
