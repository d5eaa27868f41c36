#!/usr/bin/env bash
# Usage: bash scripts/run_distribute_train.sh [options] DEVICE_NUM DATA_PATH [CONFIG] [-- TRAIN_FLAGS...]
#
# Data-parallel training on DEVICE_NUM devices per node, one log per rank.
#
# DATA_PATH: dataset folder, or "none" for the bundled digits. CONFIG: packaged recipe or YAML
# (default imagenet_ascend). TRAIN_FLAGS after "--" go to train.py (e.g. --epochs 10).
# Options:
#   --nodes N           nodes in the job (default 1); DEVICE_NUM is per node
#   --node_rank K       index of this node, 0..N-1 (default 0)
#   --master_addr ADDR  address of node 0, where msrun's scheduler runs (default 127.0.0.1)
#   --master_port PORT  scheduler port (default 8118)
#   --log_dir DIR       folder of the per-rank logs (default ./logs/distribute_train)
#   --timeout SEC       how long ranks wait for each other to join (default 600)
#   --rank_table FILE   Ascend rank table: start one train.py per device with RANK_ID and
#                       DEVICE_ID set, instead of msrun (--master_*, --timeout unused)
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

nodes=1 node_rank=0 master_addr=127.0.0.1 master_port=8118 timeout=600 rank_table=""
log_dir=$PWD/logs/distribute_train
positional=()
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes|--node_rank|--master_addr|--master_port|--log_dir|--timeout|--rank_table)
            [ $# -ge 2 ] || fail "$1 needs a value"
            declare "${1#--}=$2"; shift 2 ;;
        -h|--help) usage ;;
        --) shift; break ;;
        -*) fail "unknown option $1 (see --help)" ;;
        *) positional+=("$1"); shift ;;
    esac
done
[ ${#positional[@]} -ge 2 ] && [ ${#positional[@]} -le 3 ] || usage
device_num=${positional[0]}
config=$(resolve_config "${positional[2]:-imagenet_ascend}")
for value in "$device_num" "$nodes" "$node_rank" "$master_port" "$timeout"; do
    [[ "$value" =~ ^[0-9]+$ ]] || fail "expected a whole number, got '$value'"
done
[ "$device_num" -ge 1 ] || fail "DEVICE_NUM must be at least 1"
[ "$node_rank" -lt "$nodes" ] || fail "--node_rank must be below --nodes ($nodes)"
# msrun starts a scheduler wherever the master address is local: with a loopback address every
# node would start its own and wait for the others until --timeout.
if [ "$nodes" -gt 1 ] && [ -z "$rank_table" ] && [[ "$master_addr" =~ ^(127\.|localhost$|::1$) ]]; then
    fail "--nodes $nodes needs --master_addr set to node 0's network address, not $master_addr"
fi

set_data_args "${positional[1]}"
log_dir=$(realpath -m -- "$log_dir")
mkdir -p "$log_dir"
train=(python "$ROOT/train.py" --config "$config" --distributed "${DATA_ARGS[@]}" "$@")

if [ -z "$rank_table" ]; then
    echo "msrun: $((device_num * nodes)) ranks ($device_num on this node), logs in $log_dir"
    exec msrun --worker_num=$((device_num * nodes)) --local_worker_num="$device_num" \
        --master_addr="$master_addr" --master_port="$master_port" --node_rank="$node_rank" \
        --log_dir="$log_dir" --join=True --cluster_time_out="$timeout" "${train[@]:1}"
fi

# Rank-table mode (Ascend clusters launched per device): one process per device.
rank_table=$(realpath -m -- "$rank_table")
[ -f "$rank_table" ] || fail "--rank_table $rank_table does not exist"
export RANK_TABLE_FILE=$rank_table RANK_SIZE=$((device_num * nodes))
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; }
trap 'stop; exit 130' INT TERM
for ((i = 0; i < device_num; i++)); do
    rank=$((node_rank * device_num + i))
    open_log "$log_dir/rank_$rank.log"
    RANK_ID=$rank DEVICE_ID=$i "${train[@]}" >&"$LOG_FD" 2>&1 &
    pids+=($!)
    exec {LOG_FD}>&-
done
echo "started ranks $((node_rank * device_num))..$((node_rank * device_num + device_num - 1)), logs in $log_dir"
# Reap ranks as they end; the first failure stops the others at once (they would otherwise
# block in a collective until the communication time-out).
status=0
for _ in "${pids[@]}"; do
    if ! wait -n; then
        [ $status -eq 0 ] && echo "error: a rank failed; stopping the others, see $log_dir" >&2 && stop
        status=1
    fi
done
exit $status
