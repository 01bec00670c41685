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

usage() {
    echo "usage: bash scripts/taskres/main.sh DATASET CFG ENHANCE SHOTS SCALE [DATA]" >&2
    echo "       (ENHANCE is 'none' or the path of an enhanced base; DATA may also come from \$DATA)" >&2
}

if [ $# -lt 5 ] || [ $# -gt 6 ]; then
    usage
    exit 2
fi

DATASET=$1
CFG=$2
ENHANCE=$3
SHOTS=$4
SCALE=$5
DATA=${6:-${DATA:-}}
SEEDS=${SEEDS:-1 2 3}
OUTPUT=${OUTPUT:-output}
BACKBONE=${BACKBONE:-}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

if [ -z "$DATA" ]; then
    echo "error: no dataset root given: set DATA=/path/to/datasets or pass it as the 6th argument" >&2
    usage
    exit 2
fi
DATA=$(require_data "$DATA") || exit 2
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

# A backbone override gets its own folder so that it never mixes with the config's backbone.
CFG_TAG=$CFG
OPTS=(DATASET.NUM_SHOTS "$SHOTS" TRAINER.TaskRes.RESIDUAL_SCALE "$SCALE")
if [ -n "$BACKBONE" ]; then
    CFG_TAG=${CFG}-$(backbone_tag "$BACKBONE")
    OPTS+=(MODEL.BACKBONE.NAME "$BACKBONE")
fi

# A finished seed (results.json, or a log with the final result) is skipped; anything else is
# (re)started and train.py resumes from the checkpoint in the folder.
for SEED in $SEEDS; do
    DIR=${OUTPUT}/${DATASET}/TaskRes/${CFG_TAG}_${SHOTS}shots/base_${BASE}_alpha${SCALE}/seed${SEED}
    run_train "$DIR" \
        --root "$DATA" \
        --seed "$SEED" \
        --trainer TaskRes \
        --dataset-config-file "$DATASET_CFG" \
        --config-file "$TRAINER_CFG" \
        --output-dir "$DIR" \
        --enhanced-base "$ENHANCE" \
        "${OPTS[@]}" \
        ${EXTRA[@]+"${EXTRA[@]}"}
done
