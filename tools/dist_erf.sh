#!/usr/bin/env bash
# Distributed ERF, like mmseg's tools/dist_test.sh:
#   bash tools/dist_erf.sh CONFIG CHECKPOINT GPUS [erf_seg.py options]
# Use "" as CHECKPOINT for random weights. NNODES, NODE_RANK, PORT and MASTER_ADDR
# are read from the environment as in mmseg's scripts.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [erf_seg.py options]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29510}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}
here=$(cd "$(dirname "$0")" && pwd)
args=("$CONFIG")
[ -n "$CHECKPOINT" ] && args+=("$CHECKPOINT")
exec "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$here/erf_seg.py" "${args[@]}" --launcher pytorch "$@"
