#!/usr/bin/env bash
# Base-to-new generalization, step 2 (the original's base2new_eval.sh): evaluate the masks
# trained by base2new_train.sh on the new classes (the second half of the sorted labels). The
# masks are class-agnostic; the classifier is built from the new class names.
#
#   bash scripts/masktuning/base2new_eval.sh DATASET [DATA]
#
# Loads $OUTPUT/base2new/train_base/DATASET/shots_SHOTS/MaskTuning/CFG/seedS and writes
# $OUTPUT/base2new/test_SUB/DATASET/shots_SHOTS/MaskTuning/CFG/seedS.
# Environment: SEEDS ("1 2 3"), SHOTS (16), SUB (new; base or all re-evaluate those classes),
# CFG, LOAD_EPOCH (the latest checkpoint), OUTPUT (output), EXTRA_OPTS, PYTHON, DATA.
# A folder that already holds results.json is skipped.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

usage() {
    echo "usage: bash scripts/masktuning/base2new_eval.sh DATASET [DATA]" >&2
}
check_nargs 1 2 $# || exit 2

DATASET=$1
DATA=${2:-${DATA:-}}
SEEDS=${SEEDS:-1 2 3}
SHOTS=${SHOTS:-16}
SUB=${SUB:-new}
OUTPUT=${OUTPUT:-output}
LOAD_EPOCH=${LOAD_EPOCH:-}
read -r -a EXTRA <<< "${EXTRA_OPTS:-}"

case $SUB in
    all|base|new) ;;
    *) echo "error: SUB must be all, base or new, got '$SUB'" >&2; exit 2 ;;
esac
if [ "$DATASET" = "imagenet" ]; then CFG=${CFG:-imagenet_vit_b16}; else CFG=${CFG:-vit_b16}; fi
check_data 2nd || exit 2
OUTPUT=$(from_caller "$OUTPUT")

DATASET_CFG=configs/datasets/${DATASET}.yaml
TRAINER_CFG=configs/trainers/MaskTuning/${CFG}.yaml
require_config "$DATASET_CFG" "$TRAINER_CFG" || exit 2
LOAD=()
if [ -n "$LOAD_EPOCH" ]; then LOAD=(--load-epoch "$LOAD_EPOCH"); fi

# Seed by seed: a seed without trained masks stops the script; a finished evaluation is skipped.
for SEED in $SEEDS; do
    MODEL_DIR=${OUTPUT}/base2new/train_base/${DATASET}/shots_${SHOTS}/MaskTuning/${CFG}/seed${SEED}
    DIR=${OUTPUT}/base2new/test_${SUB}/${DATASET}/shots_${SHOTS}/MaskTuning/${CFG}/seed${SEED}
    require_checkpoint "$MODEL_DIR/shared/checkpoint" \
        "error: no trained masks in $MODEL_DIR (expected shared/checkpoint); train on the base classes first:" \
        "  bash scripts/masktuning/base2new_train.sh $DATASET $DATA" || exit 2
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
        DATASET.SUBSAMPLE_CLASSES "$SUB" \
        ${EXTRA[@]+"${EXTRA[@]}"}
done
