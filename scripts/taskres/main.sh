#!/usr/bin/env bash
# Train TaskRes on one dataset for several seeds.
# Checks its arguments, then runs scripts/run.sh (the seed loop shared by every method).
#
#   bash scripts/taskres/main.sh DATASET CFG ENHANCE SHOTS SCALE [DATA]
#
#   DATASET  name of a file in configs/datasets/ without .yaml (caltech101, imagenet, ...)
#   CFG      name of a file in configs/trainers/TaskRes/ without .yaml (adam_lr2e-3_B256_ep200, ...)
#   ENHANCE  "none" for the regular base, or the path of an enhanced-base checkpoint
#   SHOTS    shots per class (1, 2, 4, 8, 16)
#   SCALE    residual scale alpha (TRAINER.TaskRes.RESIDUAL_SCALE)
#   DATA     dataset root; the 6th argument wins over the DATA environment variable
#
# Environment: SEEDS ("1 2 3"), OUTPUT (output), BACKBONE (MODEL.BACKBONE.NAME override),
# EXTRA_OPTS (more KEY VALUE config overrides), PYTHON (python), DATA.
# See scripts/taskres/README.md.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

usage() {
    echo "usage: bash scripts/taskres/main.sh DATASET CFG ENHANCE SHOTS SCALE [DATA]" >&2
    echo "       (ENHANCE is 'none' or the path of an enhanced base; DATA may also come from \$DATA)" >&2
}
check_nargs 5 6 $# || exit 2

DATASET=$1
CFG=$2
ENHANCE=$3
SHOTS=$4
SCALE=$5
DATA=${6:-${DATA:-}}

check_data 6th || exit 2
if [ "$ENHANCE" = "none" ]; then
    BASE=regular
else
    BASE=enhanced
    ENHANCE=$(from_caller "$ENHANCE")
    if [ ! -f "$ENHANCE" ]; then
        echo "error: enhanced base $ENHANCE not found (use 'none' for the regular base)" >&2
        exit 2
    fi
fi

exec bash "$REPO/scripts/run.sh" TaskRes "$DATASET" "$CFG" "$SHOTS" "$DATA" --variant "base_${BASE}_alpha${SCALE}" -- \
    --enhanced-base "$ENHANCE" DATASET.NUM_SHOTS "$SHOTS" TRAINER.TaskRes.RESIDUAL_SCALE "$SCALE"
