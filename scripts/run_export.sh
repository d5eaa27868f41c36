#!/usr/bin/env bash
# Usage: bash scripts/run_export.sh CKPT [FORMAT] [BATCH_SIZE] [FILE_NAME]
#
# Export a checkpoint for deployment, verified against the checkpoint network.
#
# FORMAT: MINDIR (default), ONNX, or AIR (Ascend only). BATCH_SIZE: a fixed batch (default 1),
# or 0 / dynamic for a MINDIR that takes any batch. FILE_NAME defaults to the checkpoint path
# without .ckpt. The model, classes and preprocessing come from the checkpoint; a sidecar JSON
# is written next to the exported file. Extra export.py flags can follow after "--".
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

split_args "$@"
[ ${#POSITIONAL[@]} -ge 1 ] && [ ${#POSITIONAL[@]} -le 4 ] || usage
ckpt=$(realpath -m -- "${POSITIONAL[0]}")
format=${POSITIONAL[1]:-MINDIR}
batch_size=${POSITIONAL[2]:-1}
file_name=$(realpath -m -- "${POSITIONAL[3]:-${ckpt%.ckpt}}")

[ -f "$ckpt" ] || fail "checkpoint $ckpt does not exist"
case "${format^^}" in
    MINDIR|ONNX|AIR) ;;
    *) fail "FORMAT must be MINDIR, ONNX or AIR, got $format" ;;
esac
[[ "$batch_size" =~ ^([0-9]+|dynamic)$ ]] || fail "BATCH_SIZE must be a number or 'dynamic'"
mkdir -p "$(dirname "$file_name")"

python "$ROOT/export.py" --ckpt "$ckpt" --format "${format^^}" --batch-size "$batch_size" \
    --file-name "$file_name" "${PASSED[@]}"
