#!/usr/bin/env bash
# Train CLIP-Adapter on one dataset for several seeds.
# Checks its arguments, then runs scripts/run.sh (the seed loop shared by every method).
#
#   bash scripts/clip_adapter/main.sh DATASET CFG SHOTS RATIO [DATA]
#
#   DATASET  name of a file in configs/datasets/ without .yaml (caltech101, imagenet, ...)
#   CFG      name of a file in configs/trainers/CLIP_Adapter/ without .yaml (rn50, rn50_ep100, ...)
#   SHOTS    shots per class (1, 2, 4, 8, 16)
#   RATIO    residual ratio (TRAINER.CLIP_ADAPTER.RATIO; the reference's is 0.2)
#   DATA     dataset root; the 5th argument wins over the DATA environment variable
#
# Environment: SEEDS ("1 2 3"), OUTPUT (output), BACKBONE (MODEL.BACKBONE.NAME override),
# EXTRA_OPTS (more KEY VALUE config overrides), PYTHON (python), DATA.
# See scripts/clip_adapter/README.md.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

usage() {
    echo "usage: bash scripts/clip_adapter/main.sh DATASET CFG SHOTS RATIO [DATA]" >&2
    echo "       (DATA may also come from \$DATA)" >&2
}
check_nargs 4 5 $# || exit 2

DATASET=$1
CFG=$2
SHOTS=$3
RATIO=$4
DATA=${5:-${DATA:-}}

check_data 5th || exit 2

exec bash "$REPO/scripts/run.sh" CLIP_Adapter "$DATASET" "$CFG" "$SHOTS" "$DATA" --variant "ratio${RATIO}" -- \
    DATASET.NUM_SHOTS "$SHOTS" TRAINER.CLIP_ADAPTER.RATIO "$RATIO"
