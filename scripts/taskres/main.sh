#!/usr/bin/env bash
# Train TaskRes on one dataset for several seeds.
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
SEEDS=${SEEDS:-1 2 3}
OUTPUT=${OUTPUT:-output}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

check_data 6th || exit 2
OUTPUT=$(from_caller "$OUTPUT")
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

DATASET_CFG=configs/datasets/${DATASET}.yaml
TRAINER_CFG=configs/trainers/TaskRes/${CFG}.yaml
require_config "$DATASET_CFG" "$TRAINER_CFG" || exit 2

OPTS=(DATASET.NUM_SHOTS "$SHOTS" TRAINER.TaskRes.RESIDUAL_SCALE "$SCALE")
backbone_override "$CFG"  # $BACKBONE: folder CFG-<tag>, MODEL.BACKBONE.NAME in OPTS

# Each seed of $SEEDS: skipped when finished, else (re)run; train.py resumes from its checkpoint.
run_seeds "${OUTPUT}/${DATASET}/TaskRes/${CFG_TAG}_${SHOTS}shots/base_${BASE}_alpha${SCALE}/seed{seed}" \
    --root "$DATA" \
    --seed {seed} \
    --trainer TaskRes \
    --dataset-config-file "$DATASET_CFG" \
    --config-file "$TRAINER_CFG" \
    --output-dir {dir} \
    --enhanced-base "$ENHANCE" \
    "${OPTS[@]}" \
    ${EXTRA[@]+"${EXTRA[@]}"}
