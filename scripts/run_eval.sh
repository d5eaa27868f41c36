#!/usr/bin/env bash
# Usage: bash scripts/run_eval.sh MODEL_FILE [DATA_PATH] [-- EVAL_FLAGS...]
#
# Evaluate a checkpoint or an exported MINDIR or ONNX file on every validation sample.
#
# MODEL_FILE: .ckpt, or .mindir / .onnx (with its sidecar JSON). DATA_PATH: dataset folder, or "none"
# (default) for the bundled digits. Results: one line on stdout and a JSON next to MODEL_FILE.
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

split_args "$@"
[ ${#POSITIONAL[@]} -ge 1 ] && [ ${#POSITIONAL[@]} -le 2 ] || usage
model_file=$(realpath -m -- "${POSITIONAL[0]}")
[ -f "$model_file" ] || fail "MODEL_FILE $model_file does not exist"
case "$model_file" in
    *.ckpt) source_args=(--ckpt "$model_file") ;;
    *.mindir|*.onnx) source_args=(--mindir "$model_file") ;;
    *) fail "MODEL_FILE must end in .ckpt, .mindir or .onnx" ;;
esac
set_data_args "${POSITIONAL[1]:-none}"
python "$ROOT/eval.py" "${source_args[@]}" "${DATA_ARGS[@]}" "${PASSED[@]}"
