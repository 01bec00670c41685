#!/usr/bin/env bash
# The original's eval.sh: evaluate the trained masks of every seed again (no training).
#
#   bash scripts/masktuning/eval.sh DATASET [GDR_LAMBDA] [DATA]
#
# Loads $OUTPUT/DATASET/MaskTuning/CFG_SHOTSshots/lambdaGDR_LAMBDA/seedS (what train.sh writes;
# GDR_LAMBDA defaults as there) and writes SEED_DIR/eval, or SEED_DIR/eval_TARGET when TARGET
# names another dataset (e.g. imagenetv2 for an ImageNet model: masks are class-agnostic and
# the classifier is built from the target's class names).
# Environment: TARGET (DATASET), SHOTS (16), SEEDS ("1 2 3"), CFG, LOAD_EPOCH (the latest
# checkpoint), OUTPUT (output), EXTRA_OPTS, PYTHON, DATA. A finished evaluation is skipped.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

usage() {
    echo "usage: bash scripts/masktuning/eval.sh DATASET [GDR_LAMBDA] [DATA]" >&2
}
check_nargs 1 3 $# || exit 2

DATASET=$1
DATA=${3:-${DATA:-}}
SHOTS=${SHOTS:-16}
SEEDS=${SEEDS:-1 2 3}
TARGET=${TARGET:-$DATASET}
OUTPUT=${OUTPUT:-output}
LOAD_EPOCH=${LOAD_EPOCH:-}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

if [ "$DATASET" = "imagenet" ]; then CFG=${CFG:-imagenet_vit_b16}; else CFG=${CFG:-vit_b16}; fi
check_data 3rd || exit 2
OUTPUT=$(from_caller "$OUTPUT")
if [ $# -ge 2 ]; then
    LAMBDA=$2
else
    LAMBDA=$(cd "$REPO" && "${PY[@]}" -m engine.describe MaskTuning "$DATASET" "$SHOTS" --get MASK.GDR_LAMBDA) || exit 2
fi

DATASET_CFG=configs/datasets/${TARGET}.yaml
TRAINER_CFG=configs/trainers/MaskTuning/${CFG}.yaml
require_config "$DATASET_CFG" "$TRAINER_CFG" || exit 2
SUFFIX=eval
if [ "$TARGET" != "$DATASET" ]; then SUFFIX=eval_${TARGET}; fi
LOAD=()
if [ -n "$LOAD_EPOCH" ]; then LOAD=(--load-epoch "$LOAD_EPOCH"); fi

# Seed by seed: a seed without trained masks stops the script; a finished evaluation is skipped.
for SEED in $SEEDS; do
    MODEL_DIR=${OUTPUT}/${DATASET}/MaskTuning/${CFG}_${SHOTS}shots/lambda${LAMBDA}/seed${SEED}
    DIR=$MODEL_DIR/$SUFFIX
    require_checkpoint "$MODEL_DIR/shared/checkpoint" \
        "error: no trained masks in $MODEL_DIR (expected shared/checkpoint); train first:" \
        "  bash scripts/masktuning/train.sh $DATASET $LAMBDA $DATA" || exit 2
    run_eval "$DIR" \
        --root "$DATA" \
        --seed "$SEED" \
        --trainer MaskTuning \
        --dataset-config-file "$DATASET_CFG" \
        --config-file "$TRAINER_CFG" \
        --output-dir "$DIR" \
        --model-dir "$MODEL_DIR" \
        ${LOAD[@]+"${LOAD[@]}"} \
        --eval-only \
        DATASET.NUM_SHOTS "$SHOTS" \
        ${EXTRA[@]+"${EXTRA[@]}"}
done
