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

positional=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do positional+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#positional[@]} -ge 1 ] && [ ${#positional[@]} -le 4 ] || usage
[ "${positional[0]}" != "-h" ] && [ "${positional[0]}" != "--help" ] || usage
ckpt=$(realpath -m "${positional[0]}")
format=${positional[1]:-MINDIR}
batch_size=${positional[2]:-1}
file_name=$(realpath -m "${positional[3]:-${ckpt%.ckpt}}")

[ -f "$ckpt" ] || { echo "error: checkpoint $ckpt does not exist" >&2; exit 1; }
case "${format^^}" in
    MINDIR|ONNX|AIR) ;;
    *) echo "error: FORMAT must be MINDIR, ONNX or AIR, got $format" >&2; usage ;;
esac
[[ "$batch_size" =~ ^([0-9]+|dynamic)$ ]] || { echo "error: BATCH_SIZE must be a number or 'dynamic'" >&2; usage; }
mkdir -p "$(dirname "$file_name")"

python "$ROOT/export.py" --ckpt "$ckpt" --format "${format^^}" --batch-size "$batch_size" \
    --file-name "$file_name" "$@"
